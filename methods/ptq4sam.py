"""PTQ4SAM: bimodal integration (BIG), adaptive-granularity log2 softmax quantization (AGQ) and QDrop
block reconstruction for Segment Anything, plus the SAM PTQ pipeline and registry SAQ-SAM builds on.

Lv et al., "PTQ4SAM: Post-Training Quantization for Segment Anything", CVPR 2024, arXiv 2405.03144;
official code `chengtao-lv/PTQ4SAM` (reference/quant.md § 7; the SAQ-SAM fork's
`ptq4sam/model/quant_model.py` and `quantization/observer.py` were read).

* BIG [code]: the post-key-linear activations of each decoder attention are tested for a bimodal
  distribution: Gaussian KDE evaluated on 128 grid points between their min and max,
  `scipy.signal.find_peaks` with height 0.01 * sum(density) and distance 32; exactly two peaks =>
  bimodal. Then s_c = sign(mean over tokens of channel c) and both k_proj and q_proj rows (weights
  and biases) are multiplied by s: q'.k' = sum_c s_c^2 q_c k_c = q.k, so the FP function is
  unchanged exactly (tested), while the k distribution becomes unimodal. The KDE sees at most
  `big_max_points` random values of the tensor [ours: KDE cost].
* AGQ [code]: `methods.quant.quantizers.Log2Quantizer` with tau in {1, 2, 4} and the scale found by
  golden-section search on ||(x^ - x) V||^2 (`softmax_quant='log2'`).
* Reconstruction [code: QDrop]: AdaRound weights + LSQ activation steps, QDrop p = 0.5, through
  `methods.quant.recon.ReconEngine`; units: every encoder block, then the neck.
  [ours] the mask decoder is not reconstructed in this slice (its quantizers keep their calibrated
  ranges); the encoder-block loss is the squared error summed over channels, averaged over tokens.
* Observers: weights MSE per output channel, activations min-max per tensor (PTQ4SAM's configs use
  `AvgMinMaxObserver` [code]); first/last quantized layer at 8 bits (`first_last_bits`) [ours, the
  house convention].
* Calibration order [code]: BIG on FP activations first (one pass), then quantizer insertion, then
  (SAQ-SAM only) PCC ranges, which observers then leave alone, then all other ranges.

The pipeline (`sam_ptq`) is shared with SAQ-SAM (`methods/saqsam.py`), which passes its PCC and
PAR steps in; `SAM_PTQ_METHODS` holds both methods (home: `methods.saqsam`).
"""
from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.config_dict import ConfigDict
from methods.errors import ConfigError
from methods.quant import bits_report, check_ready_for_eval, finalize_for_eval, iter_quantizers
from methods.quant.config import QuantConfig
from methods.quant.modules import _QuantWeightLayer
from methods.quant.recon import ReconConfig, ReconEngine
from methods.quant.sam_modules import SamPromptSet, decoder_attentions, is_sam, quantize_sam_, run_sam
from methods.registry import Registry

# -- BIG ----------------------------------------------------------------------------------------


def kde_peaks(x: torch.Tensor, grid: int = 128, distance: int = 32, height_frac: float = 0.01,
              max_points: int = 4096, seed: int = 0) -> np.ndarray:
    """Peak positions (values of x) of the Gaussian KDE of x's values, as PTQ4SAM's sign observer."""
    from scipy.signal import find_peaks
    from scipy.stats import gaussian_kde

    v = x.detach().flatten().double()
    if v.numel() > max_points:
        v = v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(seed))[:max_points]]
    v = v.numpy()
    if v.size < 2 or float(v.max() - v.min()) < 1e-12:
        return np.zeros(0)
    xs = np.linspace(v.min(), v.max(), grid)
    density = gaussian_kde(v)(xs)
    peaks, _ = find_peaks(density, height=height_frac * density.sum(), distance=distance)
    return xs[peaks]


def is_bimodal(x: torch.Tensor, **kde: Any) -> bool:
    """Exactly two KDE peaks (PTQ4SAM's test)."""
    return len(kde_peaks(x, **kde)) == 2


def channel_signs(k_out: torch.Tensor) -> torch.Tensor:
    """s_c = sign(mean of channel c over every token), channels last; a zero mean counts as +1."""
    mean = k_out.detach().reshape(-1, k_out.shape[-1]).mean(0)
    return torch.where(mean < 0, -torch.ones_like(mean), torch.ones_like(mean))


@torch.no_grad()
def fold_signs_(attn: nn.Module, sign: torch.Tensor) -> None:
    """Multiply the rows of k_proj and q_proj (weight and bias) by `sign`: Q K^T is unchanged."""
    for proj in (attn.k_proj, attn.q_proj):
        proj.weight.mul_(sign.unsqueeze(1))
        if proj.bias is not None:
            proj.bias.mul_(sign)


@torch.no_grad()
def apply_big_(sam: nn.Module, data: SamPromptSet, max_points: int = 4096) -> list[dict]:
    """Detect bimodal post-key activations of every decoder attention on `data` and fold the signs."""
    outs: dict[str, list[torch.Tensor]] = {}
    hooks = [attn.k_proj.register_forward_hook(lambda _m, _a, o, n=name: outs.setdefault(n, []).append(o))
             for name, attn in decoder_attentions(sam)]
    try:
        run_sam(sam, data, torch.arange(data.n_images))
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for name, attn in decoder_attentions(sam):
        k = torch.cat([o.reshape(-1, o.shape[-1]) for o in outs[name]])
        bimodal = is_bimodal(k, max_points=max_points)
        flipped = 0
        if bimodal:
            sign = channel_signs(k)
            fold_signs_(attn, sign)
            flipped = int((sign < 0).sum())
        rows.append({"attention": name, "bimodal": bimodal, "channels_flipped": flipped})
    return rows


# -- config, calibration, reconstruction --------------------------------------------------------


@dataclass(frozen=True)
class SamPTQConfig(ConfigDict):
    """The one config every SAM method shares (so the baseline table compares like with like).

    big / softmax_quant='log2': PTQ4SAM's BIG and AGQ; recon: QDrop block reconstruction of the
    encoder blocks and neck. With big=False, softmax_quant='uniform', recon=False this is a plain
    observer baseline (min-max, percentile or MSE via `a_observer`).
    """

    w_bits: int = 4
    a_bits: int = 4
    first_last_bits: int | None = 8
    w_observer: str = "mse"
    a_observer: str = "minmax"
    softmax_quant: str = "log2"
    big: bool = True
    recon: bool = True
    iters: int = 200
    batch_size: int = 4
    weight_lr: float = 1e-3
    act_lr: float = 4e-5
    round_weight: float = 0.01
    drop_prob: float = 0.5
    calib_batch: int = 16
    max_prompts: int = 16
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits"):
            bits = getattr(self, name)
            if not isinstance(bits, int) or bits < 2:
                raise ConfigError(
                    f"{name} must be an int >= 2 (a bits spec below 2 has no quantization grid), "
                    f"got {bits!r}; use e.g. w4a4 or w6a6."
                )
        self.quant_config()
        self.recon_config()
        if self.calib_batch < 1 or self.max_prompts < 1:
            raise ConfigError(f"calib_batch and max_prompts must be >= 1, got {self.calib_batch}, "
                              f"{self.max_prompts}.")

    def quant_config(self) -> QuantConfig:
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits, first_last_bits=self.first_last_bits,
                           w_observer=self.w_observer, a_observer=self.a_observer,
                           softmax_quant=self.softmax_quant)

    def recon_config(self) -> ReconConfig:
        return ReconConfig(iters=self.iters, batch_size=self.batch_size, weight_lr=self.weight_lr,
                           act_lr=self.act_lr, round_weight=self.round_weight, drop_prob=self.drop_prob)

    @classmethod
    def search_space(cls) -> dict[str, tuple]:
        return {"w_bits": ("categorical", [4, 5, 6, 8]), "a_bits": ("categorical", [4, 5, 6, 8])}


@torch.no_grad()
def calibrate_sam_(qsam: nn.Module, data: SamPromptSet, cfg: SamPTQConfig,
                   frozen: frozenset = frozenset()) -> None:
    """Weight ranges, then every activation range not in `frozen` (PCC's) from `data` with weight
    quantization on and activation quantization off; then all quantizers on."""
    for _, layer in qsam.named_modules():
        if isinstance(layer, _QuantWeightLayer):
            layer.calibrate_weight()
    acts = [q for _, q in iter_quantizers(qsam, "act")]
    for q in acts:
        q.enabled = False
        if id(q) not in frozen:
            q.start_observing()
    for start in range(0, data.n_images, cfg.calib_batch):
        run_sam(qsam, data, torch.arange(start, min(start + cfg.calib_batch, data.n_images)), cfg.max_prompts)
    for q in acts:
        if id(q) not in frozen:
            q.finish_observing()
        q.enabled = True


class TokenLoss:
    """Squared error summed over channels, averaged over tokens and images: encoder blocks give
    (B, h, w, C) tokens (channels last), the neck (B, C, h, w) (channels at dim 1)."""

    def __init__(self) -> None:
        self.channel_dim = -1

    def start_unit(self, unit: tuple[str, ...]) -> None:
        self.channel_dim = 1 if unit[-1].endswith("neck") else -1

    def __call__(self, q_out: torch.Tensor, fp_out: torch.Tensor, _ctx=None) -> torch.Tensor:
        return (q_out - fp_out).pow(2).sum(self.channel_dim).mean()


def encoder_forward(data: SamPromptSet) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """forward_fn for `ReconEngine`: its calibration 'inputs' are image indices into `data`."""
    return lambda model, idx: model.image_encoder(data.images[idx])


def encoder_block_units(qsam: nn.Module) -> list[tuple[str, ...]]:
    n = len(qsam.image_encoder.blocks)
    return [(f"image_encoder.blocks.{i}",) for i in range(n)] + [("image_encoder.neck",)]


def reconstruct_blocks(qsam: nn.Module, data: SamPromptSet, cfg: SamPTQConfig, seed: int) -> list[dict]:
    """PTQ4SAM / QDrop: every encoder block, then the neck, against its FP output."""
    engine = ReconEngine(qsam, torch.arange(data.n_images), cfg.recon_config(), seed, encoder_forward(data),
                         capture_batch=cfg.calib_batch)
    return engine.reconstruct(encoder_block_units(qsam), TokenLoss())


# -- the pipeline and the registry ----------------------------------------------------------------

Step = Callable[[nn.Module, SamPromptSet, Any, int], dict]


def sam_ptq(qsam: nn.Module, data: SamPromptSet, cfg: SamPTQConfig, seed: int,
            pcc: Step | None = None, recon: Step | None = None) -> dict[str, Any]:
    """BIG -> quantizers -> [PCC] -> calibration -> [reconstruction], in place on `qsam` (an FP copy).

    `pcc(qsam, data, cfg, seed)` returns {"frozen": ids of quantizers whose ranges it set, ...};
    `recon(...)` returns {"units": [...], ...}; defaults: no PCC, block reconstruction if cfg.recon.
    """
    report: dict[str, Any] = {}
    if cfg.big:
        report["big"] = apply_big_(qsam, data)
    quantize_sam_(qsam, cfg.quant_config())
    frozen: frozenset = frozenset()
    if pcc is not None:
        out = pcc(qsam, data, cfg, seed)
        frozen = frozenset(out.pop("frozen"))
        report["pcc"] = out
    calibrate_sam_(qsam, data, cfg, frozen)
    if cfg.recon:
        if recon is None:
            report["recon"] = {"units": reconstruct_blocks(qsam, data, cfg, seed)}
        else:
            report["recon"] = recon(qsam, data, cfg, seed)
    return report


@dataclass
class SamPTQResult:
    model: nn.Module
    report: dict[str, Any] = field(default_factory=dict)


Body = Callable[[nn.Module, SamPromptSet, Any, int], dict]


@dataclass(frozen=True)
class SamPTQMethod:
    """A registered SAM method: `body(fp_copy, data, config, seed) -> report`."""

    name: str
    config_cls: type
    body: Body
    description: str = ""

    def create(self, **config: Any) -> Callable[..., SamPTQResult]:
        """This method with `config` bound: call it as `quantize(sam, data, seed=0)`."""
        return functools.partial(self.run, config=self.config_cls.from_dict(config))

    def run(self, sam: nn.Module, data: SamPromptSet, config=None, seed: int = 0) -> SamPTQResult:
        config = config if config is not None else self.config_cls()
        if not isinstance(config, self.config_cls):
            raise ConfigError(f"SAM method {self.name!r} expects a {self.config_cls.__name__}, got "
                              f"{type(config).__name__}.")
        if not is_sam(sam):
            raise ConfigError(f"SAM method {self.name!r} needs a segment_anything Sam, got "
                              f"{type(sam).__name__}.")
        qsam = copy.deepcopy(sam).eval()
        torch.manual_seed(seed)
        start, cpu = time.perf_counter(), time.process_time()
        report = self.body(qsam, data, config, seed)
        finalize_for_eval(qsam)
        report.update(method=self.name, config=config.to_dict(), seed=seed,
                      calib_seconds=time.perf_counter() - start, calib_cpu_seconds=time.process_time() - cpu,
                      calib_images=data.n_images, calib_prompts=int(len(data.image_index)),
                      bits=bits_report(qsam))
        check_ready_for_eval(qsam)
        return SamPTQResult(qsam, report)


SAM_PTQ_METHODS: Registry[SamPTQMethod] = Registry("SAM PTQ method", SamPTQMethod, home="methods.saqsam")


def register_sam_method(name: str, config_cls: type, description: str = "") -> Callable[[Body], Body]:
    def add(body: Body) -> Body:
        SAM_PTQ_METHODS.register(name)(SamPTQMethod(name, config_cls, body, description))
        return body

    return add


@register_sam_method("ptq4sam", SamPTQConfig, "BIG sign folding + AGQ log2 softmax + QDrop block recon")
def run_ptq4sam(qsam: nn.Module, data: SamPromptSet, config: SamPTQConfig, seed: int) -> dict:
    return sam_ptq(qsam, data, config, seed)
