"""Post-training quantization methods, one per file, registered in `PTQ_METHODS`.

Every method is a `PTQMethod` with a frozen config class and
`run(model, calib_x, config=None, seed=0, forward_fn=None) -> PTQResult` that quantizes a *copy* of
the FP model, calibrates/reconstructs it on `calib_x`, finalises it for evaluation (drop
probabilities 1, rounding hardened, `check_ready_for_eval` passes) and returns it with a report
(config, calibration seconds, bits per module, per-unit reconstruction losses).

Files: `common.py` (shared configs, registry entry type, runner), `minmax.py`, `percentile.py`,
`mse.py`, `adaround.py` (layer-wise), `brecq.py` (block-wise, weights then activations), `qdrop.py`
(block-wise, joint, random dropping), `repq_vit.py` (LayerNorm and log-sqrt2 re-parameterisation),
`mgrq.py` (block reconstruction + global and local supervision); "ttaq" (QDrop + PEM/PCR) is
registered by `methods/ttaq.py`. Importing this package registers all of them.

    quantize = PTQ_METHODS.create("qdrop", w_bits=4, a_bits=4)  # config checked here
    result = quantize(model, calib_x, seed=0)
"""

from methods import ttaq  # noqa: F401  (registers "ttaq"; works in either import order)
from methods.ptq import adaround, brecq, mgrq, minmax, mse, percentile, qdrop, repq_vit  # noqa: E402,F401,I001
from methods.ptq.common import PTQ_METHODS, PTQConfig, PTQMethod, PTQResult, ReconPTQConfig, register_ptq

__all__ = ["PTQ_METHODS", "PTQConfig", "PTQMethod", "PTQResult", "ReconPTQConfig", "register_ptq"]
