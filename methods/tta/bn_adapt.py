"""BN-statistics adaptation: normalise with test-batch statistics, learn nothing.

Schneider et al., "Improving robustness against common corruptions by covariate shift adaptation"
(NeurIPS 2020, arXiv:2006.16971) and Nado et al., "Evaluating prediction-time batch
normalization for robustness under covariate shift" (arXiv:2006.10963). Follows the papers: each
test batch is normalised with its own statistics, optionally mixed with the source statistics
(`source_weight` = N/(N+n)); no parameter changes, so the method is stateless across batches.
Applying it inside a fake-quantized model (BN kept as FP layers between quantized convolutions)
is TTAQ's setting (arXiv:2412.09899, reference/quant.md § 5.2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.tta.base import TTAConfig, TTAMethod, register_tta


@dataclass(frozen=True)
class BNAdaptConfig(TTAConfig):
    pass


@register_tta("bn_adapt", BNAdaptConfig, "normalise with test-batch BN statistics (no learning)")
class BNAdapt(TTAMethod):
    @torch.no_grad()
    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)
