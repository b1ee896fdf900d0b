"""SAQ-SAM: Perceptual-Consistency Clipping (PCC), Prompt-Aware Reconstruction (PAR) with layer
skipping, on top of the PTQ4SAM pipeline (`methods/ptq4sam.py`).

Paper: "SAQ-SAM: Semantically-Aligned Quantization for Segment Anything Model", AAAI 2026,
arXiv 2503.06515; official code `jingjing0419/SAQ-SAM` (`ptq4sam/model/quant_model.py`,
`ptq4sam/solver/recon.py`, `test_quant_SAQ_m.py`; reference/quant.md § 2).

* PCC [code: `search_range_AOL`, `AttentionOverlapLoss`]: for every decoder attention, the four
  q/k-path quantizers in the official order (inputs of q_proj and k_proj, then the outputs of
  q_proj and k_proj) get a symmetric-percentile range [quantile(x, 1-p), quantile(x, p)] for the 29
  official p in 0.85..0.99999; the score is 1 - IoU of the focus masks M(A) = A > tau * rowmax(A)
  (tau = 0.5) of the attention with that one quantizer on against the FP attention; IoU =
  sum min / (sum max + 1e-6) over (query, key), mean over batch and heads. The winner is kept
  enabled while the next quantizer is searched (sequential, as the official loop), and the four
  ranges are frozen before ordinary calibration. Run on the first `pcc_images` calibration images
  (official: image 0). [ours] A_fp and A_q are taken before the post-softmax quantizer (not yet
  calibrated at that point); quantiles by `kthvalue` (nearest rank), not `torch.quantile`.
* PAR [code: `reconstruction_IE`]: the encoder is reconstructed per **stage** (blocks up to and
  including each global-attention block); a stage's output goes through the FP neck and the FP mask
  decoder with the calibration prompts of its images, and the loss is
  mean_tokens sum_channels (K_q - K_fp)^2 of the two-way transformer's image-token output ("keys"),
  K_fp from the FP stage output through the same path. The plain stage-output MSE is not added
  (as in the released code). The neck is reconstructed with plain output MSE. QDrop p = 0.5 on the
  stage input; the AdaRound regulariser is off (`round_weight = 0`, hard-wired in SAQ-SAM's loss).
* Layer skipping [code/paper]: with `layer_skip=True` the stage output goes straight to the neck;
  with False it first runs the remaining FP encoder blocks (the ablation). `block_evals` counts the
  encoder-block forward passes the PAR targets cost and `block_evals_saved` those layer skipping
  avoided. K_fp is computed once per calibration image and cached [ours: it does not change].
* [ours] the decoder is not reconstructed in this slice (the official CLM loss
  0.01 |dq|^2 + |dk|^2 + |dT|^2, alpha = beta = 1, is left for the next one); decoder quantizers keep
  their calibrated ranges.
* The evaluation bug of both official codes (only quantizers named `*post_act_fake_quantize` get
  their drop probability reset, so every layer-input quantizer of a reconstructed unit stays at
  p = 0.5 at test time) is impossible here: `ptq4sam.SamPTQMethod.run` finalises and checks every
  quantizer. `reproduce_drop_bug_` re-creates it on purpose (the layer-input quantizers of the
  reconstructed units back at p) so the bench can put its size on record.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from methods.errors import ConfigError
from methods.ptq4sam import (
    SamPTQConfig,
    TokenLoss,
    encoder_forward,
    register_sam_method,
    sam_ptq,
)
from methods.quant import quant_disabled
from methods.quant.modules import _QuantWeightLayer
from methods.quant.observers import row_quantile
from methods.quant.quantizers import UniformQuantizer
from methods.quant.recon import ReconContext, ReconEngine
from methods.quant.sam_modules import QuantSamAttention, SamPromptSet, decode

OFFICIAL_CLIPS = (0.85, 0.87, 0.88, 0.89, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.960, 0.965, 0.970, 0.975,
                  0.980, 0.983, 0.985, 0.987, 0.989, 0.99, 0.993, 0.995, 0.997, 0.999, 0.9993, 0.9995,
                  0.9997, 0.9999, 0.99999)  # `search_range_AOL`'s pct_list [code]
PCC_QUANTIZERS = ("q_proj.a_quant", "k_proj.a_quant", "qk.qa", "qk.qb")  # official search order


# -- focus masks and PCC ------------------------------------------------------------------------


def focus_mask(attn: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """M(A) = A > tau * max over keys (last dim) of A."""
    return attn > tau * attn.amax(dim=-1, keepdim=True)


def focus_iou(a: torch.Tensor, b: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """IoU of the focus masks of two attention maps (..., Nq, Nk): sum over (query, key), then the
    mean over the leading dims (batch, heads), as `AttentionOverlapLoss`."""
    m1, m2 = focus_mask(a, tau).float(), focus_mask(b, tau).float()
    inter = torch.minimum(m1, m2).sum(dim=(-2, -1))
    union = torch.maximum(m1, m2).sum(dim=(-2, -1))
    return (inter / (union + 1e-6)).mean()


def clip_range(x: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[quantile(x, 1 - p), quantile(x, p)] over all elements (per-tensor)."""
    flat = x.detach().reshape(1, -1).float()
    return row_quantile(flat, 1.0 - p), row_quantile(flat, p)


def pcc_search(quantizer: UniformQuantizer, x: torch.Tensor, attention: Callable[[], torch.Tensor],
               a_fp: torch.Tensor, clips: Sequence[float] = OFFICIAL_CLIPS,
               tau: float = 0.5) -> tuple[float, list[float]]:
    """Set `quantizer`'s range to the clip p of `x` minimising 1 - focus IoU(attention(), a_fp).

    `attention()` recomputes the attention map with the quantizer as it is set; returns the chosen
    p and the score of every candidate (the quantizer is left enabled with the winning range).
    """
    scores = []
    quantizer.enabled = True
    with torch.no_grad():
        for p in clips:
            quantizer.set_range(*clip_range(x, p))
            scores.append(float(1.0 - focus_iou(attention(), a_fp, tau)))
    best = min(range(len(clips)), key=lambda i: (scores[i], -clips[i]))  # ties: the looser clip
    quantizer.set_range(*clip_range(x, clips[best]))
    return clips[best], scores


def _inputs_of(module: nn.Module, run: Callable[[], object]) -> torch.Tensor:
    got: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: got.append(args[0].detach()))
    try:
        run()
    finally:
        handle.remove()
    return got[0]


def _qkv(args: tuple, kwargs: dict) -> tuple[torch.Tensor, ...]:
    vals = list(args) + [kwargs[k] for k in ("q", "k", "v") if k in kwargs]
    return tuple(v.detach() for v in vals)


def _capture_attention_inputs(qsam: nn.Module, data: SamPromptSet, cfg: SaqSamConfig):
    """(name, module) of every quantized decoder attention and its FP (q, k, v) inputs on the first
    `cfg.pcc_images` calibration images."""
    from methods.quant.sam_modules import run_sam

    attns = [(n, m) for n, m in qsam.mask_decoder.named_modules() if isinstance(m, QuantSamAttention)]
    seen: dict[str, tuple] = {}

    def grab(_m, args, kwargs, name):
        seen.setdefault(name, _qkv(args, kwargs))  # the first call: image 0's prompts

    hooks = [m.register_forward_pre_hook(functools.partial(grab, name=n), with_kwargs=True) for n, m in attns]
    try:
        with quant_disabled(qsam):
            run_sam(qsam, data, torch.arange(min(cfg.pcc_images, data.n_images)), cfg.max_prompts)
    finally:
        for h in hooks:
            h.remove()
    return attns, seen


@torch.no_grad()
def apply_pcc_(qsam: nn.Module, data: SamPromptSet, cfg: SaqSamConfig, seed: int = 0) -> dict:
    """PCC on every decoder attention of the (uncalibrated, hence pass-through) quantized `qsam`."""
    attns, seen = _capture_attention_inputs(qsam, data, cfg)
    frozen, chosen, curves = [], [], {}
    for name, attn in attns:
        q, k, _ = seen[name]
        with quant_disabled(qsam):
            a_fp = attn.probs(q, k)
        named = dict(attn.named_modules())
        attention = functools.partial(attn.probs, q, k)
        for qname in PCC_QUANTIZERS:
            quant = named[qname]
            x = _inputs_of(quant, attention)
            p, scores = pcc_search(quant, x, attention, a_fp, cfg.clips, cfg.pcc_tau)
            frozen.append(id(quant))
            chosen.append({"attention": name, "quantizer": qname, "clip": p, "score": min(scores),
                           "max_abs": float(x.abs().max())})
            curves[f"{name}.{qname}"] = scores
    return {"frozen": frozen, "clips": chosen, "curves": curves}


@torch.no_grad()
def apply_fixed_clips_(qsam: nn.Module, data: SamPromptSet, cfg: SaqSamConfig, seed: int = 0) -> dict:
    """The clip-ratio study's alternative to PCC: decoder attention i gets clip `cfg.fixed_clips[i]` on
    its four q/k-path quantizers (same inputs, same freezing; no search)."""
    attns, seen = _capture_attention_inputs(qsam, data, cfg)
    if len(cfg.fixed_clips) != len(attns):
        raise ConfigError(f"fixed_clips needs one clip per decoder attention ({len(attns)}), got "
                          f"{len(cfg.fixed_clips)}: {list(cfg.fixed_clips)}.")
    frozen, chosen = [], []
    for (name, attn), p in zip(attns, cfg.fixed_clips, strict=True):
        q, k, _ = seen[name]
        named = dict(attn.named_modules())
        for qname in PCC_QUANTIZERS:
            quant = named[qname]
            quant.enabled = True
            quant.set_range(*clip_range(_inputs_of(quant, functools.partial(attn.probs, q, k)), p))
            frozen.append(id(quant))
            chosen.append({"attention": name, "quantizer": qname, "clip": p})
    return {"frozen": frozen, "clips": chosen, "curves": {}}


@torch.no_grad()
def attention_focus_ious(qsam: nn.Module, data: SamPromptSet, n_images: int = 8, tau: float = 0.5,
                         max_prompts: int | None = None) -> dict[str, float]:
    """Per decoder attention: focus IoU of the quantized attention map against FP (same inputs path:
    the FP map comes from the same wrapped model with every quantizer off)."""
    from methods.quant.sam_modules import run_sam

    attns = [(n, m) for n, m in qsam.mask_decoder.named_modules() if isinstance(m, QuantSamAttention)]
    idx = torch.arange(min(n_images, data.n_images))
    maps = []
    for off in (True, False):
        for _, m in attns:
            m.keep_probs = True
        try:
            if off:
                with quant_disabled(qsam):
                    run_sam(qsam, data, idx, max_prompts)
            else:
                run_sam(qsam, data, idx, max_prompts)
            maps.append({n: m.last_probs for n, m in attns})
        finally:
            for _, m in attns:
                m.keep_probs, m.last_probs = False, None
    return {n: float(focus_iou(maps[1][n], maps[0][n], tau)) for n, _ in attns}


# -- PAR with layer skipping --------------------------------------------------------------------


def encoder_stages(qsam: nn.Module) -> list[tuple[str, ...]]:
    """Encoder blocks grouped into stages, each ending at a global-attention block (window 0)."""
    stages, current = [], []
    for i, blk in enumerate(qsam.image_encoder.blocks):
        current.append(f"image_encoder.blocks.{i}")
        if blk.window_size == 0:
            stages.append(tuple(current))
            current = []
    if current:
        stages.append(tuple(current))
    return stages


class PARLoss:
    """ReconEngine loss: stage output -> [remaining FP blocks] -> FP neck -> FP decoder image tokens."""

    def __init__(self, qsam: nn.Module, data: SamPromptSet, layer_skip: bool = True,
                 max_prompts: int | None = 16) -> None:
        self.qsam, self.data, self.layer_skip, self.max_prompts = qsam, data, layer_skip, max_prompts
        self.n_blocks = len(qsam.image_encoder.blocks)
        self.plain = TokenLoss()
        self.block_evals = 0
        self.block_evals_saved = 0
        self.unit: tuple[str, ...] = ()
        self._targets: dict[int, torch.Tensor] = {}

    def start_unit(self, unit: tuple[str, ...]) -> None:
        self.unit, self._targets = tuple(unit), {}
        self.plain.start_unit(unit)

    @property
    def is_stage(self) -> bool:
        return self.unit[-1].startswith("image_encoder.blocks.")

    def _rest(self) -> int:
        return self.n_blocks - 1 - int(self.unit[-1].rsplit(".", 1)[1])

    def image_tokens(self, stage_out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The FP rest of the model on a stage output: the decoder's image tokens for idx's prompts."""
        enc = self.qsam.image_encoder
        x, rest = stage_out, self._rest()
        with quant_disabled(self.qsam):
            if self.layer_skip:
                self.block_evals_saved += rest
            else:
                for blk in enc.blocks[self.n_blocks - rest:]:
                    x = blk(x)
                self.block_evals += rest
            emb = enc.neck(x.permute(0, 3, 1, 2))
            pos, ids = self.data.prompts_of(idx, self.max_prompts)
            return decode(self.qsam, emb[pos], self.data.sparse[ids])["image_tokens"]

    def _target(self, fp_out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        parts = []
        for j, i in enumerate(idx.tolist()):
            if i not in self._targets:
                with torch.no_grad():
                    self._targets[i] = self.image_tokens(fp_out[j : j + 1], idx[j : j + 1])
            parts.append(self._targets[i])
        return torch.cat(parts)

    def __call__(self, q_out: torch.Tensor, fp_out: torch.Tensor, ctx: ReconContext) -> torch.Tensor:
        if not self.is_stage:
            return self.plain(q_out, fp_out)
        idx = ctx.model_input
        k_fp = self._target(fp_out, idx)
        k_q = self.image_tokens(q_out, idx)
        return (k_q - k_fp).pow(2).sum(-1).mean()


def reconstruct_par(qsam: nn.Module, data: SamPromptSet, cfg: SaqSamConfig, seed: int) -> dict:
    """Stages with PAR (or, par=False, plain stage-output MSE), then the neck with plain MSE."""
    units = [*encoder_stages(qsam), ("image_encoder.neck",)]
    loss = PARLoss(qsam, data, cfg.layer_skip, cfg.max_prompts) if cfg.par else TokenLoss()
    engine = ReconEngine(qsam, torch.arange(data.n_images), cfg.recon_config(), seed, encoder_forward(data),
                         capture_batch=cfg.calib_batch)
    t0 = time.perf_counter()
    rows = engine.reconstruct(units, loss)
    seconds = time.perf_counter() - t0
    return {"units": rows, "par": cfg.par, "layer_skip": cfg.layer_skip,
            "block_evals": getattr(loss, "block_evals", 0),
            "block_evals_saved": getattr(loss, "block_evals_saved", 0),
            "recon_seconds": seconds, "seconds_per_step": seconds / max(1, cfg.iters * len(units))}


# -- config and registration --------------------------------------------------------------------


@dataclass(frozen=True)
class SaqSamConfig(SamPTQConfig):
    """SAQ-SAM's defaults: MSE activation observers, no AdaRound regulariser, PCC + PAR + skipping."""

    a_observer: str = "mse"
    round_weight: float = 0.0
    pcc: bool = True
    pcc_tau: float = 0.5
    pcc_images: int = 1
    clips: tuple[float, ...] = OFFICIAL_CLIPS
    par: bool = True
    layer_skip: bool = True
    fixed_clips: tuple[float, ...] = ()  # one clip per decoder attention instead of PCC's search


    def __post_init__(self) -> None:
        super().__post_init__()
        clips = tuple(self.clips)
        object.__setattr__(self, "clips", clips)
        object.__setattr__(self, "fixed_clips", tuple(self.fixed_clips))
        bad = [c for c in clips + self.fixed_clips
               if not isinstance(c, (int, float)) or not 0.5 < float(c) <= 1.0]
        if not clips or bad:
            raise ConfigError(
                f"clips must be a non-empty list of percentiles in (0.5, 1] (inside (0, 1], above the "
                f"median so the range is not inverted; the official list is 0.85 .. 0.99999), got "
                f"{list(clips)} (bad: {bad}). Pass e.g. clips=[0.9, 0.99, 0.999]."
            )
        if not 0.0 < self.pcc_tau < 1.0 or self.pcc_images < 1:
            raise ConfigError(f"pcc_tau must lie in (0, 1) and pcc_images >= 1, got {self.pcc_tau}, "
                              f"{self.pcc_images}.")


@register_sam_method("saqsam", SaqSamConfig, "PCC clipping + prompt-aware stage recon with layer skipping")
def run_saqsam(qsam: nn.Module, data: SamPromptSet, config: SaqSamConfig, seed: int) -> dict:
    pcc = apply_fixed_clips_ if config.fixed_clips else (apply_pcc_ if config.pcc else None)
    return sam_ptq(qsam, data, config, seed, pcc=pcc, recon=reconstruct_par)


def reproduce_drop_bug_(qsam: nn.Module, report: dict, p: float = 0.5) -> int:
    """Put the official codes' evaluation bug back on purpose: every layer-input quantizer inside the
    reconstructed units gets drop probability p again. Returns how many quantizers it touched; the
    model then fails `check_ready_for_eval` (as it should)."""
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"the bug's drop probability must lie in [0, 1), got {p}.")
    units = [u["unit"] for u in report.get("recon", {}).get("units", [])]
    names = {n for u in units for n in u.split(",")}
    named = dict(qsam.named_modules())
    touched = 0
    for unit_name in names:
        for m in named[unit_name].modules():
            if isinstance(m, _QuantWeightLayer):
                m.a_quant.drop_prob = p
                touched += 1
    return touched


#: The bench's baseline table under one config: name -> (method, overrides of its config).
PRESETS: dict[str, tuple[str, dict]] = {
    "minmax": ("ptq4sam", {"big": False, "softmax_quant": "uniform", "recon": False, "a_observer": "minmax"}),
    "percentile": ("ptq4sam", {"big": False, "softmax_quant": "uniform", "recon": False,
                               "a_observer": "percentile"}),
    "mse": ("ptq4sam", {"big": False, "softmax_quant": "uniform", "recon": False, "a_observer": "mse"}),
    "qdrop": ("ptq4sam", {"big": False, "softmax_quant": "uniform"}),
    "ptq4sam": ("ptq4sam", {}),
    "saqsam_star": ("saqsam", {"recon": False}),
    "saqsam": ("saqsam", {}),
}
