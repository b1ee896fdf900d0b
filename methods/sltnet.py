"""SLTNet, its ANN twin and a spiking baseline, for event-camera semantic segmentation.

Paper: "Spike-driven Lightweight Transformer-based Network for Event-based Semantic
Segmentation" (SLTNet), Zhu, Guo, Long, Gu, Chen, Gu, arXiv 2412.12843 (IROS 2025). Official code:
longxianlei/SLTNet-v1.0 (model/SLTNet.py, model/module/SDSA.py, model/module/neuron.py). Built on
spikingjelly 2.0's activation-based layers in multi-step mode (`layer.Conv2d(..., step_mode="m")`
etc., tensors [T, B, C, H, W]).

What follows the official code [code]:
- the neuron `LIFAct`: u <- decay·u + x (decay 0.25), spike when u/V_th > 0.5 (V_th = 1.0: the
  effective threshold is 0.5), hard reset u <- u·(1 - s) through the straight-through spike;
  surrogate: the backward uses g(u) = (tanh(k(clamp(u/V_th, 0, 1) - 0.5)) + tanh(k/2)) / (2 tanh(k/2)),
  k = 3 (forward: the spike, backward: dg/du). The state starts at 0 on every forward call;
- SCB (`Spike_LMSBModule`), DownSamplingBlock, the STB (`MS_Block` with SDSA1: binary spikes Q, K,
  V from RepConv+BN, a per-channel mask LIF(Σ_tokens K ⊙ V), output Q ⊙ mask: no softmax, no QKᵀ,
  O(N·C)), MS_MLP (Conv1d, BatchNorm1d), the decoder with LC / FE / PA, the early auxiliary head
  through the shared classifier, the output averaged over T;
- the modules the official model builds but never calls (SDSA2, SDSA3 in every MS_Block; two
  depthwise 3x3 convs per SCB; PA1, PA2; the BN-LIF of every downsampling block; the BN of every
  upsampling block) are kept when `keep_unused=True`, so the full width reproduces the logged
  parameter counts (413,508 for 6 classes, 413,588 for 11). `keep_unused=False` drops them;
- the ANN twin is the official non-spiking mode of `LIFAct` (ReLU in place of every LIF).

Ours [ours] / [inferred]:
- width and depth are configurable (`base` = 32 and blocks (3, 3, 3) / 2 STBs is the official
  network: stem 32, stages 64 / 128 / 32, transformer dim 32, decoder 16);
- T > 1 repeats the voxel grid at every time step (direct encoding); the official T is 1;
- the spiking baseline (`snn-baseline`) is the same spiking encoder–decoder without STBs, trained
  the same way: the ablation that isolates the transformer, not one of the paper's SOTA SNNs;
- SDSA's head split is a reshape that the per-channel mask makes irrelevant (the column sum
  and the mask are per channel); `heads` is kept for validation and the parameter layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer
from torch import nn

from methods.config_dict import ConfigDict
from methods.errors import ConfigError
from methods.registry import Registry, config_from_dict

NEURONS = ("lif", "relu")


@dataclass(frozen=True)
class SLTNetConfig(ConfigDict):
    """One SLTNet-family network; defaults are the official full-width SLTNet for DDD17."""

    version: int = 1
    n_classes: int = 6
    in_channels: int = 5
    base: int = 32
    blocks: tuple[int, int, int] = (3, 3, 3)
    stb_blocks: int = 2
    heads: int = 2
    mlp_ratio: int = 4
    neuron: str = "lif"
    time_steps: int = 1
    v_threshold: float = 1.0
    decay: float = 0.25
    surrogate_temp: float = 3.0
    keep_unused: bool = True

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"SLTNetConfig version must be 1; received {self.version}.")
        if self.neuron not in NEURONS:
            raise ConfigError(f"neuron must be one of {NEURONS}; received {self.neuron!r}.")
        if self.n_classes < 2 or self.in_channels < 1:
            raise ConfigError(f"Need n_classes >= 2 and in_channels >= 1; received {self.n_classes}, "
                              f"{self.in_channels}.")
        if self.base < 4 or self.base % 4:
            raise ConfigError(f"base width must be a multiple of 4 and >= 4 (decoder = base/2, halved "
                              f"again inside blocks); received {self.base}.")
        if len(tuple(self.blocks)) != 3 or min(self.blocks) < 0:
            raise ConfigError(f"blocks must be three counts >= 0 (encoder stages); received {self.blocks}.")
        if self.base % self.heads:
            raise ConfigError(f"heads={self.heads} must divide the transformer dim {self.base}.")
        for name in ("stb_blocks", "mlp_ratio", "time_steps"):
            if getattr(self, name) < (0 if name == "stb_blocks" else 1):
                raise ConfigError(f"SLTNetConfig.{name} must be positive; received {getattr(self, name)}.")
        if not (self.v_threshold > 0 and 0 <= self.decay <= 1 and self.surrogate_temp > 0):
            raise ConfigError(f"Need v_threshold > 0, 0 <= decay <= 1, surrogate_temp > 0; received "
                              f"{self.v_threshold}, {self.decay}, {self.surrogate_temp}.")


def spike(v: torch.Tensor, temp: float = 3.0) -> torch.Tensor:
    """Heaviside(v - 0.5) forward; the official tanh-shaped ramp on clamp(v, 0, 1) backward."""
    hard = (v > 0.5).to(v.dtype)
    half = torch.tanh(torch.tensor(temp * 0.5, dtype=v.dtype))
    ramp = (torch.tanh(temp * (torch.clamp(v, 0, 1) - 0.5)) + half) / (2 * half)
    return (hard - ramp).detach() + ramp


class LIF(nn.Module):
    """The official `LIFAct` over the leading time axis of [T, ...] (state reset per call)."""

    def __init__(self, v_threshold: float = 1.0, decay: float = 0.25, temp: float = 3.0) -> None:
        super().__init__()
        self.v_threshold, self.decay, self.temp = v_threshold, decay, temp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.zeros_like(x[0])
        out = []
        for step in range(x.shape[0]):
            u = u * self.decay + x[step]
            s = spike(u / self.v_threshold, self.temp)
            u = u * (1 - s)
            out.append(s)
        return torch.stack(out)


def _act(cfg: SLTNetConfig) -> nn.Module:
    if cfg.neuron == "relu":
        return nn.ReLU()
    return LIF(cfg.v_threshold, cfg.decay, cfg.surrogate_temp)


class BNAct(nn.Sequential):
    """BatchNorm (eps 1e-3, as the official BNLIF) followed by the network's neuron."""

    def __init__(self, cfg: SLTNetConfig, c: int) -> None:
        super().__init__(layer.BatchNorm2d(c, eps=1e-3), _act(cfg))


def conv(cfg: SLTNetConfig, c_in: int, c_out: int, k: Any, stride: int = 1, padding: Any = 0,
         dilation: Any = 1, groups: int = 1, act: bool = False, bias: bool = False) -> nn.Module:
    """The official `Spike_Conv`: a bias-free conv, optionally followed by BN + neuron."""
    c = layer.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     bias=bias)
    return nn.Sequential(c, BNAct(cfg, c_out)) if act else c


def _tb(fn: Any, x: torch.Tensor) -> torch.Tensor:
    """Apply a [N, ...] function to [T, B, ...] by folding T into the batch."""
    t, b = x.shape[:2]
    y = fn(x.flatten(0, 1))
    return y.reshape(t, b, *y.shape[1:])


class Resize(nn.Module):
    """Bilinear resize of [T, B, C, H, W] (align_corners False, as the official BasicInterpolate)."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        self.float_ops = x.shape[0] * x.shape[1] * x.shape[2] * size[0] * size[1] * 4  # 4 taps per output
        return _tb(lambda z: F.interpolate(z, size=size, mode="bilinear", align_corners=False), x)


class ECA(nn.Module):
    """Efficient channel attention: GAP, Conv1d(k=3) across channels, sigmoid, multiply (float ops)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = layer.AdaptiveAvgPool2d(1)
        self.conv = layer.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x)  # [T, B, C, 1, 1]
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        self.float_ops = x.numel() * 2  # the pooling adds and the gate multiplies
        return x * torch.sigmoid(y)


class SCB(nn.Module):
    """Spike-driven convolution block (`Spike_LMSBModule`): output is a membrane-level sum."""

    def __init__(self, cfg: SLTNetConfig, c: int, d: int = 1) -> None:
        super().__init__()
        h = c // 2
        self.bn_act_in = BNAct(cfg, c)
        self.conv1x1_in = conv(cfg, c, h, 1)
        self.conv3x1 = conv(cfg, h, h, (3, 1), padding=(1, 0), act=True)
        self.conv1x3 = conv(cfg, h, h, (1, 3), padding=(0, 1), act=True)
        self.dconv3x1 = conv(cfg, h, h, (3, 1), padding=(1, 0), groups=h, act=True)
        self.dconv1x3 = conv(cfg, h, h, (1, 3), padding=(0, 1), groups=h, act=True)
        self.eca1 = ECA()
        self.ddconv3x1 = conv(cfg, h, h, (3, 1), padding=(d, 0), dilation=(d, 1), groups=h, act=True)
        self.ddconv1x3 = conv(cfg, h, h, (1, 3), padding=(0, d), dilation=(1, d), groups=h, act=True)
        self.eca2 = ECA()
        self.bn_act_out = BNAct(cfg, h)
        self.conv1x1 = conv(cfg, h, c, 1)
        if cfg.keep_unused:  # built, never called in the official forward
            self.unused = nn.ModuleList([conv(cfg, h, h, 3, padding=1, groups=h, act=True) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x3(self.conv3x1(self.conv1x1_in(self.bn_act_in(x))))
        br1 = self.eca1(self.dconv1x3(self.dconv3x1(y)))
        br2 = self.eca2(self.ddconv1x3(self.ddconv3x1(y)))
        return self.conv1x1(self.bn_act_out(br1 + br2 + y)) + x


class Down(nn.Module):
    """DownSamplingBlock: [conv3x3 s2 (c_out - c_in), maxpool] when c_in < c_out, else conv only."""

    def __init__(self, cfg: SLTNetConfig, c_in: int, c_out: int) -> None:
        super().__init__()
        self.pool = c_in < c_out
        self.conv = conv(cfg, c_in, c_out - c_in if self.pool else c_out, 3, stride=2, padding=1)
        self.max_pool = layer.MaxPool2d(2, stride=2)
        if cfg.keep_unused:
            self.unused = BNAct(cfg, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.cat([y, self.max_pool(x)], dim=2) if self.pool else y


class Up(nn.Module):
    """UpsampleingBlock: ConvTranspose 3x3 s2 (with bias); its BN is built but unused."""

    def __init__(self, cfg: SLTNetConfig, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = layer.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=True)
        if cfg.keep_unused:
            self.unused = layer.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PA(nn.Module):
    """Pixel attention: x · sigmoid(conv1x1(x)) (float gate)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = layer.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.float_ops = x.numel()
        return x * torch.sigmoid(self.conv(x))


class LongConnection(nn.Module):
    def __init__(self, cfg: SLTNetConfig, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv3x1 = conv(cfg, c_in, c_in // 2, (3, 1), padding=(1, 0), act=True)
        self.conv1x3 = conv(cfg, c_in // 2, c_out, (1, 3), padding=(0, 1), act=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x3(self.conv3x1(x))


class FeatureEnhance(nn.Module):
    """Channel gate and spatial gate; x + conv1x1(x·gate_c) + conv1x1(x·gate_s) (one shared conv)."""

    def __init__(self, cfg: SLTNetConfig, c: int, r: int = 2) -> None:
        super().__init__()
        self.pool = layer.AdaptiveAvgPool2d(1)
        self.squeeze = conv(cfg, c, c // r, 1, act=True)
        self.excite = conv(cfg, c // r, c, 1)
        self.spatial = conv(cfg, 2, 1, 3, padding=1)
        self.spatial_bn = layer.BatchNorm2d(1, eps=1e-3)
        self.fuse = conv(cfg, c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = x * torch.sigmoid(self.excite(self.squeeze(self.pool(x))))
        stats = torch.cat([x.mean(dim=2, keepdim=True), x.amax(dim=2, keepdim=True)], dim=2)
        spatial = x * torch.sigmoid(self.spatial_bn(self.spatial(stats)))
        self.float_ops = x.numel() * 5  # pool, channel mean and max, two gate multiplies
        return x + self.fuse(channel) + self.fuse(spatial)


class RepConv(nn.Sequential):
    """1x1 conv -> BN padded with its own bias value -> depthwise 3x3 (no padding) -> 1x1 -> BN."""

    def __init__(self, dim: int) -> None:
        super().__init__(layer.Conv2d(dim, dim, 1, bias=False), BNAndPad(dim),
                         layer.Conv2d(dim, dim, 3, groups=dim, bias=False),
                         layer.Conv2d(dim, dim, 1, bias=False), layer.BatchNorm2d(dim))


class BNAndPad(nn.Module):
    """BatchNorm2d, then a 1-pixel border filled with the BN's output for a zero input [code]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = layer.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        bn = self.bn
        pad = bn.bias.detach() - bn.running_mean * bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        out = pad.view(1, 1, -1, 1, 1).expand(*y.shape[:3], y.shape[3] + 2, y.shape[4] + 2).clone()
        out[..., 1:-1, 1:-1] = y
        return out


def _qkv(dim: int) -> nn.Sequential:
    return nn.Sequential(RepConv(dim), layer.BatchNorm2d(dim))


class SDSA(nn.Module):
    """Spike-driven self-attention (official SDSA1): out = proj(Q ⊙ LIF(Σ_tokens K ⊙ V)).

    `n_keys` = 3 builds q, k, v and proj (SDSA1 / SDSA3's parameter layout), 2 builds q, v and
    proj (SDSA2's); only the 3-key form is ever called.
    """

    def __init__(self, cfg: SLTNetConfig, dim: int, n_keys: int = 3) -> None:
        super().__init__()
        self.head_act = _act(cfg)
        self.q_conv = _qkv(dim)
        if n_keys == 3:
            self.k_conv = _qkv(dim)
        self.v_conv = _qkv(dim)
        self.q_act, self.k_act, self.v_act, self.mask_act = (_act(cfg) for _ in range(4))
        self.proj_conv = _qkv(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_act(x)
        q, k, v = self.q_act(self.q_conv(x)), self.k_act(self.k_conv(x)), self.v_act(self.v_conv(x))
        out, self.mask = mask_attention(q, k, v, self.mask_act)
        self.ac_ops = k.numel()  # N·C masked adds for the column sum; Q ⊙ mask is a selection
        return self.proj_conv(out)


def mask_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   mask_act: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """SDSA's core on [T, B, C, H, W] spikes: mask = act(Σ_tokens K ⊙ V) per channel, out = Q ⊙ mask.

    O(N·C): one column sum over the N = H·W tokens; no softmax and no N x N matrix.
    """
    kv = (k * v).sum(dim=(-2, -1), keepdim=True)  # [T, B, C, 1, 1]: one number per channel
    mask = mask_act(kv)
    return q * mask, mask


class MLP(nn.Module):
    """MS_MLP: act -> Conv1d C->rC + BN1d -> act -> Conv1d rC->C + BN1d, on tokens."""

    def __init__(self, cfg: SLTNetConfig, dim: int) -> None:
        super().__init__()
        hidden = dim * cfg.mlp_ratio
        self.act1, self.act2 = _act(cfg), _act(cfg)
        self.fc1 = nn.Sequential(layer.Conv1d(dim, hidden, 1), layer.BatchNorm1d(hidden))
        self.fc2 = nn.Sequential(layer.Conv1d(hidden, dim, 1), layer.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self.fc2(self.act2(self.fc1(self.act1(x.flatten(3)))))
        return y.reshape(shape)


class STB(nn.Module):
    """Spike-driven transformer block (`MS_Block`): x + SDSA(x), then + MLP."""

    def __init__(self, cfg: SLTNetConfig, dim: int) -> None:
        super().__init__()
        if cfg.keep_unused:
            self.attn3 = SDSA(cfg, dim, 3)
        self.attn1 = SDSA(cfg, dim, 3)
        if cfg.keep_unused:
            self.attn2 = SDSA(cfg, dim, 2)
        self.mlp = MLP(cfg, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(x)
        return x + self.mlp(x)


class SLTNet(nn.Module):
    """[B, in_channels, H, W] voxel grid -> (logits [B, classes, H, W], early logits) in training,
    logits only in eval mode (`return_aux` forces both)."""

    def __init__(self, cfg: SLTNetConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or SLTNetConfig()
        self.cfg = cfg
        self.time_steps = cfg.time_steps  # may be changed after loading weights (T is weight-free)
        b = cfg.base
        c1, c2, c3, dec = 2 * b, 4 * b, b, b // 2
        self.stem = nn.Sequential(conv(cfg, cfg.in_channels, b, 3, padding=1, act=True),
                                  conv(cfg, b, b, 3, padding=1, act=True),
                                  conv(cfg, b, b, 3, stride=2, padding=1))
        self.bn_act0 = BNAct(cfg, b)
        dil = [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
        self.down1, self.stage1, self.bn_act1 = Down(cfg, b, c1), self._stage(cfg, c1, [2] * 12, 0), \
            BNAct(cfg, c1)
        self.down2, self.stage2, self.bn_act2 = Down(cfg, c1, c2), self._stage(cfg, c2, dil, 1), \
            BNAct(cfg, c2)
        self.down3, self.stage3, self.bn_act3 = Down(cfg, c2, c3), self._stage(cfg, c3, dil, 2), \
            BNAct(cfg, c3)
        self.stbs = nn.Sequential(*[STB(cfg, c3) for _ in range(cfg.stb_blocks)])
        self.dec3, self.up1, self.bn_act5 = SCB(cfg, c3, 2), Up(cfg, c3, dec), BNAct(cfg, dec)
        self.dec2, self.up2, self.bn_act6 = SCB(cfg, dec, 2), Up(cfg, dec, dec), BNAct(cfg, dec)
        self.dec1, self.up3 = SCB(cfg, dec, 2), Up(cfg, dec, dec)
        self.pa = PA(dec)
        if cfg.keep_unused:
            self.unused_pa = nn.ModuleList([PA(dec), PA(dec)])
        self.bn_act7 = BNAct(cfg, dec)
        self.lc1, self.lc2, self.lc3 = (LongConnection(cfg, c1, dec), LongConnection(cfg, c2, dec),
                                        LongConnection(cfg, c3, c3))
        self.fe1, self.fe2, self.fe3 = (FeatureEnhance(cfg, dec), FeatureEnhance(cfg, dec),
                                        FeatureEnhance(cfg, c3))
        self.classifier = conv(cfg, dec, cfg.n_classes, 1)
        self.resize_mid, self.resize_early, self.resize_out = Resize(), Resize(), Resize()
        self.apply(_trunc_init)
        functional.set_step_mode(self, "m")

    def _stage(self, cfg: SLTNetConfig, c: int, dilations: list[int], index: int) -> nn.Sequential:
        return nn.Sequential(*[SCB(cfg, c, dilations[i]) for i in range(cfg.blocks[index])])

    def forward(self, x: torch.Tensor, return_aux: bool | None = None) -> Any:
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ConfigError(f"SLTNet expects [B, {self.cfg.in_channels}, H, W] voxel grids; received "
                              f"shape {tuple(x.shape)}. Build the input with bins={self.cfg.in_channels}.")
        size = (x.shape[-2], x.shape[-1])
        seq = x.unsqueeze(0).expand(int(self.time_steps), *x.shape)
        out0 = self.bn_act0(self.stem(seq))
        out1 = self.bn_act1(self.stage1(self.down1(out0)))
        out2 = self.bn_act2(self.stage2(self.down2(out1)))
        out3 = self.bn_act3(self.stage3(self.down3(out2)))
        y = self.dec3(self.stbs(out3))
        y = self.bn_act5(self.up1(y + self.fe3(self.lc3(out3))))
        y = self.dec2(y)
        skip2 = self.fe2(self.lc2(out2))
        y = self.bn_act6(self.up2(self.resize_mid(y, skip2.shape[-2:]) + skip2))
        early = self.classifier(self.resize_early(y, size)).mean(dim=0)
        y = self.pa(self.up3(self.dec1(y) + self.fe1(self.lc1(out1))))
        out = self.classifier(self.bn_act7(self.resize_out(y, size))).mean(dim=0)
        want_aux = self.training if return_aux is None else return_aux
        return (out, early) if want_aux else out


def _trunc_init(m: nn.Module) -> None:
    """The official init: truncated-normal (std 0.02) Conv2d weights, zero biases, BN at (1, 0)."""
    if isinstance(m, nn.Conv2d):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class ANNTwinConfig(SLTNetConfig):
    """SLTNet with ReLU in place of every LIF (the official non-spiking mode), all else equal."""

    neuron: str = "relu"


@dataclass(frozen=True)
class SpikingBaselineConfig(SLTNetConfig):
    """The same spiking encoder–decoder without spike-driven transformer blocks."""

    stb_blocks: int = 0


@dataclass(frozen=True)
class SegModel:
    """A registered segmentation network: its config class and `create(**config) -> nn.Module`."""

    name: str
    config_cls: type
    description: str = ""
    family: ClassVar[str] = "sltnet"

    def create(self, **config: Any) -> nn.Module:
        return SLTNet(config_from_dict(self.config_cls, config))


SEG_MODELS: Registry[SegModel] = Registry("segmentation model", SegModel)
for _entry in (SegModel("sltnet", SLTNetConfig, "SLTNet (official layout), LIF neurons, 2 STBs"),
               SegModel("sltnet-ann", ANNTwinConfig, "ANN twin: ReLU in place of LIF"),
               SegModel("snn-baseline", SpikingBaselineConfig, "spiking encoder-decoder without STBs")):
    SEG_MODELS.register(_entry.name)(_entry)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
