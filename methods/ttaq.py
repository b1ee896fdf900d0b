"""TTAQ: post-training quantization that stays stable under continual test-time adaptation.

Xiao et al., "TTAQ: Towards Stable Post-training Quantization in Continuous Domain Adaptation",
arXiv:2412.09899. No official code exists and only the abstract-level description could be read
(reference/quant.md § 5.1), so everything below except the three parts' names and purposes is
**our instantiation [inferred]** (reference/quant.md § 5.2), to be revisited with the paper text:

* **Perturbation Error Mitigation (PEM)** — for a layer y = Ŵx with input perturbation δ,
  E‖ΔW(x+δ)‖² = ‖ΔWx‖² + 2E[xᵀΔWᵀΔWδ] + tr(ΔW M ΔWᵀ) with ΔW = Ŵ − W and M = E[δδᵀ] (uncentred,
  so a mean shift of δ counts too). The reconstruction already minimises the first term; PEM adds
  λ_pem·Σ_c s_c²(ΔW M ΔWᵀ)_cc (the cross term is dropped). M is estimated from (perturbed − clean)
  layer inputs of the FP model on the calibration set (im2col patch vectors for convolutions, at
  most `pem_max_vectors` sampled). s_c = γ_c/√(σ²_c+ε) of the BatchNorm that directly follows the
  layer inside the unit (1 otherwise) puts the term in the units of the reconstruction loss
  (squared error summed over channels, averaged over positions), which is our reading of "λ_pem = 1
  after normalising by the clean term". It is exactly zero when Ŵ = W. `pem_mode="lipschitz"` is
  the alternative reading: λ_pem·max(0, ‖Ŵ‖_F² − ‖W‖_F²)/‖W‖_F² (also zero when Ŵ = W).
* **Perturbation Consistency Reconstruction (PCR)** — during block reconstruction the quantized
  block also sees a perturbed view x̃ of each calibration image (Gaussian noise, box blur, contrast
  or brightness change, one per image, drawn once per run): L = ‖B̂(x) − B(x)‖² + λ_c·PCR (same
  per-channel-sum norm as BRECQ/QDrop's loss); for the unit that produces the network output the
  term is the symmetric KL between the two softmaxes. λ_c = 0.5. Two readings (`pcr_target`):
  'consistency' (default) PCR = ‖B̂(x̃) − B̂(x)‖², both passes with the same QDrop unit-input mask
  and the same activation drop masks, so they differ only by the perturbation (exactly zero when
  x̃ = x; before, the clean pass had the mixed input and the perturbed one the unmixed input, and
  PCR partly penalised QDrop's own noise); 'fp_perturbed' PCR = ‖B̂(x̃) − B(x̃)‖², reconstruction on
  the perturbed view, zero at the FP solution. [inferred, both]
* **Adaptive Balanced Loss (ABL)** — during adaptation the logits inside the TTA loss (never the
  reported prediction: the logit-adjustment convention of Menon et al., arXiv:2007.07314) become
  z̃_c = z_c + τ_f·log(C·π̂_c) + τ_k·log(C·κ̂_c), π̂ an EMA (momentum 0.9) of the predicted-class
  frequency of the stream, κ̂ an EMA of the mean prediction entropy of the samples assigned to each
  class, normalised to sum 1; τ_f = τ_k = 1. The factor C makes uniform statistics leave the logits
  exactly unchanged (the brief's form without it shifts all logits by a constant, the same softmax).
  The sign of the κ̂ term is not known from the abstract: `kappa_sign=+1` (default, the brief's
  form) or −1; both selectable; which one helps has not yet been measured on a bed with headroom
  (issue 13), so the default is a guess [inferred].

The base PTQ is QDrop (arXiv:2203.05740, `methods/ptq/qdrop.py`): the `ttaq` PTQ method below with
`pem=False, pcr=False` runs exactly QDrop's block reconstruction, so the comparison isolates PEM/PCR.
BatchNorm is not folded: it stays a FP layer that TTA methods (`methods/tta`) adapt.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.errors import ConfigError, did_you_mean
from methods.ptq.common import PTQ_METHODS, PTQMethod, PTQResult, ReconPTQConfig
from methods.quant import calibrate, quant_disabled, quantize_
from methods.quant.bits import FAKE_QUANT
from methods.quant.modules import QuantConv2d, _QuantWeightLayer
from methods.quant.recon import ReconContext, ReconEngine, capture, default_units, lp_loss

PEM_MODES = ("covariance", "lipschitz")
PCR_TARGETS = ("consistency", "fp_perturbed")
PARTS = ("pem", "pcr", "abl")
#: The bits TTAQ takes (`methods.quant.bits`): 'fp' (no PTQ) or w2..16 a2..16, no kv, no overrides.
TTAQ_BITS = {**FAKE_QUANT, "who": "TTAQ"}


def parse_parts(text: str) -> frozenset[str]:
    """'pem+pcr+abl' -> {'pem', 'pcr', 'abl'}; 'none' -> {} (TTAQ parts switched on)."""
    t = str(text).strip().lower()
    if t in ("none", ""):
        return frozenset()
    parts = frozenset(p.strip() for p in t.split("+"))
    unknown = sorted(parts - set(PARTS))
    if unknown:
        raise ConfigError(f"TTAQ parts are 'none' or '+'-joined names from {PARTS}, got {text!r} "
                          f"(unknown {unknown}). {did_you_mean(unknown[0], PARTS)}")
    return parts


# ------------------------------------------------------------------------------ perturbations
def perturb(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """One perturbed view per image of a batch in [0, 1]: Gaussian noise (σ = 0.1·s), 3×3 box blur,
    contrast ×(1 − 0.5·s) or brightness +0.2·s·(±1), chosen uniformly per image [inferred]."""
    if x.dim() != 4:
        raise ConfigError(f"perturb expects images (N, C, H, W), got shape {tuple(x.shape)}.")
    kind = torch.randint(0, 4, (x.shape[0],), generator=gen)
    noise = x + 0.1 * strength * torch.randn(x.shape, generator=gen)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    blur = strength * blur + (1 - strength) * x
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (x - mean) * (1 - 0.5 * strength) + mean
    sign = torch.where(torch.rand(x.shape[0], 1, 1, 1, generator=gen) < 0.5, -1.0, 1.0)
    bright = x + 0.2 * strength * sign
    views = torch.stack([noise, blur, contrast, bright])  # (4, N, C, H, W)
    out = views[kind, torch.arange(x.shape[0])]
    return out.clamp(0.0, 1.0)


# ------------------------------------------------------------------------------ PEM
def layer_vectors(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The vectors a layer's weight multiplies: im2col patches (rows) for a conv, rows for a Linear."""
    if isinstance(layer, QuantConv2d) or isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ConfigError("PEM supports convolutions with groups=1 only; exclude grouped convs.")
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (N, D, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def second_moment(delta_vectors: torch.Tensor) -> torch.Tensor:
    """M = E[δδᵀ] over the rows of `delta_vectors` (uncentred)."""
    d = delta_vectors.double()
    return (d.T @ d / max(d.shape[0], 1)).float()


def flat_weight(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1)


def pem_penalty(w_hat: torch.Tensor, w: torch.Tensor, moment: torch.Tensor,
                channel_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_c s_c² (ΔW M ΔWᵀ)_cc with ΔW = Ŵ − W flattened to (C_out, D); differentiable in Ŵ."""
    dw = flat_weight(w_hat) - flat_weight(w).detach()
    per_channel = ((dw @ moment) * dw).sum(1)
    if channel_scale is not None:
        per_channel = per_channel * channel_scale.detach() ** 2
    return per_channel.sum()


def lipschitz_penalty(w_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """max(0, ‖Ŵ‖_F² − ‖W‖_F²)/‖W‖_F²: penalise only a gain above the FP layer's."""
    ref = w.detach().pow(2).sum().clamp_min(1e-12)
    return F.relu(w_hat.pow(2).sum() - ref) / ref


# ------------------------------------------------------------------------------ PCR
def pcr_consistency(out_pert: torch.Tensor, out_clean: torch.Tensor, logits: bool = False) -> torch.Tensor:
    """‖B̂(x̃) − B̂(x)‖² (per-channel sum, mean over the rest), or the symmetric KL of the softmaxes
    when `logits` (network output)."""
    if not logits:
        return lp_loss(out_pert, out_clean)
    lp, lq = F.log_softmax(out_pert, 1), F.log_softmax(out_clean, 1)
    kl_pq = (lp.exp() * (lp - lq)).sum(1)
    kl_qp = (lq.exp() * (lq - lp)).sum(1)
    return (kl_pq + kl_qp).mean()


# ------------------------------------------------------------------------------ ABL
def balanced_logits(logits: torch.Tensor, pi: torch.Tensor, kappa: torch.Tensor,
                    tau_f: float = 1.0, tau_k: float = 1.0, kappa_sign: float = 1.0) -> torch.Tensor:
    """z̃ = z + τ_f·log(C·π̂) ± τ_k·log(C·κ̂) (see module docstring); uniform π̂, κ̂ leave z unchanged."""
    c = logits.shape[1]
    if pi.shape != (c,) or kappa.shape != (c,):
        raise ConfigError(
            f"pi and kappa must have shape ({c},), got {tuple(pi.shape)} and {tuple(kappa.shape)}."
        )
    return logits + tau_f * torch.log(c * pi) + kappa_sign * tau_k * torch.log(c * kappa)


@dataclass(frozen=True)
class ABLConfig:
    tau_f: float = 1.0
    tau_k: float = 1.0
    momentum: float = 0.9
    floor: float = 1e-3  # smallest π̂/κ̂ share (times 1/C) so log stays finite for unseen classes
    kappa_sign: float = 1.0  # +1 or -1: the sign of the difficulty term (see module docstring)
    version: int = 1

    def __post_init__(self) -> None:
        if self.kappa_sign not in (1.0, -1.0):
            raise ConfigError(f"ABL kappa_sign must be +1 or -1, got {self.kappa_sign!r}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"ABL momentum must be in [0, 1), got {self.momentum!r}.")
        if not 0.0 < self.floor <= 1.0:
            raise ConfigError(f"ABL floor must be in (0, 1], got {self.floor!r}.")
        if self.version != 1:
            raise ConfigError(f"ABLConfig version {self.version!r} is unknown; this code reads 1.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"tau_f": ("float", 0.0, 2.0), "tau_k": ("float", 0.0, 2.0), "momentum": ("float", 0.5, 0.99)}


class AdaptiveBalancedLoss:
    """Stateful logit adjuster for a TTA loss: call it on a batch's logits (see module docstring).

    Each call first updates π̂ and κ̂ with the batch (no gradient), then returns adjusted logits."""

    def __init__(self, num_classes: int, config: ABLConfig | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
        self.config = config or ABLConfig()
        self.num_classes = num_classes
        self.pi = torch.full((num_classes,), 1.0 / num_classes)
        self.kappa = torch.full((num_classes,), 1.0 / num_classes)

    def _normalise(self, v: torch.Tensor) -> torch.Tensor:
        v = v.clamp_min(self.config.floor / self.num_classes)
        return v / v.sum()

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> None:
        c, m = self.num_classes, self.config.momentum
        prob = F.softmax(logits.detach().float(), 1)
        pred = prob.argmax(1)
        ent = -(prob * prob.clamp_min(1e-12).log()).sum(1)
        counts = torch.bincount(pred, minlength=c).float()
        self.pi = self._normalise(m * self.pi + (1 - m) * counts / counts.sum())
        ent_sum = torch.zeros(c).index_add_(0, pred, ent)
        seen = counts > 0
        batch_kappa = torch.where(seen, ent_sum / counts.clamp_min(1), self.kappa)
        batch_kappa = batch_kappa / batch_kappa.sum().clamp_min(1e-12)
        # classes absent from the batch keep their difficulty; present ones move towards the batch's
        mixed = torch.where(seen, m * self.kappa + (1 - m) * batch_kappa, self.kappa)
        self.kappa = self._normalise(mixed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        self.update(logits)
        cfg = self.config
        return balanced_logits(logits, self.pi, self.kappa, cfg.tau_f, cfg.tau_k, cfg.kappa_sign)

    def state_dict(self) -> dict[str, Any]:
        return {"pi": self.pi.clone(), "kappa": self.kappa.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("pi", "kappa"):
            if state[key].shape != (self.num_classes,):
                raise ConfigError(
                    f"ABL state {key} has shape {tuple(state[key].shape)}, expected ({self.num_classes},)."
                )
        self.pi, self.kappa = state["pi"].clone(), state["kappa"].clone()


# ------------------------------------------------------------------------------ PTQ with PEM + PCR
@dataclass(frozen=True)
class TTAQConfig(ReconPTQConfig):
    """QDrop base (drop_prob 0.5) plus the PEM and PCR terms; both off = QDrop exactly.

    `reconstruct=False` stops after calibration (min-max/MSE ranges only; for quick farm tests)."""

    drop_prob: float = 0.5
    calib_weights_quantized: bool = False  # QDrop's calibration (all fake-quant off) [code]
    pem: bool = True
    pcr: bool = True
    pcr_target: str = "consistency"
    lambda_pem: float = 1.0
    lambda_c: float = 0.5
    pem_mode: str = "covariance"
    perturb_strength: float = 1.0
    pem_max_vectors: int = 65536
    reconstruct: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pcr_target not in PCR_TARGETS:
            raise ConfigError(f"pcr_target must be one of {PCR_TARGETS}, got {self.pcr_target!r}. "
                              f"{did_you_mean(str(self.pcr_target), PCR_TARGETS)}")
        if self.pem_mode not in PEM_MODES:
            raise ConfigError(f"pem_mode must be one of {PEM_MODES}, got {self.pem_mode!r}. "
                              f"{did_you_mean(str(self.pem_mode), PEM_MODES)}")
        for key in ("lambda_pem", "lambda_c", "perturb_strength"):
            if not float(getattr(self, key)) >= 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)!r}.")
        if self.pem_max_vectors < 1:
            raise ConfigError(f"pem_max_vectors must be >= 1, got {self.pem_max_vectors!r}.")


    @classmethod
    def search_space(cls) -> dict[str, tuple]:
        return {**super().search_space(), "lambda_pem": ("float", 0.0, 4.0), "lambda_c": ("float", 0.0, 2.0),
                "pem": ("categorical", [False, True]), "pcr": ("categorical", [False, True])}


def _following_bn_scale(mods: list[nn.Module], layer: nn.Module) -> torch.Tensor | None:
    """γ/√(σ²+ε) of a BatchNorm directly after `layer` in the unit's module chain, else None."""
    for a, b in zip(mods, mods[1:], strict=False):
        if a is layer and isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d)) and b.running_var is not None:
            scale = torch.rsqrt(b.running_var + b.eps)
            return scale * b.weight.detach() if b.weight is not None else scale
    return None


class TTAQReconLoss:
    """Reconstruction loss callback: QDrop's Lp loss + λ_c·PCR + λ_pem·PEM (terms switched by config)."""

    def __init__(self, model: nn.Module, calib_x: torch.Tensor, config: TTAQConfig, seed: int,
                 forward_fn, final_unit: tuple[str, ...]) -> None:
        self.model, self.calib_x, self.config = model, calib_x, config
        self.forward_fn, self.final_unit = forward_fn, tuple(final_unit)
        self.gen = torch.Generator().manual_seed(int(seed) + 7919)
        self.x_pert = perturb(calib_x, self.gen, config.perturb_strength)
        self.q_in_pert: torch.Tensor | None = None
        self.fp_in_pert: torch.Tensor | None = None
        self.fp_out_pert: torch.Tensor | None = None
        self.pem_terms: list[tuple[_QuantWeightLayer, torch.Tensor | None, torch.Tensor | None]] = []
        self.last_terms: dict[str, float] = {}

    def start_unit(self, unit: tuple[str, ...]) -> None:
        named = dict(self.model.named_modules())
        mods = [named[n] for n in unit]
        self.unit = tuple(unit)
        self.mods = mods
        if self.config.pcr:
            self.q_in_pert, _ = capture(self.model, mods, self.x_pert, 128, self.forward_fn, False)
            with quant_disabled(self.model):
                self.fp_in_pert, self.fp_out_pert = capture(
                    self.model, mods, self.x_pert, 128, self.forward_fn, True
                )
        layers = [m for mod in mods for m in mod.modules() if isinstance(m, _QuantWeightLayer)]
        self.pem_terms = []
        if self.config.pem:
            moments = self._moments(layers) if self.config.pem_mode == "covariance" else {}
            self.pem_terms = [(layer, moments.get(id(layer)), _following_bn_scale(mods, layer))
                              for layer in layers]

    @torch.no_grad()
    def _moments(self, layers: list[_QuantWeightLayer]) -> dict[int, torch.Tensor]:
        """M = E[δδᵀ] of every layer's input, from the FP model on clean vs perturbed calibration data."""
        grabbed: dict[int, list[torch.Tensor]] = {id(layer): [] for layer in layers}
        hooks = [layer.register_forward_pre_hook(lambda m, a: grabbed[id(m)].append(a[0].detach()))
                 for layer in layers]
        try:
            with quant_disabled(self.model):
                for x in (self.calib_x, self.x_pert):
                    for i in range(0, x.shape[0], 128):
                        self.forward_fn(self.model, x[i:i + 128])
        finally:
            for h in hooks:
                h.remove()
        out = {}
        for layer in layers:
            chunks = grabbed[id(layer)]
            half = len(chunks) // 2
            clean, pert = torch.cat(chunks[:half]), torch.cat(chunks[half:])
            delta = layer_vectors(layer, pert - clean)
            if delta.shape[0] > self.config.pem_max_vectors:
                keep = torch.randperm(delta.shape[0], generator=self.gen)[: self.config.pem_max_vectors]
                delta = delta[keep]
            out[id(layer)] = second_moment(delta)
        return out

    def pem(self) -> torch.Tensor:
        total = torch.zeros(())
        for layer, moment, scale in self.pem_terms:
            w_hat = layer.qweight()
            if self.config.pem_mode == "covariance":
                total = total + pem_penalty(w_hat, layer.weight, moment, scale)
            else:
                total = total + lipschitz_penalty(w_hat, layer.weight)
        return total

    def __call__(self, q_out: torch.Tensor, fp_out: torch.Tensor, ctx: ReconContext) -> torch.Tensor:
        cfg = self.config
        loss = lp_loss(q_out, fp_out)
        terms = {"rec": float(loss.detach())}
        if cfg.pcr and self.q_in_pert is not None:
            out_pert = ctx.forward_same_masks(self.q_in_pert[ctx.index], self.fp_in_pert[ctx.index])
            ref = q_out if cfg.pcr_target == "consistency" else self.fp_out_pert[ctx.index]
            pcr = pcr_consistency(out_pert, ref, logits=self.unit == self.final_unit)
            loss = loss + cfg.lambda_c * pcr
            terms["pcr"] = float(pcr.detach())
        if cfg.pem and self.pem_terms:
            pem = self.pem()
            loss = loss + cfg.lambda_pem * pem
            terms["pem"] = float(pem.detach())
        terms["total"] = float(loss.detach())
        self.last_terms = terms
        return loss


def _ttaq_body(model, calib_x, config: TTAQConfig, seed, forward_fn) -> list[dict]:
    quantize_(model, config.quant_config())
    calibrate(model, calib_x, config.calib_batch, forward_fn, config.calib_weights_quantized)
    if not config.reconstruct:
        return []
    units = default_units(model, calib_x, "block")
    loss = (TTAQReconLoss(model, calib_x, config, seed, forward_fn, units[-1]) if (config.pem or config.pcr)
            else lp_loss_callback)
    return ReconEngine(model, calib_x, config.recon_config(), seed, forward_fn).reconstruct(units, loss)


def lp_loss_callback(q_out, fp_out, ctx) -> torch.Tensor:
    """QDrop's plain reconstruction loss (the engine's default)."""
    return lp_loss(q_out, fp_out)


TTAQ_PTQ = PTQ_METHODS.register("ttaq")(
    PTQMethod("ttaq", TTAQConfig, _ttaq_body, "QDrop block reconstruction + PEM + PCR (TTAQ, ours)")
)


def run_ttaq_ptq(model: nn.Module, calib_x: torch.Tensor, config: TTAQConfig | None = None, seed: int = 0,
                 forward_fn=None) -> PTQResult:
    """Quantize a copy of `model` with QDrop (+ PEM/PCR per `config`); see `PTQMethod.run`."""
    return TTAQ_PTQ.run(model, calib_x, config or TTAQConfig(), seed, forward_fn)
