"""Exact enumeration for small models: the true constrained distribution, the distribution locally
constrained decoding actually samples, and the KL divergence between distributions.

This is how the distortion of token masking is *measured* rather than estimated (Lipkin, LeBrun
et al. 2025, arXiv:2504.05410, section 2; Loula et al. 2025, "Syntactic and Semantic Control of
Large Language Models via Sequential Monte Carlo"). With ``P`` the model, ``c`` the constraint,
``phi`` an optional critic on complete outputs and strings of at most ``max_tokens`` tokens
counting EOS:

    exact(x) = P(x) c(x) exp(phi(x)) / Z,         Z = sum_x P(x) c(x) exp(phi(x)),
    lcd(x)   = prod_t P(x_t | x_<t) c_t(x_t) / Z_t(x_<t),   Z_t = sum_y P(y | x_<t) c_t(y).

The tree of allowed prefixes is walked breadth first, one batched model call per level, so it is
exponential in ``max_tokens``: for toy models only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from samplers._oracle import full_mask
from samplers._util import NEG_INF, as_logprob_array, logsumexp
from samplers.protocols import LanguageModel, Matcher

__all__ = ["ExactDistributions", "enumerate_distributions", "kl_divergence"]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class ExactDistributions:
    """Result of :func:`enumerate_distributions` (outputs are token-id tuples without EOS).

    - ``exact``: the constrained (and critic-weighted) distribution ``P(x) c(x) exp(phi(x)) / Z``.
    - ``log_z``: ``log Z``, the probability that an unconstrained sample satisfies the constraint
      and stops within ``max_tokens`` tokens (times the critic).
    - ``lcd``: the distribution over complete outputs of locally constrained decoding (sampling
      each token from ``P`` masked by the constraint and renormalized; the critic is ignored).
    - ``lcd_incomplete``: LCD's mass that ends nowhere valid: cut by ``max_tokens``, or at a
      prefix where no allowed token has positive probability.
    """

    exact: dict[tuple[int, ...], float]
    log_z: float
    lcd: dict[tuple[int, ...], float]
    lcd_incomplete: float


def enumerate_distributions(
    model: LanguageModel,
    matcher: Matcher,
    *,
    max_tokens: int,
    critic: Callable[[Sequence[int]], float] | None = None,
) -> ExactDistributions:
    """Enumerate every allowed string of at most ``max_tokens`` tokens (EOS included) with
    positive model probability; see the module docstring for the two distributions returned."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    eos = int(model.eos_token_id)
    exact_log: dict[tuple[int, ...], float] = {}
    lcd: dict[tuple[int, ...], float] = {}
    lcd_incomplete = 0.0
    # frontier: (prefix, matcher, log P(prefix), log LCD(prefix))
    frontier: list[tuple[list[int], Matcher, float, float]] = [([], matcher.fork(), 0.0, 0.0)]
    while frontier:
        batch = model.next_token_logprobs([f[0] for f in frontier])
        nxt: list[tuple[list[int], Matcher, float, float]] = []
        for row, (prefix, state, log_p, log_q) in enumerate(frontier):
            lp = as_logprob_array(batch[row])
            allowed = full_mask(state, lp.shape[0]) & (lp > NEG_INF)
            log_zt = logsumexp(lp[allowed])
            if log_zt == NEG_INF:
                lcd_incomplete += math.exp(log_q)
                continue
            for tok in np.flatnonzero(allowed).tolist():
                lp_tok = float(lp[tok])
                log_p2 = log_p + lp_tok
                log_q2 = log_q + lp_tok - log_zt
                if tok == eos:
                    key = tuple(prefix)
                    phi = float(critic(key)) if critic is not None else 0.0
                    exact_log[key] = log_p2 + phi
                    lcd[key] = lcd.get(key, 0.0) + math.exp(log_q2)
                elif len(prefix) + 1 < max_tokens:
                    child = state.fork()
                    if not child.accept_token(tok):
                        raise RuntimeError(
                            f"matcher allowed token {tok} in its mask but rejected it"
                        )
                    nxt.append(([*prefix, tok], child, log_p2, log_q2))
                else:
                    lcd_incomplete += math.exp(log_q2)
        frontier = nxt
    log_z = logsumexp(np.fromiter(exact_log.values(), dtype=np.float64, count=len(exact_log)))
    exact = (
        {k: math.exp(v - log_z) for k, v in exact_log.items() if v > NEG_INF}
        if log_z > NEG_INF
        else {}
    )
    return ExactDistributions(exact=exact, log_z=log_z, lcd=lcd, lcd_incomplete=lcd_incomplete)


def kl_divergence(p: Mapping[K, float], q: Mapping[K, float]) -> float:
    """``KL(p || q) = sum_x p(x) log(p(x) / q(x))`` in nats over ``p``'s support (``inf`` if
    ``q(x) = 0`` where ``p(x) > 0``). Both mappings should sum to one; neither is renormalized."""
    total = 0.0
    for x, px in p.items():
        if px <= 0.0:
            continue
        qx = q.get(x, 0.0)
        if qx <= 0.0:
            return math.inf
        total += px * math.log(px / qx)
    return total
