"""Benchmark: a measured INT8 kernel factor for a diffusion U-Net's matmuls, fp32 vs real INT8 kernels
side by side in one run, and the whole-step wall clock of a U-Net whose matmul layers run in INT8.

    python sweeps/bench_int8.py                               # DDPM-CIFAR10 U-Net, CPU, 1 thread
    python sweeps/bench_int8.py --set repeats=9 --set batch=4
    python sweeps/bench_int8.py --device cuda --set inner=50  # on a GPU machine (refused without one)

Why: CacheQuant (Liu et al., arXiv 2503.01323) reports 5.18x on Stable Diffusion as caching x real INT8
GPU kernels; the MAC and BOP figures of bench_cachequant count no kernel at all. This bench measures
the kernel factor that may multiply a MAC speed-up: t_fp32 / t_int8 over the U-Net's own GEMM shapes.

What is timed (each layer's GEMM shape, captured by hooks on one forward of the U-Net):
* `fp32`: `F.linear(A, W)` (A: M x K activations, W: N x K), the fp32 reference; `fp32_b` is the same
  call timed again as an A/A control (its spread is the noise floor printed next to every ratio).
* `int_mm`: `torch._int_mm(A_int8, W_int8.t())` -> int32, the bare INT8 GEMM (oneDNN/fbgemm on CPU,
  cuBLASLt on CUDA).
* `w8a8`: a complete dynamic W8A8 layer on `torch._int_mm`: per-tensor activation scale (absmax),
  quantize, INT8 GEMM, dequantize with per-output-channel weight scales, bias [ours].
* `ao_dynamic` (CPU only): `torch.ao.nn.quantized.dynamic.Linear` (fbgemm/x86 engine: dynamic
  per-tensor uint8 activations, int8 weights).
Layer kinds: Linear (time embedding, attention projections) and 1x1 convs (shortcuts) are the
"Linear/1x1-conv-shaped matmuls" of the headline factor; 3x3 convs are also timed as their im2col GEMM
(M = B*H*W, K = 9*C_in), a GEMM-only bound that leaves out the im2col copy [ours]. Attention's
Q.K^T / P.V matmuls are not layers and are not timed. Which kernels run here is probed, never assumed.

Whole step: the U-Net forward in fp32, with every Linear and 1x1 conv replaced by the `w8a8` module
(3x3 convs stay fp32: no INT8 conv kernel is used), and (CPU) with `torch.ao` dynamic quantization of
its Linear layers; the share of the step's MACs that ran in INT8 is printed beside the speed-up.
The U-Net's weights are random (its architecture is the official DDPM CIFAR-10 one, as diffusers'
`google/ddpm-cifar10-32` config): timings do not depend on weight values; the relative output error of
the INT8 U-Net is printed as a check that the INT8 path computes the same function, not as a quality.

Clock: wall clock by default. On a shared CPU a kernel that finishes within one scheduler slice is
preempted less often than a long one, so under load the wall clock favours the shorter (INT8) call
beyond what the A/A control shows; `clock=cpu` times the thread's own CPU time instead (threads=1),
and the 1-minute load average at the start and end is in the summary [ours].

Statistics: `repeats` replicates; in each, every kernel is timed after `warmup` calls as the fastest
of `inner` calls (CPU) or the mean of `inner` back-to-back calls (CUDA), kernels interleaved in a
rotating order; ratios are per replicate, reported as their median with a percentile-bootstrap 95 %
CI over replicates (methods/metrics/stats.py) [ours]. The kernel factor of the U-Net is
sum_l t_fp32(l) / sum_l t_int8(l) over its layers, per replicate. The summary ends with
`int8_speedup=<headline factor> kernel=<its kernel>`: the best *complete* INT8 layer (`w8a8` or
`ao_dynamic`, activation quantization included) over the Linear/1x1 layers; `int8_kernel_only` is the
bare `_int_mm` GEMM, the bound for a kernel with quantization fused into the previous op [ours].
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands
from methods.errors import ConfigError
from methods.metrics.macs import count_macs
from methods.metrics.stats import Estimate, bootstrap_ci, noise_floor

UNETS = ("ddpm-cifar10", "tiny")
DEVICES = ("cpu", "cuda")
KERNELS = ("int_mm", "w8a8", "ao_dynamic")
HEADLINE_KINDS = ("linear", "conv1x1")


@dataclass(frozen=True)
class Int8BenchConfig:
    unet: str = "ddpm-cifar10"  # 'ddpm-cifar10' (the official DDPM CIFAR-10 architecture) or 'tiny'
    batch: int = 1  # images per U-Net call (GEMM M = batch * H * W for convs)
    device: str = "cpu"  # 'cpu' or 'cuda' (refused where no CUDA device is visible)
    repeats: int = 5  # timed replicates (CIs over them; >= 3)
    inner: int = 3  # calls per GEMM timing
    step_inner: int = 2  # calls per whole-step timing
    warmup: int = 1  # untimed calls before each timing
    threads: int = 1  # torch CPU threads
    clock: str = "wall"  # 'wall' (perf_counter) or 'cpu' (this thread's CPU time; CPU, threads=1 only)
    conv3x3: bool = True  # also time 3x3 convs as im2col GEMMs (a GEMM-only bound)
    whole_step: bool = True  # time the whole U-Net step fp32 vs INT8
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.unet not in UNETS:
            raise ConfigError(f"unet must be one of {UNETS}, got {self.unet!r}.")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}.")
        for name, low in (("batch", 1), ("repeats", 3), ("inner", 1), ("step_inner", 1), ("warmup", 0),
                          ("threads", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {v!r}"
                                  + (" (a CI needs at least 3 replicates)." if name == "repeats" else "."))
        if self.clock not in ("wall", "cpu"):
            raise ConfigError(f"clock must be 'wall' or 'cpu', got {self.clock!r}.")
        if self.clock == "cpu" and (self.device != "cpu" or self.threads != 1):
            raise ConfigError("clock='cpu' times this thread's CPU time: it needs device='cpu' and "
                              "threads=1, "
                              f"got device={self.device!r}, threads={self.threads}; use clock='wall'.")
        if self.version != 1:
            raise ConfigError(f"Int8BenchConfig version {self.version} is unknown; this code reads 1.")


# --------------------------------------------------------------------------------------- the U-Net
def build_unet(name: str) -> nn.Module:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    if name == "tiny":
        return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                           block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()
    # diffusers' google/ddpm-cifar10-32 configuration (Ho et al. 2020, 35.7 M parameters)
    return UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(128, 256, 256, 256), attention_head_dim=None, norm_eps=1e-6,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                       downsample_padding=0, flip_sin_to_cos=False, freq_shift=1).eval()


def gemm_layers(unet: nn.Module, x: torch.Tensor, t: int) -> list[dict[str, Any]]:
    """Every Linear / Conv2d of one forward, with the GEMM shape (M, K, N) it computes."""
    rows: list[dict[str, Any]] = []
    names = {m: n for n, m in unet.named_modules()}

    def hook(m, args, out):
        a = args[0]
        if isinstance(m, nn.Linear):
            kind, mm, k = "linear", a.numel() // m.in_features, m.in_features
        elif m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1:
            kind, mm, k = "conv1x1", out.shape[0] * out.shape[2] * out.shape[3], m.in_channels
        elif m.groups == 1:
            kh, kw = m.kernel_size
            kind, k = f"conv{kh}x{kw}", m.in_channels * kh * kw
            mm = out.shape[0] * out.shape[2] * out.shape[3]
        else:
            return
        rows.append({"layer": names[m], "kind": kind, "M": int(mm), "K": int(k), "N": int(out.shape[-1]
                     if isinstance(m, nn.Linear) else m.out_channels)})

    hs = [m.register_forward_hook(hook) for m in unet.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    try:
        with torch.no_grad():
            unet(x, t)
    finally:
        for h in hs:
            h.remove()
    return rows


class Int8Matmul(nn.Module):
    """Dynamic W8A8 Linear / 1x1 conv on `torch._int_mm` [ours]: symmetric int8 weights per output
    channel, a per-tensor symmetric activation scale computed at every call, int32 accumulation."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1).float()
        sw = w.abs().amax(1).clamp_min(1e-12) / 127.0
        self.register_buffer("wq", torch.round(w / sw[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("sw", sw)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), False)
        self.conv = isinstance(layer, nn.Conv2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:
            b, c, h, w = x.shape
            a = x.permute(0, 2, 3, 1).reshape(-1, c)
        else:
            a = x.reshape(-1, x.shape[-1])
        y = w8a8_matmul(a, self.wq, self.sw, self.bias)
        if self.conv:
            return y.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return y.reshape(*x.shape[:-1], -1)


def w8a8_matmul(a: torch.Tensor, wq: torch.Tensor, sw: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """y = dequant(int8(a) @ wq^T) + bias: per-tensor activation scale, per-row weight scales `sw`."""
    m = a.shape[0]
    if a.is_cuda and m <= 16:  # cuBLASLt int8 needs M > 16: pad (the padding is timed too)
        a = torch.cat([a, a.new_zeros(17 - m, a.shape[1])])
    sa = a.abs().amax().clamp_min(1e-12) / 127.0
    aq = (a * (1.0 / sa)).round_().clamp_(-127, 127).to(torch.int8)
    y = torch._int_mm(aq, wq.t())[:m].float().mul_(sa * sw)
    return y if bias is None else y.add_(bias)


def quantize_int8(unet: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of `unet` with every Linear and 1x1 conv replaced by `Int8Matmul`; returns the names."""
    q = copy.deepcopy(unet)
    done = []
    for name, m in list(q.named_modules()):
        one = isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1 \
            and m.padding in ((0, 0), 0)
        if isinstance(m, nn.Linear) or one:
            parent, _, attr = name.rpartition(".")
            setattr(q.get_submodule(parent) if parent else q, attr, Int8Matmul(m))
            done.append(name)
    return q, done


# --------------------------------------------------------------------------------------- kernels
def _kernels(shape: tuple[int, int, int], device: str, gen: torch.Generator) -> dict[str, Any]:
    """Callables for one (M, K, N) GEMM: fp32, fp32_b (A/A control) and the INT8 kernels."""
    m, k, n = shape
    a = torch.randn(m, k, generator=gen).to(device)
    w = (torch.randn(n, k, generator=gen) / k ** 0.5).to(device)
    bias = torch.zeros(n, device=device)
    sw = w.abs().amax(1) / 127.0
    wq = torch.round(w / sw[:, None]).clamp(-127, 127).to(torch.int8)
    aq = torch.round(a / (a.abs().amax() / 127.0)).clamp(-127, 127).to(torch.int8)
    if device == "cuda" and m <= 16:
        aq = torch.cat([aq, aq.new_zeros(17 - m, k)])
    fns: dict[str, Any] = {"fp32": lambda: F.linear(a, w, bias), "fp32_b": lambda: F.linear(a, w, bias),
                           "int_mm": lambda: torch._int_mm(aq, wq.t()),
                           "w8a8": lambda: w8a8_matmul(a, wq, sw, bias)}
    if device == "cpu":
        lin = _ao_linear(w, bias)
        if lin is not None:
            fns["ao_dynamic"] = lambda: lin(a)
    return fns


def _ao_linear(w: torch.Tensor, bias: torch.Tensor) -> Any:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.nn.quantized.dynamic import Linear as DynLinear

            lin = nn.Linear(w.shape[1], w.shape[0])
            lin.weight.data.copy_(w)
            lin.bias.data.copy_(bias)
            lin.qconfig = torch.ao.quantization.default_dynamic_qconfig
            return DynLinear.from_float(lin)
    except Exception:  # noqa: BLE001 - an unavailable backend is reported by the probe
        return None


def probe(device: str) -> dict[str, str]:
    """Which INT8 kernels run here: 'ok' or the error, from one small call each (with a result check)."""
    gen = torch.Generator().manual_seed(0)
    fns = _kernels((32, 64, 32), device, gen)
    ref = fns["fp32"]()
    out = {}
    for k in KERNELS:
        if k not in fns:
            out[k] = "not on " + device if k == "ao_dynamic" and device != "cpu" else "backend unavailable"
            continue
        try:
            y = fns[k]()
            if k != "int_mm":
                err = float((y.float() - ref).norm() / ref.norm())
                if not err < 0.05:
                    raise RuntimeError(f"relative error {err:.3g} vs fp32")
            out[k] = "ok"
        except Exception as e:  # noqa: BLE001 - reported, never assumed
            out[k] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return out


def _timer(device: str, inner: int, warmup: int, clock: str = "wall"):
    """CPU: the fastest of `inner` individually timed calls (timeit's advice: the least disturbed one,
    which matters on a shared machine); CUDA: the mean of `inner` back-to-back calls between two
    synchronisations (a sync per call would add its own latency to microsecond kernels) [ours]."""
    if device == "cuda":
        def run_cuda(fn) -> float:
            for _ in range(warmup):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            torch.cuda.synchronize()
            return (time.perf_counter() - t0) / inner
        return run_cuda

    now = time.thread_time if clock == "cpu" else time.perf_counter

    def run_cpu(fn) -> float:
        for _ in range(warmup):
            fn()
        best = float("inf")
        for _ in range(inner):
            t0 = now()
            fn()
            best = min(best, now() - t0)
        return best
    return run_cpu


def _ratio_ci(num: np.ndarray, den: np.ndarray, seed: int) -> Estimate:
    """Median over replicates of the per-replicate ratio, percentile-bootstrap CI (robust to the
    replicate a neighbour's job disturbed) [ours]."""
    return bootstrap_ci(num / den, np.median, seed=seed)


def _fmt(e: Estimate) -> str:
    return f"{e.value:.3g} [{e.lo:.3g}, {e.hi:.3g}]"


# --------------------------------------------------------------------------------------- body
def body(run: BenchRun) -> dict[str, Any]:
    cfg: Int8BenchConfig = run.config
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda needs a CUDA GPU, but torch.cuda.is_available() is False on this "
                          f"machine (torch {torch.__version__}); run it on a GPU machine or use "
                          "--device cpu.")
    torch.set_num_threads(cfg.threads)
    dev = cfg.device
    unet = build_unet(cfg.unet).to(dev)
    size = unet.config.sample_size
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch, unet.config.in_channels, size, size, generator=gen)
    x, t = x.to(dev), 500
    avail = probe(dev)
    kernels = [k for k in KERNELS if avail[k] == "ok"]
    env = {"device": dev, "torch": torch.__version__, "threads": cfg.threads, "clock": cfg.clock,
           "seed": cfg.seed,
           "unet": cfg.unet, "batch": cfg.batch, "gpu": torch.cuda.get_device_name() if dev == "cuda" else ""}
    run.table("kernels", [{"kernel": k, "status": avail[k], **env} for k in KERNELS],
              "INT8 kernels probed on this machine")
    if not kernels:
        raise ConfigError(f"no INT8 kernel runs on {dev} here ({avail}); nothing to compare.")

    kinds_timed = (*HEADLINE_KINDS, "conv3x3") if cfg.conv3x3 else HEADLINE_KINDS
    layers = [r for r in gemm_layers(unet, x, t) if r["kind"] in kinds_timed]
    shapes = sorted({(r["M"], r["K"], r["N"]) for r in layers})
    fns = {s: _kernels(s, dev, gen) for s in shapes}
    timer = _timer(dev, cfg.inner, cfg.warmup, cfg.clock)
    load0 = os.getloadavg()[0]
    names = ["fp32", "fp32_b", *kernels]
    times = {s: {k: np.zeros(cfg.repeats) for k in names} for s in shapes}
    rng = np.random.default_rng(cfg.seed)
    with torch.no_grad():
        for r in range(cfg.repeats):
            for s in rng.permutation(len(shapes)):
                shape = shapes[s]
                order = names[r % len(names):] + names[: r % len(names)]  # rotate who runs first
                for k in order:
                    times[shape][k][r] = timer(fns[shape][k])

    macs_total = sum(r["M"] * r["K"] * r["N"] for r in layers)
    per_shape = []
    for shape in shapes:
        ls = [r for r in layers if (r["M"], r["K"], r["N"]) == shape]
        row = {"M": shape[0], "K": shape[1], "N": shape[2], "kind": "/".join(sorted({r["kind"] for r in ls})),
               "layers": len(ls), "mac_share": round(len(ls) * np.prod(shape) / macs_total, 4),
               "fp32_ms": float(np.median(times[shape]["fp32"]) * 1e3),
               "aa_ratio": _fmt(_ratio_ci(times[shape]["fp32"], times[shape]["fp32_b"], cfg.seed))}
        for k in kernels:
            row[f"{k}_x"] = _fmt(_ratio_ci(times[shape]["fp32"], times[shape][k], cfg.seed))
        per_shape.append({**row, **env})
    run.table("shapes", per_shape,
              "fp32 / INT8 time per GEMM shape of the U-Net (median fp32 ms; ratio [95% CI])")

    def total(kinds: tuple[str, ...], k: str) -> np.ndarray:
        """Per replicate: the time of every layer of these kinds with kernel k, summed over the U-Net."""
        return sum(times[(r["M"], r["K"], r["N"])][k] for r in layers if r["kind"] in kinds)

    groups = [("linear+1x1", HEADLINE_KINDS)] + ([("all GEMMs (3x3 as im2col)", (*HEADLINE_KINDS, "conv3x3"))]
                                                  if cfg.conv3x3 else [])
    agg, est = [], {}
    for label, kinds in groups:
        aa = total(kinds, "fp32") / total(kinds, "fp32_b")  # the A/A control
        floor = noise_floor(aa - 1.0)
        share = sum(r["M"] * r["K"] * r["N"] for r in layers if r["kind"] in kinds) / macs_total
        for k in kernels:
            e = _ratio_ci(total(kinds, "fp32"), total(kinds, k), cfg.seed)
            est[(label, k)] = (e, floor)
            agg.append({"layers": label, "kernel": k, "factor": e.value, "lo": e.lo, "hi": e.hi,
                        "aa_noise_floor": floor.hi, "mac_share": round(share, 4), "n": e.n, **env})
    run.table("factor", agg,
              "U-Net kernel factor sum t_fp32 / sum t_int8 (95% CI over replicates; A/A floor)")

    # the headline is a complete INT8 layer (activation quantization included), the best of those that
    # run here; the bare GEMM (`int_mm`) is reported beside it as an upper bound for fused kernels
    layer_k = [k for k in kernels if k != "int_mm"] or kernels
    head_k = max(layer_k, key=lambda k: est[("linear+1x1", k)][0].value)
    head, floor = est[("linear+1x1", head_k)]
    out: dict[str, Any] = {}
    if "int_mm" in kernels:
        bare = est[("linear+1x1", "int_mm")][0]
        out.update(int8_kernel_only=f"{bare.value:.3f}", int8_kernel_only_lo=f"{bare.lo:.3f}",
                   int8_kernel_only_hi=f"{bare.hi:.3f}")
    gain = Estimate(head.value - 1, head.lo - 1, head.hi - 1, head.n, head.level, head.method)
    out.update(run.claim("int8_gain", gain, floor, f"{head_k} on the U-Net's Linear/1x1 GEMMs, {dev}"))
    if cfg.whole_step:
        step_timer = _timer(dev, cfg.step_inner, cfg.warmup, cfg.clock)
        out.update(_whole_step(run, cfg, unet, x, t, step_timer, avail, env))
    out.update(loadavg_start=f"{load0:.2f}", loadavg_end=f"{os.getloadavg()[0]:.2f}", clock=cfg.clock)
    out.update(int8_speedup=f"{head.value:.3f}", int8_speedup_lo=f"{head.lo:.3f}",
               int8_speedup_hi=f"{head.hi:.3f}", device=dev, kernel=head_k)
    return out


def _whole_step(run, cfg, unet, x, t, timer, avail, env) -> dict[str, Any]:
    variants: dict[str, nn.Module] = {"fp32": unet, "fp32_b": copy.deepcopy(unet)}
    covered: dict[str, list[str]] = {}
    if avail["int_mm"] == "ok" and avail["w8a8"] == "ok":
        variants["w8a8_int_mm"], covered["w8a8_int_mm"] = quantize_int8(unet)
    if avail["ao_dynamic"] == "ok":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(unet), {nn.Linear}, dtype=torch.qint8)
        variants["ao_dynamic_linear"] = q
        covered["ao_dynamic_linear"] = [n for n, m in unet.named_modules() if isinstance(m, nn.Linear)]
    if len(variants) == 2:
        return {}
    names = list(variants)
    times = {k: np.zeros(cfg.repeats) for k in names}
    with torch.no_grad():
        ref = unet(x, t).sample
        errs = {k: float((m(x, t).sample - ref).norm() / ref.norm()) for k, m in variants.items()}
        for r in range(cfg.repeats):
            for k in names[r % len(names):] + names[: r % len(names)]:
                times[k][r] = timer(lambda m=variants[k]: m(x, t))
    by_module = count_macs(unet, (x[:1], t)).leaf_modules()
    total = sum(by_module.values())
    rows = []
    floor = noise_floor(times["fp32"] / times["fp32_b"] - 1.0)
    out: dict[str, Any] = {}
    for k in names[1:]:
        e = _ratio_ci(times["fp32"], times[k], cfg.seed)
        share = sum(v for n, v in by_module.items() if n in covered.get(k, ())) / total
        rows.append({"variant": k, "step_ms": float(np.median(times[k]) * 1e3), "speedup": e.value,
                     "lo": e.lo, "hi": e.hi, "int8_mac_share": round(share, 4), "rel_err_vs_fp32": errs[k],
                     "aa_noise_floor": floor.hi, **env})
        if k != "fp32_b":
            out[f"step_speedup_{k}"] = f"{e.value:.3f}"
            out[f"step_speedup_{k}_lo"] = f"{e.lo:.3f}"
            out[f"step_speedup_{k}_hi"] = f"{e.hi:.3f}"
    fp_ms = float(np.median(times["fp32"]) * 1e3)
    run.table("whole_step", rows, f"whole U-Net step vs fp32 ({fp_ms:.3g} ms median; speed-up [95% CI])")
    return out


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv,
        bench="bench_int8",
        description=__doc__.splitlines()[0],
        config_cls=Int8BenchConfig,
        body=body,
        **shorthands(Shorthand("--device", "device", str, "cpu or cuda"),
                     Shorthand("--repeats", "repeats", int, "timed replicates")),
    )


if __name__ == "__main__":
    sys.exit(main())
