"""Sequential Monte Carlo over token sequences, with any properly weighted token sampler as proposal.

Implements the particle method of J. Loula, B. LeBrun, L. Du, B. Lipkin, C. Pasti, G. Grand,
T. Liu, Y. Emara, M. Freedman, J. Eisner, R. Cotterell, V. Mansinghka, A. K. Lew, T. Vieira,
T. J. O'Donnell, "Syntactic and Semantic Control of Large Language Models via Sequential Monte
Carlo" (ICLR 2025), which builds on A. K. Lew, T. Zhi-Xuan, G. Grand, V. K. Mansinghka,
"Sequential Monte Carlo Steering of Large Language Models using Probabilistic Programs" (2023).

**Target.** With ``P`` the language model, ``c(x) in {0, 1}`` the constraint on a complete string
(every token allowed by the matcher, ending with EOS) and ``phi`` an optional critic (a log
potential on complete values, e.g. a semantic validator returning 0 or -inf),

    pi(x) = P(x) c(x) exp(phi(x)) / Z,      Z = sum_x P(x) c(x) exp(phi(x)),

over strings of at most ``max_tokens`` tokens counting the final EOS. Locally constrained decoding
samples ``prod_t P(x_t | x_<t) c(x_t) / Z_t`` instead, which is *not* ``pi`` (it over-weights
strings behind narrow prefixes); SMC corrects this.

**Algorithm.** ``N`` particles start empty with log weight ``psi(())``. At each step every running
particle's sequence goes through the model in ONE batched ``next_token_logprobs`` call; the token
sampler proposes ``x_t`` with a properly weighted ``log w_t`` for ``P(. | x_<t) c``, and

    log W += log w_t + psi(x_<=t) - psi(x_<t)                 (non-EOS token: re-twist)
    log W += log w_t + phi(x_<t) - psi(x_<t)                  (EOS: the untwisted target)

where ``psi`` is an optional twist (a heuristic log potential on prefixes, e.g. a critic's
estimate of the prefix's prospects). The twist only steers resampling: it telescopes away, so a
finished particle's weight is ``prod_t w_t * exp(phi(x))`` whatever ``psi`` is. When the effective
sample size ``ESS = (sum W)^2 / sum W^2`` falls under ``ess_threshold * N``, particles are
resampled (``samplers.resampling``) and each offspring gets the mean weight; duplicated particles
fork their matcher (``matcher.fork()``, no deep copies). Finished particles stay in the population
(an absorbing state with incremental weight 1) and take part in resampling.

**Outputs.** ``log_ml = log((1/N) sum_{finished i} W_i)`` is an unbiased estimate (in ``exp``) of
``Z`` for every resampling scheme and threshold; the posterior over distinct outputs aggregates
the normalized weights of finished particles per token sequence. A particle that reaches
``max_tokens`` tokens without EOS is reported as ``"truncated"`` and never counts as an output;
one whose weight drops to zero (the sampler found no allowed token, or a twist of -inf) is
``"dead"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from samplers._util import NEG_INF, logsumexp
from samplers.awrs import AWRSSampler
from samplers.protocols import LanguageModel, Matcher, RandomGenerator, TokenSampler
from samplers.resampling import (
    RESAMPLING_METHODS,
    ResamplingMethod,
    effective_sample_size,
    resample,
)

__all__ = ["LogPotential", "Particle", "ParticleStatus", "SMCResult", "smc"]

ParticleStatus = Literal["running", "finished", "truncated", "dead"]

#: A log potential on a token sequence (generated ids, EOS excluded): 0 is neutral, -inf vetoes.
LogPotential = Callable[[Sequence[int]], float]


@dataclass(frozen=True)
class Particle:
    """One particle at the end of a run.

    ``tokens``: the generated ids, ending with EOS when ``status == "finished"``. ``log_weight``:
    its final log weight (untwisted for finished particles; the twisted running weight for
    truncated ones, which never count as outputs; -inf for dead ones).
    """

    tokens: tuple[int, ...]
    log_weight: float
    status: ParticleStatus

    @property
    def output(self) -> tuple[int, ...]:
        """The tokens without the trailing EOS (the value a finished particle stands for)."""
        return self.tokens[:-1] if self.status == "finished" else self.tokens


@dataclass(frozen=True)
class SMCResult:
    """What an SMC run returns.

    - ``particles``: the final population.
    - ``log_ml``: log of the unbiased marginal-likelihood estimate ``(1/N) sum_finished W_i`` of
      ``Z = sum_x P(x) c(x) exp(phi(x))``; -inf when no particle finished with positive weight.
    - ``posterior``: distinct output (token ids without EOS) -> normalized weight, summed over the
      finished particles that produced it, most probable first (empty when ``log_ml == -inf``).
    - ``ess_trace``: the ESS (in particles, between 0 and N) after each step's reweighting, before
      the resampling decision; ``resampled_at``: the steps (0-based) after which it resampled.
    - ``n_checks``: constraint checks made by the token sampler over the run; ``n_steps``: model
      calls (one batched call per step).
    """

    particles: list[Particle]
    log_ml: float
    posterior: dict[tuple[int, ...], float]
    ess_trace: list[float] = field(default_factory=list)
    resampled_at: list[int] = field(default_factory=list)
    n_checks: int = 0
    n_steps: int = 0

    @property
    def finished(self) -> list[Particle]:
        """Particles that ended with EOS."""
        return [p for p in self.particles if p.status == "finished"]

    @property
    def truncated(self) -> list[Particle]:
        """Particles cut by ``max_tokens`` (never valid outputs)."""
        return [p for p in self.particles if p.status == "truncated"]

    @property
    def map_output(self) -> tuple[int, ...] | None:
        """The output with the largest posterior mass, or None."""
        return next(iter(self.posterior), None)


def smc(
    model: LanguageModel,
    matcher: Matcher,
    *,
    n_particles: int,
    max_tokens: int,
    sampler: TokenSampler | None = None,
    ess_threshold: float = 0.5,
    resampling: ResamplingMethod = "systematic",
    critic: LogPotential | None = None,
    twist: LogPotential | None = None,
    generator: RandomGenerator = None,
) -> SMCResult:
    """Run SMC for ``pi(x) ∝ P(x) c(x) exp(critic(x))``; see the module docstring for the math.

    - ``model``: batched next-token log-probabilities (:class:`~samplers.protocols.LanguageModel`).
    - ``matcher``: the constraint's start state; it is forked per particle and left untouched.
    - ``n_particles``: ``N``; ``max_tokens``: the most tokens a particle may generate, EOS included.
    - ``sampler``: the proposal, any properly weighted token sampler (default:
      ``AWRSSampler()``; ``MaskedSampler()`` also works; an unweighted sampler gives plain
      particle-wise constrained sampling, not the target).
    - ``ess_threshold``: resample when ``ESS < ess_threshold * N`` (0 never, 1 whenever the weights
      are not all equal).
    - ``resampling``: ``"multinomial" | "systematic" | "stratified" | "residual"``.
    - ``critic``: ``phi``, a log potential on complete outputs (EOS excluded), part of the target.
    - ``twist``: ``psi``, a log potential on prefixes that steers resampling without changing the
      target (added at each step, the previous value subtracted, removed at EOS).
    - ``generator``: the source of every random choice (sampler and resampling): a
      ``torch.Generator``, a ``numpy.random.Generator``, or None (torch's global generator).
    """
    if n_particles < 1:
        raise ValueError(f"n_particles must be >= 1, got {n_particles}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not ess_threshold >= 0.0:
        raise ValueError(f"ess_threshold must be >= 0, got {ess_threshold}")
    if resampling not in RESAMPLING_METHODS:
        raise ValueError(f"resampling must be one of {RESAMPLING_METHODS}, got {resampling!r}")
    if sampler is None:
        sampler = AWRSSampler()
    n = n_particles
    eos = int(model.eos_token_id)

    psi0 = float(twist(())) if twist is not None else 0.0
    tokens: list[list[int]] = [[] for _ in range(n)]
    matchers: list[Matcher] = [matcher.fork() for _ in range(n)]
    status: list[ParticleStatus] = ["running" if psi0 > NEG_INF else "dead"] * n
    psi = [psi0] * n
    log_w = np.full(n, psi0, dtype=np.float64)
    ess_trace: list[float] = []
    resampled_at: list[int] = []
    n_checks = 0
    n_steps = 0

    for step in range(max_tokens):
        live = [i for i in range(n) if status[i] == "running"]
        if not live:
            break
        batch = model.next_token_logprobs([tokens[i] for i in live])
        n_steps += 1
        if batch.shape[0] != len(live):
            raise ValueError(
                f"model returned {batch.shape[0]} rows of log-probabilities for {len(live)} sequences"
            )
        for row, i in enumerate(live):
            result = sampler.sample(batch[row], matchers[i], generator=generator)
            n_checks += result.n_checks
            token, inc = result.token, float(result.log_weight)
            if token is None or inc == NEG_INF:
                log_w[i] = NEG_INF
                status[i] = "dead"
                continue
            if math.isnan(inc):
                raise ValueError(f"{sampler!r} returned a NaN log weight")
            if not matchers[i].accept_token(token):
                raise RuntimeError(f"{sampler!r} proposed token {token}, which the matcher rejects")
            tokens[i].append(token)
            if token == eos:
                final = float(critic(tuple(tokens[i][:-1]))) if critic is not None else 0.0
                log_w[i] += inc + final - psi[i]
                psi[i] = 0.0
                status[i] = "finished"
            else:
                new = float(twist(tuple(tokens[i]))) if twist is not None else 0.0
                log_w[i] = log_w[i] + inc + new - psi[i] if new > NEG_INF else NEG_INF
                psi[i] = new
                if log_w[i] == NEG_INF:
                    status[i] = "dead"
                elif len(tokens[i]) >= max_tokens:
                    status[i] = "truncated"
            if math.isnan(log_w[i]):
                raise ValueError("a particle weight became NaN (critic or twist returned NaN/inf?)")

        ess = effective_sample_size(log_w)
        ess_trace.append(ess)
        running = any(s == "running" for s in status)
        # (the 1e-9 slack keeps float dust in equal weights from triggering a resampling)
        if running and ess > 0.0 and ess < ess_threshold * n * (1.0 - 1e-9):
            ancestors = resample(log_w, method=resampling, generator=generator)
            mean = logsumexp(log_w) - math.log(n)
            used: set[int] = set()
            new_matchers: list[Matcher] = []
            picks: list[int] = ancestors.tolist()
            for a in picks:  # the first offspring keeps the state, the others fork it
                new_matchers.append(matchers[a] if a not in used else matchers[a].fork())
                used.add(a)
            tokens = [list(tokens[a]) for a in picks]
            status = [status[a] for a in picks]
            psi = [psi[a] for a in picks]
            matchers = new_matchers
            log_w = np.full(n, mean, dtype=np.float64)
            resampled_at.append(step)

    for i in range(n):  # only reachable if max_tokens steps ran with a particle still running
        if status[i] == "running":
            status[i] = "truncated"

    particles = [Particle(tuple(tokens[i]), float(log_w[i]), status[i]) for i in range(n)]
    done = [i for i in range(n) if status[i] == "finished" and log_w[i] > NEG_INF]
    if done:
        total = logsumexp(log_w[done])
        log_ml = total - math.log(n)
        agg: dict[tuple[int, ...], float] = {}
        for i in done:
            key = tuple(tokens[i][:-1])
            agg[key] = agg.get(key, 0.0) + math.exp(float(log_w[i]) - total)
        posterior = dict(sorted(agg.items(), key=lambda kv: -kv[1]))
    else:
        log_ml = NEG_INF
        posterior = {}
    return SMCResult(
        particles=particles,
        log_ml=log_ml,
        posterior=posterior,
        ess_trace=ess_trace,
        resampled_at=resampled_at,
        n_checks=n_checks,
        n_steps=n_steps,
    )
