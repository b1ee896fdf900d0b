"""MGRQ: mixed-granularity reconstruction for ViT post-training quantization — our instantiation.

Yang et al., "MGRQ: Post-Training Quantization For Vision Transformer With Mixed Granularity
Reconstruction", ICIP 2024, arXiv 2406.09229. No official code exists and the paper body was not at
hand, so everything below the abstract level is **[inferred]** (reference/quant.md § 6.2):

* [paper] optimised block-wise reconstruction + Extra-Block Global Supervision + Intra-Block Local
  Supervision, combined by Mixed Granularity Loss Fusion.
* [inferred] initialisation: RepQ-ViT (`repq_vit.repq_init`: post-LayerNorm per-channel ->
  per-tensor re-parameterisation, log-sqrt2 softmax quantizer, per-channel weights).
* [inferred] unit: one transformer block (other quantized layers alone), QDrop mixing p = 0.5,
  AdaRound on weights + LSQ on uniform activation steps (the log2 softmax scale stays fixed).
* [inferred] L_block = sum over channels, mean over tokens of (B^(x^) - B(x))^2.
* [inferred] L_global = KL(softmax(z_fp / T) || softmax(z_q / T)) * T^2, T = 1, where z_q is the
  quantized block's output pushed through the **FP** rest of the network (frozen, differentiable)
  and z_fp the FP network's output for the same images.
* [inferred] L_local = sum over the block's Linear/Conv layers of mean (y^_l - y_l)^2. Two readings
  of "intra-block local supervision", `local_target`: 'block_input' (default) y_l is the FP layer on
  the quantized block's own (unquantized) input to that layer; 'fp_model' y_l is the FP model's
  output of that layer (the unit run in FP on the FP-model unit input).
* [inferred] fusion: L = L_block + L_block(0) * (lambda_g L_global / L_global(0)
  + lambda_l L_local / L_local(0)): each auxiliary term is normalised by its value at the unit's
  first iteration and brought to the block loss's scale, so at iteration 0 all three weigh the same
  and the balance against the AdaRound regulariser (lambda = 0.01 on the raw block loss, as in
  QDrop) is unchanged. The iteration-0 values are measured with nearest rounding: soft AdaRound
  starts at W exactly, so the soft iteration-0 errors contain activation error only, and the local
  term then grew by orders of magnitude once rounding hardened and swamped L_block.
  lambda_g = lambda_l = 1.
Weights use the same observer as the reconstruction baselines (MSE, `ReconPTQConfig`; min-max
cost 4-6 points at W2A4 against BRECQ/QDrop, issue 13). Iterations default to 200 per block at tiny
scale (family default 20 000). Ablations: `init='plain'` (the config's observers instead of the
RepQ-ViT start), lambda_global = lambda_local = 0 (plain QDrop-style block reconstruction on the
same init), and `local_target`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.errors import ConfigError
from methods.ptq.common import ReconPTQConfig, register_ptq
from methods.ptq.repq_vit import repq_init
from methods.quant import calibrate, quantize_
from methods.quant.recon import ReconContext, ReconEngine, default_units, lp_loss

INITS = ("repq_vit", "plain")  # 'plain': quantize_ + calibrate with the config's observers (ablation)
LOCAL_TARGETS = ("block_input", "fp_model")  # the two readings of intra-block local supervision
EPS = 1e-6  # floor of the normalisers: a term that starts at ~0 must not be blown up by 1/0


@dataclass(frozen=True)
class MGRQConfig(ReconPTQConfig):
    softmax_quant: str = "log_sqrt2"
    drop_prob: float = 0.5
    lambda_global: float = 1.0
    lambda_local: float = 1.0
    temperature: float = 1.0
    init: str = "repq_vit"
    local_target: str = "block_input"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {self.init!r}.")
        if self.local_target not in LOCAL_TARGETS:
            raise ConfigError(f"local_target must be one of {LOCAL_TARGETS}, got {self.local_target!r}.")
        if self.lambda_global < 0 or self.lambda_local < 0 or self.temperature <= 0:
            raise ConfigError(
                f"lambda_global/lambda_local must be >= 0 and temperature > 0, got {self.lambda_global}, "
                f"{self.lambda_local}, {self.temperature}."
            )

    @classmethod
    def search_space(cls) -> dict[str, tuple]:
        return {
            **super().search_space(),
            "lambda_global": ("float", 0.0, 4.0),
            "lambda_local": ("float", 0.0, 4.0),
        }


def global_kl(z_q: torch.Tensor, z_fp: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(z_fp/T) || softmax(z_q/T)) * T^2, batch mean."""
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(z_q / t, -1), F.log_softmax(z_fp / t, -1), log_target=True, reduction="batchmean"
        ).clamp_min(0.0)
        * t
        * t
    )  # >= 0 up to float error


class MGRQLoss:
    """Mixed-granularity loss callback for `ReconEngine` (normalised by the iteration-0 values)."""

    needs_layer_errors = True

    def __init__(self, lambda_global: float = 1.0, lambda_local: float = 1.0, temperature: float = 1.0,
                 local_target: str = "block_input"):
        self.lambda_global, self.lambda_local, self.temperature = lambda_global, lambda_local, temperature
        self.layer_error_target = local_target  # read by the engine
        self.norms: tuple[float, float, float] | None = None
        self.last: dict[str, float] = {}

    def start_unit(self, unit) -> None:
        self.norms = None

    def terms(self, q_out, fp_out, ctx: ReconContext, layer_errors=None):
        layer_errors = ctx.layer_errors if layer_errors is None else layer_errors
        l_block = lp_loss(q_out, fp_out)
        zero = q_out.new_zeros(())
        l_global = (
            global_kl(ctx.rest_forward(q_out), ctx.fp_output(), self.temperature)
            if self.lambda_global
            else zero
        )
        l_local = torch.stack(layer_errors).sum() if (self.lambda_local and layer_errors) else zero
        return l_block, l_global, l_local

    @torch.no_grad()
    def initial_norms(self, fp_out, ctx: ReconContext) -> tuple[float, float, float]:
        """The three terms at iteration 0 with nearest rounding (soft AdaRound starts at W exactly, so
        its weight error is zero there and would make the normalisers meaninglessly small)."""
        out, errors = ctx.forward_unit(hard=True)
        return tuple(max(float(t), EPS) for t in self.terms(out, fp_out, ctx, errors))

    def __call__(self, q_out, fp_out, ctx: ReconContext) -> torch.Tensor:
        l_block, l_global, l_local = self.terms(q_out, fp_out, ctx)
        if self.norms is None:
            self.norms = self.initial_norms(fp_out, ctx)
        nb, ng, nl = self.norms
        self.last = {
            k: float(v.detach()) for k, v in (("block", l_block), ("global", l_global), ("local", l_local))
        }
        return l_block + nb * (self.lambda_global * l_global / ng + self.lambda_local * l_local / nl)


@register_ptq(
    "mgrq", MGRQConfig, "RepQ-ViT init + block recon + global KL + local layer supervision [inferred]"
)
def run_mgrq(model, calib_x, config: MGRQConfig, seed, forward_fn):
    if config.init == "repq_vit":
        repq_init(model, calib_x, config, forward_fn)
    else:
        quantize_(model, config.quant_config())
        calibrate(model, calib_x, config.calib_batch, forward_fn)
    loss = MGRQLoss(config.lambda_global, config.lambda_local, config.temperature, config.local_target)
    engine = ReconEngine(model, calib_x, config.recon_config(), seed, forward_fn)
    return engine.reconstruct(default_units(model, calib_x, "block"), loss)
