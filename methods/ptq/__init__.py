"""Post-training quantization methods, one per file, registered in `PTQ_METHODS`.

Every method is a `PTQMethod` with a frozen config class and
`run(model, calib_x, config=None, seed=0, forward_fn=None) -> PTQResult` that quantizes a *copy* of
the FP model, calibrates/reconstructs it on `calib_x`, finalises it for evaluation (drop
probabilities 1, rounding hardened, `check_ready_for_eval` passes) and returns it with a report
(config, calibration seconds, bits per module, per-unit reconstruction losses).

Files: `common.py` (shared configs, registry entry type, runner), `minmax.py`, `percentile.py`,
`mse.py`, `adaround.py` (layer-wise), `brecq.py` (block-wise, weights then activations), `qdrop.py`
(block-wise, joint, random dropping), `repq_vit.py` (LayerNorm and log-sqrt2 re-parameterisation),
`mgrq.py` (block reconstruction + global and local supervision).
"""

from methods.ptq import adaround, brecq, mgrq, minmax, mse, percentile, qdrop, repq_vit  # noqa: E402,F401,I001
from methods.ptq.common import PTQ_METHODS, PTQConfig, PTQMethod, PTQResult, ReconPTQConfig, register_ptq

__all__ = ["PTQ_METHODS", "PTQConfig", "PTQMethod", "PTQResult", "ReconPTQConfig", "register_ptq"]
