"""Test-time adaptation (TTA) methods for (quantized) models with BatchNorm, one per file, registered
in `TTA_METHODS`.

Files: `base.py` (config base, BN re-normalisation with test-batch statistics, BN-affine-only
training set-up, `TTAMethod` with `adapt(x) -> logits` and `state_dict()` for resumable streams),
`bn_adapt.py` (BN-statistics adaptation, Schneider et al. arXiv:2006.16971), `tent.py` (Tent,
arXiv:2006.10726), `cotta.py` (CoTTA-style teacher-student, arXiv:2203.13591). Used by TTAQ
(arXiv:2412.09899, `methods/ttaq.py`) and the TTA stream actor.

    from methods.tta import TTA_METHODS
    tta = TTA_METHODS.get("tent").build(qmodel, seed=0)
    logits = tta.adapt(batch_x)
"""
from methods.tta import bn_adapt, cotta, tent  # noqa: E402,F401,I001
from methods.tta.base import TTA_METHODS, BatchStatsNorm, TTAConfig, TTAEntry, TTAMethod, prepare_bn_affine

__all__ = ["TTA_METHODS", "BatchStatsNorm", "TTAConfig", "TTAEntry", "TTAMethod", "prepare_bn_affine"]
