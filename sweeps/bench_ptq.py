"""Benchmark: every registered PTQ method on the zoo's digit classifiers (pure Python, no Ray).

    python sweeps/bench_ptq.py                       # both models, w4a4 and w2a4, 3 seeds
    python sweeps/bench_ptq.py --models cnn-bn-digits --bits w4a4 --seeds 1 --iters 20

For each zoo model (`cnn-bn-digits`, `vit-digits`), bit setting and method: quantize a copy with
`methods.ptq.PTQ_METHODS`, calibrate on `--calib` training images drawn per seed, and measure top-1
on the whole test split; mean ± std over `--seeds` seeds, plus calibration seconds (quantize +
calibrate + reconstruct). Reconstruction methods run `--iters` iterations per unit, batch 32, with
the AdaRound lr raised to `--weight-lr` 1e-2 (the papers use 20 000 iterations at 1e-3 on ImageNet;
at 100 iterations and 1e-3 V barely moves from nearest rounding — measured on cnn-bn-digits W2A4:
QDrop 0.66 at lr 1e-3 vs 0.96 at 1e-2). This is a tiny-scale check of direction, not of magnitude.
First/last layer at 8 bits for every method. Expected direction (reference/quant.md § 6.4, § 7):
reconstruction > min-max at low bits, MGRQ >= BRECQ/QDrop; the table reports what is measured.

If a zoo model's committed weights are missing, a stand-in with the zoo architecture is trained here
(`--standin-steps`) and the output says so. Writes bench.json, run.json and top1_vs_bits.png into
results/bench_ptq/<run_id>/; the last line is `summary: key=value ...`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/bench_ptq.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

from actors.calibration_worker import PTQ_BITS
from cluster.rundir import create_run_dir, environment_record, resolve_results_root, write_run_json
from methods.ptq import PTQ_METHODS
from methods.quant.bits import BitsError, canonical_bits_list, parse_bits
from sims.data.digits import load_digits_split

IMAGE_SIZE = 16
VIT_STANDIN = {
    "img_size": 16,
    "patch_size": 4,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 2,
    "mlp_ratio": 2.0,
}


def parse_override(text: str, config_cls: type) -> tuple[str, Any]:
    """'key=value' with the value cast to the type of the config field's default."""
    key, _, value = text.partition("=")
    default = config_cls.__dataclass_fields__[key].default if key in config_cls.__dataclass_fields__ else ""
    return key, type(default)(value) if isinstance(default, (int, float)) and not isinstance(
        default, bool
    ) else value


def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return float((pred == y).float().mean())


def train_standin(name: str, steps: int) -> nn.Module:
    """A stand-in with the zoo architecture, trained here (AdamW 2e-3, batch 64, seed 0)."""
    torch.manual_seed(0)
    if name == "vit-digits":
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(**VIT_STANDIN)
    else:
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate((16, 32, 64)):
            layers += [
                nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(),
            ]
            c_in = c
        model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10))
    x, y = load_digits_split("train", IMAGE_SIZE)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def load_model(name: str, standin_steps: int) -> tuple[nn.Module, str]:
    from methods.errors import CheckpointError, UnknownNameError

    try:
        import sims.zoo.cnn_bn_digits  # noqa: F401  (registers the zoo entries)
        import sims.zoo.vit_digits  # noqa: F401
    except ImportError:
        pass
    from sims.zoo.registry import load_zoo_model

    try:
        return load_zoo_model(name), "zoo weights"
    except (CheckpointError, UnknownNameError):
        return train_standin(name, standin_steps), f"STAND-IN trained here ({standin_steps} steps)"


def bench(args: argparse.Namespace) -> dict[str, Any]:
    x_train, _ = load_digits_split("train", IMAGE_SIZE)
    x_test, y_test = load_digits_split("test", IMAGE_SIZE)
    methods = args.methods.split(",") if args.methods else PTQ_METHODS.names()
    rows, sources, fp_top1 = [], {}, {}
    for model_name in args.models.split(","):
        model, sources[model_name] = load_model(model_name, args.standin_steps)
        fp_top1[model_name] = top1(model, x_test, y_test)
        print(f"{model_name}: {sources[model_name]}, FP top-1 {fp_top1[model_name]:.4f}", flush=True)
        for bits in args.bits.split(","):
            w_bits, a_bits = parse_bits(bits).wa
            for method in methods:
                name, *overrides = method.split(":")  # e.g. mgrq:lambda_global=0:lambda_local=0
                spec = PTQ_METHODS.get(name)
                accs, secs, cpus = [], [], []
                for seed in range(args.seeds):
                    gen = torch.Generator().manual_seed(1000 + seed)
                    calib = x_train[torch.randperm(len(x_train), generator=gen)[: args.calib]]
                    kw: dict[str, Any] = {"w_bits": w_bits, "a_bits": a_bits}
                    if "iters" in spec.config_cls.__dataclass_fields__:
                        kw.update(iters=args.iters, batch_size=32, weight_lr=args.weight_lr)
                        if args.act_lr is not None:
                            kw["act_lr"] = args.act_lr
                    kw.update(parse_override(o, spec.config_cls) for o in overrides)
                    res = spec.run(model, calib, spec.make_config(**kw), seed=seed)
                    accs.append(top1(res.model, x_test, y_test))
                    secs.append(res.report["calib_seconds"])
                    cpus.append(res.report["calib_cpu_seconds"])
                row = {
                    "model": model_name,
                    "bits": bits,
                    "method": method,
                    "top1": accs,
                    "calib_s": secs,
                    "top1_mean": statistics.mean(accs),
                    "top1_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "calib_s_mean": statistics.mean(secs),
                    "calib_cpu_s_mean": statistics.mean(cpus),
                }
                rows.append(row)
                print(
                    f"  {bits:5s} {method:10s} top1 {row['top1_mean']:.4f} ± {row['top1_std']:.4f}  "
                    f"calib {row['calib_s_mean']:.1f}s wall / {row['calib_cpu_s_mean']:.1f}s cpu",
                    flush=True,
                )
    return {"rows": rows, "sources": sources, "fp_top1": fp_top1}


def table(res: dict[str, Any]) -> str:
    lines = [
        "| model | bits | method | top-1 (mean ± std) | calib s (wall) | calib s (cpu) |",
        "|---|---|---|---|---|---|",
    ]
    for m, acc in res["fp_top1"].items():
        lines.append(f"| {m} | FP32 | — | {acc:.4f} | — | — |")
    for r in res["rows"]:
        lines.append(
            f"| {r['model']} | {r['bits']} | {r['method']} | {r['top1_mean']:.4f} ± {r['top1_std']:.4f} "
            f"| {r['calib_s_mean']:.1f} | {r.get('calib_cpu_s_mean', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    from methods.plotting import new_figure, save_figure

    models = list(res["fp_top1"])
    fig, axes = new_figure(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        rows = [r for r in res["rows"] if r["model"] == m]
        bits = sorted({r["bits"] for r in rows})
        methods = sorted({r["method"] for r in rows})
        width = 0.8 / max(len(bits), 1)
        for i, b in enumerate(bits):
            vals = [next(r for r in rows if r["bits"] == b and r["method"] == me) for me in methods]
            ax.bar(
                [j + i * width for j in range(len(methods))],
                [v["top1_mean"] for v in vals],
                width,
                yerr=[v["top1_std"] for v in vals],
                label=b,
            )
        ax.axhline(res["fp_top1"][m], color="k", ls="--", lw=1, label="FP32")
        ax.set_xticks([j + width * (len(bits) - 1) / 2 for j in range(len(methods))], methods, rotation=45)
        ax.set_title(m)
        ax.set_ylabel("test top-1")
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="cnn-bn-digits,vit-digits")
    ap.add_argument("--bits", default="w4a4,w2a4", help="comma-separated quantized bits specs")
    ap.add_argument(
        "--methods",
        default="",
        help="comma-separated subset (default: all registered); 'name:key=value' overrides a config field, "
        "e.g. mgrq:lambda_global=0:lambda_local=0",
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--calib", type=int, default=128, help="calibration images per seed")
    ap.add_argument("--iters", type=int, default=60, help="reconstruction iterations per unit")
    ap.add_argument(
        "--weight-lr",
        type=float,
        default=1e-2,
        help="AdaRound V learning rate (papers: 1e-3 over 20 000 iterations; the short tiny-scale "
        "schedule needs a larger step for V to move)",
    )
    ap.add_argument("--act-lr", type=float, default=None, help="LSQ step lr (default: each method's own)")
    ap.add_argument("--standin-steps", type=int, default=1500)
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    try:  # canonical spelling ('w4a4') in rows and summary keys, whatever was typed
        args.bits = ",".join(canonical_bits_list(args.bits.split(","), **PTQ_BITS))
    except BitsError as e:
        ap.error(str(e))
    torch.set_num_threads(1)
    from methods.quant.api import _timm_attention_cls

    _timm_attention_cls()  # import timm once, outside the timed calibration of the first method
    root = resolve_results_root(args.out)
    run_dir = create_run_dir(root.path, "bench_ptq")
    print(f"run_dir: {run_dir} ({root.reason})", flush=True)
    t0 = time.perf_counter()
    res = bench(args)
    res["wall_s"] = time.perf_counter() - t0
    (run_dir / "bench.json").write_text(json.dumps(res, indent=2))
    write_run_json(run_dir, {"sweep": "bench_ptq", "args": vars(args), **environment_record()})
    if not args.no_plot:
        plot(res, run_dir / "top1_vs_bits.png")
    print(table(res))
    parts = [f"wall_s={res['wall_s']:.0f}"]
    short = {"cnn-bn-digits": "cnn", "vit-digits": "vit"}
    for m, acc in res["fp_top1"].items():
        parts.append(f"{short.get(m, m)}.fp={acc:.4f}")
    for r in res["rows"]:
        key = re.sub(
            r"[^A-Za-z0-9_.+-]", "_", f"{short.get(r['model'], r['model'])}.{r['bits']}.{r['method']}"
        )
        parts.append(f"{key}={r['top1_mean']:.4f}")
    print("summary: " + " ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
