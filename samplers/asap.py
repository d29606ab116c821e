"""ASAp: grammar-aligned decoding by adaptive sampling with approximate expected futures.

Implements the sampler of K. Park, J. Wang, T. Berg-Kirkpatrick, N. Polikarpova, L. D'Antoni,
"Grammar-Aligned Decoding" (NeurIPS 2024, arXiv:2405.21047). Written from the paper's description;
the authors' reference implementation is github.com/ebmoon/transformers-GAD.

**Target.** With ``P`` the language model, ``c(x) in {0, 1}`` the constraint on a complete string
(every token allowed by the matcher, ending with EOS) and strings of at most ``max_tokens`` tokens
counting EOS (the target of :func:`samplers.enumerate_distributions` and :func:`samplers.smc`):

    pi(x) = P(x) c(x) / Z,        Z = sum_x P(x) c(x).

Locally constrained decoding (token masking) samples ``prod_t P(x_t | x_<t) c_t(x_t) / Z_t``
instead, which over-weights strings behind narrow prefixes. The exact fix weights each token by
the *expected future grammaticality* (EFG) of the prefix it leads to,

    EFG(u) = sum_{x extends u} P(x | u) c(x)        (EFG(()) = Z),
    pi(t | u) = P(t | u) EFG(ut) / EFG(u),

which is intractable. ASAp learns it from its own samples.

**The trie.** Every prefix the sampler has expanded is a node that keeps, from ONE model call,
the grammatical next tokens ``G(u)`` (the matcher's allowed set with ``P(t | u) > 0``; the model's
EOS exactly when the matcher is accepting; only EOS at length ``max_tokens - 1``), their model
probabilities ``P(t | u)`` (raw, as given by the model), and an estimate ``E(ut)`` of every child's
EFG: 1 for a child never expanded, 1 forever for the EOS child (the string ends, grammatically),
and 0 for every token outside ``G(u)`` (implicitly). The node's own estimate is

    E(u) = sum_{t in G(u)} P(t | u) E(ut).

**Sampling.** From the root, draw ``t`` at prefix ``u`` with probability

    q(t | u) = P(t | u) E(ut) / sum_{s in G(u)} P(s | u) E(us),

expanding (one model call, one mask) every prefix reached for the first time, until EOS. On a
fresh trie every ``E`` is 1 and ``q`` is exactly masked sampling. After the draw, the nodes of the
sampled path take ``E(u) <- min(E(u), sum_{t in G(u)} P(t | u) E(ut))`` bottom-up to the root (the
min only matters when the model's probabilities sum to slightly more than one by rounding).

**Guarantees.** ``E(u) >= EFG(u)`` at every node, always: leaves start at 1 >= EFG, and a sum of
upper bounds weighted by ``P`` is an upper bound of the exact recursion ``EFG(u) = sum_{t in G(u)}
P(t | u) EFG(ut)``. Estimates only decrease (each update replaces a child's 1 by a smaller bound),
so :attr:`ASApSampler.root_efg` is a non-increasing upper bound of ``Z``. Once every prefix with
positive probability under ``pi`` has been expanded, ``E = EFG`` on them and ``q = pi``; the
paper shows the sampling distribution converges to ``pi`` as samples accumulate. A prefix whose
grammatical continuations all have zero probability (a dead end: e.g. the grammar needs more than
``max_tokens`` tokens) gets ``E = 0`` once reached; the draw then restarts from the root with the
tightened trie (``ASApSample.n_restarts`` counts these), so every returned sample is complete and
grammatical.

**Memory.** Only expanded prefixes are nodes; a node costs O(|G(u)|) (ids, probabilities and child
estimates of its grammatical tokens). ``max_nodes`` caps the number of nodes. Policy: **no
pruning** (pruning would reset estimates to 1 and break the monotone bound): when a draw needs to
expand a node beyond the cap, :class:`ASApTrieFullError` is raised before the model is called. What
the aborted draw learned is kept (its path is propagated), so the trie stays consistent: it can be
saved, or ``max_nodes`` raised, and sampling continues. Draws that stay inside the trie still work.

**Persistence.** :meth:`ASApSampler.save` writes plain JSON (``format``, ``version``; token ids
and probabilities as base64 little-endian arrays, so every float round-trips exactly);
:meth:`ASApSampler.load` rebuilds the trie for the same model and constraint, with no model call
for the prefixes already expanded. The random generator is the caller's: the same generator state
gives the same continuation.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samplers._oracle import full_mask
from samplers._util import NEG_INF, as_logprob_array, uniforms
from samplers.protocols import LanguageModel, Matcher, RandomGenerator

__all__ = [
    "ASApEmptyLanguageError",
    "ASApSample",
    "ASApSampler",
    "ASApTrieFullError",
    "MatcherSource",
]

#: Either a matcher in its start state (forked for every draw, never advanced) or a callable that
#: returns a fresh start-state matcher.
MatcherSource = Matcher | Callable[[], Matcher]

_FORMAT = "samplers.asap.trie"
_VERSION = 1

# Up to this many tokens the allowed set is read with ``check_token`` per token: cheaper than a
# bitmask fill and unpacking (toy models, choice constraints over few tokens). Same result.
_CHECK_VOCAB = 128


class ASApTrieFullError(RuntimeError):
    """Raised when a draw must expand a new prefix but the trie already has ``max_nodes`` nodes.

    The trie is left consistent (what the aborted draw learned is kept): save it, or raise
    ``sampler.max_nodes``, and continue."""


class ASApEmptyLanguageError(RuntimeError):
    """Raised when the root estimate reaches 0: no string of at most ``max_tokens`` tokens is both
    grammatical and of positive model probability (``Z = 0``)."""


@dataclass(frozen=True, slots=True)
class ASApSample:
    """One ASAp draw.

    - ``tokens``: the generated ids, EOS excluded (every sample ends with the model's EOS), the
      same keys as :attr:`samplers.ExactDistributions.exact`.
    - ``log_prob_model``: ``log P(tokens + EOS)`` under the model (raw probabilities).
    - ``log_prob_proposal``: ``log q(tokens + EOS)``, the probability this draw's proposal gave it
      (the trie as it was during the draw).
    - ``root_efg``: the root estimate after this draw's update (an upper bound of ``Z``).
    - ``n_expanded``: prefixes expanded (= model calls) by this draw, restarts included.
    - ``n_restarts``: dead ends hit (each restarts the draw from the root).
    """

    tokens: tuple[int, ...]
    log_prob_model: float
    log_prob_proposal: float
    root_efg: float
    n_expanded: int = 0
    n_restarts: int = 0


class _Node:
    """An expanded prefix ``u``: ``ids`` = G(u) (sorted), ``probs`` = P(t | u) for them,
    ``child_efg`` = E(ut) for them, ``efg`` = E(u); ``prob`` = P(token | parent prefix) and
    ``slot`` = the index of ``token`` in the parent's arrays (-1 for the root)."""

    __slots__ = ("child_efg", "children", "efg", "ids", "prob", "probs", "slot", "token")

    def __init__(
        self,
        token: int | None,
        prob: float,
        slot: int,
        ids: np.ndarray,
        probs: np.ndarray,
        efg: float,
        child_efg: np.ndarray | None = None,
    ) -> None:
        self.token = token
        self.prob = prob
        self.slot = slot
        self.ids = ids
        self.probs = probs
        self.child_efg = np.ones(ids.shape[0], dtype=np.float64) if child_efg is None else child_efg
        self.efg = efg
        self.children: dict[int, _Node] = {}


_TINY = float(np.finfo(np.float64).tiny)


def _uniform(generator: RandomGenerator) -> float:
    """One uniform in (0, 1): ``uniforms(1, generator)[0]``, as a float (cheaper for numpy)."""
    if isinstance(generator, np.random.Generator):
        return max(generator.random(), _TINY)
    return float(uniforms(1, generator)[0])


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def _unb64(s: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=dtype).astype(dtype[1:], copy=True)


class ASApSampler:
    """Grammar-aligned sampling with ASAp (Park et al. 2024); see the module docstring for the math.

    - ``model``: next-token log-probabilities (:class:`~samplers.protocols.LanguageModel`), called
      with one sequence per expanded prefix, once per prefix over the sampler's life.
    - ``matcher_factory_or_matcher``: the constraint (:data:`MatcherSource`).
    - ``max_tokens``: the most tokens a sample may have, EOS included.
    - ``max_nodes``: the cap on expanded prefixes (memory bound; see :class:`ASApTrieFullError`).
    - ``generator``: the source of randomness (:data:`~samplers.protocols.RandomGenerator`; one
      uniform per token); settable as ``sampler.generator``.
    """

    def __init__(
        self,
        model: LanguageModel,
        matcher_factory_or_matcher: MatcherSource,
        *,
        max_tokens: int,
        max_nodes: int = 100_000,
        generator: RandomGenerator = None,
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
        self.model = model
        self.eos = int(model.eos_token_id)
        self.max_tokens = int(max_tokens)
        self.max_nodes = int(max_nodes)
        self.generator = generator
        # (duck-typed: ``isinstance`` against the runtime-checkable protocol costs ~50 us)
        if hasattr(matcher_factory_or_matcher, "accept_token"):
            start: Any = matcher_factory_or_matcher
            self._new_matcher: Callable[[], Matcher] = start.fork
        elif callable(matcher_factory_or_matcher):
            self._new_matcher = matcher_factory_or_matcher
        else:
            raise TypeError("expected a Matcher or a callable returning one")
        self._root: _Node | None = None
        self._n_nodes = 0
        self.n_samples = 0
        self.n_model_calls = 0

    def __repr__(self) -> str:
        return (
            f"ASApSampler(max_tokens={self.max_tokens}, max_nodes={self.max_nodes}, "
            f"n_nodes={self._n_nodes}, n_samples={self.n_samples}, root_efg={self.root_efg!r})"
        )

    # ------------------------------------------------------------------ estimates

    @property
    def root_efg(self) -> float:
        """``E(())``: the current upper bound of ``Z`` (1.0 before the first draw)."""
        return 1.0 if self._root is None else self._root.efg

    @property
    def n_nodes(self) -> int:
        """Expanded prefixes held in the trie (at most ``max_nodes``)."""
        return self._n_nodes

    def _walk(self) -> Iterator[tuple[tuple[int, ...], _Node]]:
        """Every node with its prefix, parents before children (iterative: no recursion limit)."""
        if self._root is None:
            return
        stack: list[tuple[tuple[int, ...], _Node]] = [((), self._root)]
        while stack:
            prefix, node = stack.pop()
            yield prefix, node
            for tok in sorted(node.children, reverse=True):
                stack.append(((*prefix, tok), node.children[tok]))

    def efg_estimates(self) -> dict[tuple[int, ...], float]:
        """``E(u)`` for every expanded prefix ``u`` (token ids, EOS never included)."""
        return {prefix: node.efg for prefix, node in self._walk()}

    # ------------------------------------------------------------------ sampling

    def sample(self) -> ASApSample:
        """Draw one complete grammatical string and tighten the trie; see the module docstring.

        Raises :class:`ASApTrieFullError` when a new prefix must be expanded beyond ``max_nodes``,
        and :class:`ASApEmptyLanguageError` when the root estimate is 0 (``Z = 0``)."""
        restarts = 0
        expanded = 0
        while True:
            if self._root is not None and not self._root.efg > 0.0:
                raise ASApEmptyLanguageError(
                    "no grammatical string of at most "
                    f"{self.max_tokens} tokens has positive model probability (Z = 0)"
                )
            before = self.n_model_calls
            try:
                drawn = self._draw()
            finally:
                expanded += self.n_model_calls - before
            if drawn is not None:
                tokens, log_p, log_q = drawn
                self.n_samples += 1
                return ASApSample(tokens, log_p, log_q, self.root_efg, expanded, restarts)
            restarts += 1

    def sample_many(self, n: int) -> list[ASApSample]:
        """``n`` successive draws (each one tightens the trie for the next)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [self.sample() for _ in range(n)]

    def _draw(self) -> tuple[tuple[int, ...], float, float] | None:
        """One descent from the root; None at a dead end. The path is propagated in any case."""
        matcher = self._new_matcher()
        prefix: list[int] = []
        path: list[_Node] = []
        log_p = 0.0
        log_q = 0.0
        try:
            node = self._root
            if node is None:
                node = self._root = self._expand(None, -1, 1.0, prefix, matcher)
            while True:
                path.append(node)
                weights = node.probs * node.child_efg
                cumulative = np.cumsum(weights)
                total = float(cumulative[-1]) if cumulative.shape[0] else 0.0
                if not total > 0.0:
                    return None  # dead end: E(u) becomes 0 below
                u = _uniform(self.generator) * total
                i = int(np.searchsorted(cumulative, u, side="right"))
                if i >= weights.shape[0] or weights[i] <= 0.0:
                    i = int(np.flatnonzero(weights > 0.0)[-1])  # rounding at the top end
                tok = int(node.ids[i])
                prob = float(node.probs[i])
                log_p += math.log(prob)
                log_q += math.log(float(weights[i]) / total)
                if tok == self.eos:
                    return tuple(prefix), log_p, log_q
                if not matcher.accept_token(tok):
                    raise RuntimeError(f"matcher allowed token {tok} in its mask but rejected it")
                prefix.append(tok)
                child = node.children.get(tok)
                if child is None:
                    child = self._expand(node, i, prob, prefix, matcher)
                    node.children[tok] = child
                node = child
        finally:
            self._propagate(path)

    def _expand(
        self, parent: _Node | None, slot: int, prob: float, prefix: list[int], matcher: Matcher
    ) -> _Node:
        """A node for ``prefix`` (one model call unless only EOS could follow and it is not
        allowed); ``E`` starts at the parent's estimate for it (1) and is set by the update."""
        if self._n_nodes >= self.max_nodes:
            raise ASApTrieFullError(
                f"the ASAp trie holds max_nodes={self.max_nodes} expanded prefixes and this draw "
                "needs a new one; save the sampler or raise sampler.max_nodes to continue"
            )
        accepting = bool(matcher.is_accepting())
        if len(prefix) + 1 >= self.max_tokens and not accepting:
            ids = np.empty(0, dtype=np.int64)
            probs = np.empty(0, dtype=np.float64)
        else:
            lp = as_logprob_array(self.model.next_token_logprobs([list(prefix)])[0])
            self.n_model_calls += 1
            vocab = lp.shape[0]
            eos = self.eos
            if len(prefix) + 1 >= self.max_tokens:  # only EOS may follow, and it is allowed
                ids = np.array([eos] if 0 <= eos < vocab and lp[eos] > NEG_INF else [], np.int64)
            elif vocab <= _CHECK_VOCAB:  # Python lists: cheaper than numpy at this size
                check, lps, exp = matcher.check_token, lp.tolist(), math.exp
                pairs = [
                    (t, exp(x))
                    for t, x in enumerate(lps)
                    if x > NEG_INF and (accepting if t == eos else check(t))
                ]
                pairs = [(t, p) for t, p in pairs if p > 0.0]  # (underflow)
                ids = np.array([t for t, _ in pairs], dtype=np.int64)
                probs = np.array([p for _, p in pairs], dtype=np.float64)
            else:
                mask = full_mask(matcher, vocab)
                if 0 <= eos < vocab:
                    mask[eos] = accepting
                mask &= lp > NEG_INF
                ids = np.flatnonzero(mask)
            if vocab > _CHECK_VOCAB or len(prefix) + 1 >= self.max_tokens:
                probs = np.exp(lp[ids])
                if ids.shape[0] and not probs.min() > 0.0:  # underflow
                    ids, probs = ids[probs > 0.0], probs[probs > 0.0]
        efg = 1.0 if parent is None else float(parent.child_efg[slot])
        self._n_nodes += 1
        return _Node(None if parent is None else prefix[-1], prob, slot, ids, probs, efg)

    def _propagate(self, path: list[_Node]) -> None:
        """``E(u) <- min(E(u), sum_t P(t|u) E(ut))`` bottom-up along ``path`` (root first)."""
        for k in range(len(path) - 1, -1, -1):
            node = path[k]
            new = float(np.dot(node.probs, node.child_efg)) if node.ids.shape[0] else 0.0
            node.efg = min(node.efg, new)
            if k > 0:
                path[k - 1].child_efg[node.slot] = node.efg

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the trie and counters as JSON (atomically: a temporary file, then a rename).

        The model, the constraint and the generator are not saved: pass the same model and
        constraint to :meth:`load`."""
        nodes: list[dict[str, Any]] = []
        index: dict[int, int] = {}
        parents: dict[int, int] = {}
        for _, node in self._walk():
            index[id(node)] = len(nodes)
            nodes.append(
                {
                    "parent": parents.get(id(node), -1),
                    "slot": node.slot,
                    "token": node.token,
                    "prob": node.prob,
                    "efg": node.efg,
                    "ids": _b64(node.ids, "<i8"),
                    "probs": _b64(node.probs, "<f8"),
                    "child_efg": _b64(node.child_efg, "<f8"),
                }
            )
            for child in node.children.values():
                parents[id(child)] = index[id(node)]
        data = {
            "format": _FORMAT,
            "version": _VERSION,
            "vocab_size": int(self.model.vocab_size),
            "eos_token_id": self.eos,
            "max_tokens": self.max_tokens,
            "max_nodes": self.max_nodes,
            "n_samples": self.n_samples,
            "n_model_calls": self.n_model_calls,
            "nodes": nodes,
        }
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(data, allow_nan=False), encoding="utf-8")
        os.replace(tmp, target)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model: LanguageModel,
        matcher_factory_or_matcher: MatcherSource,
        *,
        max_nodes: int | None = None,
        generator: RandomGenerator = None,
    ) -> ASApSampler:
        """Rebuild a sampler saved by :meth:`save` for the same model and constraint
        (``max_nodes``: None keeps the saved cap). Raises ``ValueError`` on a file of another
        format or version, or saved for another vocabulary size or EOS id."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"{path}: not an ASAp trie file")
        if data.get("version") != _VERSION:
            raise ValueError(
                f"{path}: ASAp trie format version {data.get('version')!r}, expected {_VERSION}"
            )
        if int(data["vocab_size"]) != int(model.vocab_size) or int(data["eos_token_id"]) != int(
            model.eos_token_id
        ):
            raise ValueError(
                f"{path}: saved for vocab_size={data['vocab_size']}, eos={data['eos_token_id']}; "
                f"the model has vocab_size={model.vocab_size}, eos={model.eos_token_id}"
            )
        self = cls(
            model,
            matcher_factory_or_matcher,
            max_tokens=int(data["max_tokens"]),
            max_nodes=int(data["max_nodes"]) if max_nodes is None else max_nodes,
            generator=generator,
        )
        built: list[_Node] = []
        for rec in data["nodes"]:
            node = _Node(
                None if rec["token"] is None else int(rec["token"]),
                float(rec["prob"]),
                int(rec["slot"]),
                _unb64(rec["ids"], "<i8"),
                _unb64(rec["probs"], "<f8"),
                float(rec["efg"]),
                _unb64(rec["child_efg"], "<f8"),
            )
            parent = int(rec["parent"])
            if parent < 0:
                if self._root is not None:
                    raise ValueError(f"{path}: more than one root")
                self._root = node
            elif node.token is None or not 0 <= parent < len(built):
                raise ValueError(f"{path}: malformed node list")
            else:
                built[parent].children[node.token] = node
            built.append(node)
        self._n_nodes = len(built)
        self.n_samples = int(data["n_samples"])
        self.n_model_calls = int(data["n_model_calls"])
        return self
