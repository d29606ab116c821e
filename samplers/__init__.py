"""Properly weighted token samplers and sequential Monte Carlo for constrained decoding.

- :class:`MaskedSampler` / :class:`GreedySampler`: locally constrained decoding (one full mask per
  token), sampled or greedy.
- :class:`AWRSSampler`: adaptive weighted rejection sampling (Lipkin, LeBrun et al. 2025,
  arXiv:2504.05410): checks only the tokens it draws, with unbiased weights.
- :func:`smc`: sequential Monte Carlo over particles (Loula et al. 2025; Lew et al. 2023) that
  corrects the distortion of local constraint enforcement; resampling schemes in
  :mod:`samplers.resampling`.
- :class:`ASApSampler`: grammar-aligned decoding with ASAp (Park et al. 2024, "Grammar-Aligned
  Decoding"): a persistent trie of sampled prefixes whose expected-future-grammaticality estimates
  make the samples converge to the model conditioned on the constraint.
- :func:`enumerate_distributions` / :func:`kl_divergence`: exact answers for toy models.

The contracts (:class:`Matcher`, :class:`LanguageModel`, :class:`TokenSampler`,
:class:`SampleResult`) live in :mod:`samplers.protocols`. Import direction: kernels <- grammars <-
samplers <- decoding; this package imports neither grammars nor decoding.
"""

from samplers.asap import (
    ASApEmptyLanguageError,
    ASApSample,
    ASApSampler,
    ASApTrieFullError,
    MatcherSource,
)
from samplers.awrs import AWRSEstimator, AWRSSampler, expected_first_round_checks
from samplers.exact import ExactDistributions, enumerate_distributions, kl_divergence
from samplers.masked import GreedySampler, MaskedSampler
from samplers.protocols import LanguageModel, Matcher, RandomGenerator, SampleResult, TokenSampler
from samplers.resampling import (
    RESAMPLING_METHODS,
    ResamplingMethod,
    effective_sample_size,
    resample,
    resample_log_weights,
)
from samplers.smc import LogPotential, Particle, ParticleStatus, SMCResult, smc

__all__ = [
    "RESAMPLING_METHODS",
    "ASApEmptyLanguageError",
    "ASApSample",
    "ASApSampler",
    "ASApTrieFullError",
    "AWRSEstimator",
    "AWRSSampler",
    "ExactDistributions",
    "GreedySampler",
    "LanguageModel",
    "LogPotential",
    "MaskedSampler",
    "Matcher",
    "MatcherSource",
    "Particle",
    "ParticleStatus",
    "RandomGenerator",
    "ResamplingMethod",
    "SMCResult",
    "SampleResult",
    "TokenSampler",
    "effective_sample_size",
    "enumerate_distributions",
    "expected_first_round_checks",
    "kl_divergence",
    "resample",
    "resample_log_weights",
    "smc",
]
