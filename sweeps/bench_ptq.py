"""Benchmark: every registered PTQ method on the zoo's classifiers (pure Python, no Ray).

    python sweeps/bench_ptq.py                       # textures-10 CNN + ViT, w4a4/w3a4/w2a4, 3 seeds
    python sweeps/bench_ptq.py --models cnn-bn-digits --bits w4a4 --seeds 1 --iters 20
    python sweeps/bench_ptq.py --models cnn-bn-digits --methods minmax,qdrop,mgrq:lambda_global=0
    python sweeps/bench_ptq.py --set calib=64 --set weight_lr=1e-3 --set plot=false --dry-run

For each zoo model (default `cnn-bn-textures`, `vit-textures`: textures-10, FP ~0.75, 1,000 test
patches, so 0.1-point granularity and room below FP; `cnn-bn-digits` / `vit-digits` are 99.6 % /
98.4 % on 450 digits, too easy to tell methods apart — issue 13), bit setting and method: quantize a
copy with `methods.ptq.PTQ_METHODS`, calibrate on `calib` training images (of the model's own data
set) drawn per seed, and measure top-1 on the whole test split; mean ± std over `seeds` seeds, plus
calibration seconds (quantize + calibrate + reconstruct). Reconstruction methods run `iters`
iterations per unit, batch 32, with the AdaRound lr raised to `weight_lr` 1e-2 (the papers use
20 000 iterations at 1e-3 on ImageNet; at 100 iterations and 1e-3 V barely moves from nearest
rounding — measured on cnn-bn-digits W2A4: QDrop 0.66 at lr 1e-3 vs 0.96 at 1e-2). This is a
tiny-scale check of direction, not of magnitude. Budgets: on cnn-bn-textures W2A4 (3 seeds) the
fraction of rounding variables still undecided is 0.70 at 100 iterations, 0.16-0.18 at 400 and
0.01-0.02 at 1600 (BRECQ 0.616 -> 0.663 -> 0.721 top-1, QDrop 0.600 -> 0.666 -> 0.712; FP 0.749), so
a claim between two reconstruction methods is marked "unconverged" unless both leave fewer than
`converged_below` (5 %) undecided; `--iters 1600` is the converged budget on that bed.
First/last layer at 8 bits for every method. Expected direction (reference/quant.md § 6.4, § 7):
reconstruction > min-max at low bits, MGRQ >= BRECQ/QDrop; the table reports what is measured.

If a zoo model's committed weights are missing, a stand-in with the zoo architecture is trained here
(`standin_steps`) and the output says so.

Common flags as for every sweep (`--config`, `--set`, `--out`, `--run-id`, `--dry-run`;
cluster/bench_cli.py); the knobs are the fields of `PTQBenchConfig` (`--models`, `--bits`,
`--methods`, `--seeds`, `--iters` are shorthands, comma-separated where they take lists). Writes
bench.json, run.json, top1.csv/.md, claims.csv/.md and top1_vs_bits.png into
results/bench_ptq/<run_id>/; the last line is `summary: key=value ...` (`cnn.fp=`, `cnn.w4a4.qdrop=`
mean top-1, ...). With ≥ 2 seeds it adds the direction claims, paired by seed (every method
calibrates on the same per-seed draw), as mean top-1 difference with its 95% t-interval and a
verdict (`supported` only when the CI excludes 0): `<model>.<bits>.<method>_vs_minmax` for every
other method when `minmax` ran, and `<model>.<bits>.mgrq_vs_brecq` / `mgrq_vs_qdrop` /
`mgrq_vs_repq_vit` when they ran.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/bench_ptq.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

from actors.calibration_worker import PTQ_BITS
from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands
from methods.errors import ConfigError, did_you_mean
from methods.metrics.stats import paired_difference, spread_floor
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


@dataclass(frozen=True)
class PTQBenchConfig:
    models: tuple[str, ...] = ("cnn-bn-textures", "vit-textures")
    bits: tuple[str, ...] = ("w4a4", "w3a4", "w2a4")  # quantized bits specs, stored in canonical spelling
    methods: tuple[str, ...] = ()  # default: all registered; 'name:key=value' overrides a config field
    seeds: int = 3
    calib: int = 128  # calibration images per seed
    iters: int = 60  # reconstruction iterations per unit
    weight_lr: float = 1e-2  # AdaRound V lr (papers: 1e-3 over 20 000 iterations; see the docstring)
    act_lr: float | None = None  # LSQ step lr (None: each method's own)
    standin_steps: int = 1500  # training steps of a stand-in when zoo weights are missing
    # a claim between two reconstruction methods is "unconverged" (no direction) while either leaves
    # more than this fraction of its rounding variables undecided when hardened
    converged_below: float = 0.05
    plot: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"PTQBenchConfig version must be 1; received {self.version}.")
        # canonical spelling ('w4a4') in rows and summary keys, whatever was typed
        object.__setattr__(self, "bits", canonical_bits_list(self.bits, **PTQ_BITS))
        known = PTQ_METHODS.names()
        for method in self.methods:
            name = method.split(":")[0]
            if name not in known:
                raise ConfigError(f"methods: {name!r} is not a registered PTQ method; expected some of "
                                  f"{', '.join(known)}. {did_you_mean(name, known)}")
        if not self.models or not self.bits or self.seeds < 1 or self.calib < 1 or self.iters < 1:
            raise ConfigError(f"need at least one model and bits setting, seeds, calib and iters >= 1; "
                              f"received models={list(self.models)}, bits={list(self.bits)}, seeds="
                              f"{self.seeds}, calib={self.calib}, iters={self.iters}.")


def _bits_flag(text: str) -> list[str]:
    """`--bits w4a4,w2a4`: validated here so a bad spelling stops before any work."""
    try:
        return list(canonical_bits_list(text.split(","), **PTQ_BITS))
    except BitsError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _list_flag(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def parse_override(text: str, config_cls: type) -> tuple[str, Any]:
    """'key=value' with the value cast to the type of the config field's default."""
    key, _, value = text.partition("=")
    default = config_cls.__dataclass_fields__[key].default if key in config_cls.__dataclass_fields__ else ""
    return key, type(default)(value) if isinstance(default, (int, float)) and not isinstance(
        default, bool
    ) else value


def dataset(model_name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The split of the data set a zoo model was trained on: textures-10 for '*-textures*', else digits."""
    if "-textures" in model_name:
        from sims.data.textures import load_textures_split

        return load_textures_split(split, IMAGE_SIZE)
    return load_digits_split(split, IMAGE_SIZE)


def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return float((pred == y).float().mean())


def train_standin(name: str, steps: int) -> nn.Module:
    """A stand-in with the zoo architecture, trained here (AdamW 2e-3, batch 64, seed 0)."""
    torch.manual_seed(0)
    if name.startswith("vit-"):
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
    x, y = dataset(name, "train")
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
        import sims.zoo  # noqa: F401  (registers the zoo entries)
    except ImportError:
        pass
    from sims.zoo.registry import load_zoo_model

    try:
        return load_zoo_model(name), "zoo weights"
    except (CheckpointError, UnknownNameError):
        return train_standin(name, standin_steps), f"STAND-IN trained here ({standin_steps} steps)"


def bench(args: PTQBenchConfig) -> dict[str, Any]:
    methods = list(args.methods) if args.methods else PTQ_METHODS.names()
    rows, sources, fp_top1 = [], {}, {}
    for model_name in args.models:
        x_train, _ = dataset(model_name, "train")
        x_test, y_test = dataset(model_name, "test")
        model, sources[model_name] = load_model(model_name, args.standin_steps)
        fp_top1[model_name] = top1(model, x_test, y_test)
        print(f"{model_name}: {sources[model_name]}, FP top-1 {fp_top1[model_name]:.4f}", flush=True)
        for bits in args.bits:
            w_bits, a_bits = parse_bits(bits).wa
            for method in methods:
                name, *overrides = method.split(":")  # e.g. mgrq:lambda_global=0:lambda_local=0
                spec = PTQ_METHODS.get(name)
                accs, secs, cpus, undecided = [], [], [], []
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
                    undecided += [u["undecided"] for u in res.report["recon"]
                                  if isinstance(u.get("undecided"), float) and math.isfinite(u["undecided"])]
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
                    # AdaRound variables still undecided when hardened, mean over units and seeds:
                    # a budget has converged when this is near 0 (issue 13)
                    "undecided_mean": statistics.mean(undecided) if undecided else None,
                }
                rows.append(row)
                print(
                    f"  {bits:5s} {method:10s} top1 {row['top1_mean']:.4f} ± {row['top1_std']:.4f}  "
                    f"calib {row['calib_s_mean']:.1f}s wall / {row['calib_cpu_s_mean']:.1f}s cpu"
                    + ("" if row["undecided_mean"] is None else f"  undecided {row['undecided_mean']:.2f}"),
                    flush=True,
                )
    return {"rows": rows, "sources": sources, "fp_top1": fp_top1}


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"model": m, "bits": "fp32", "method": "-", "top1_mean": acc, "top1_std": None, "seeds": None,
             "calib_s": None, "calib_cpu_s": None, "undecided": None} for m, acc in res["fp_top1"].items()]
    rows += [{"model": r["model"], "bits": r["bits"], "method": r["method"], "top1_mean": r["top1_mean"],
              "top1_std": r["top1_std"], "seeds": len(r["top1"]), "calib_s": r["calib_s_mean"],
              "calib_cpu_s": r.get("calib_cpu_s_mean", float("nan")), "undecided": r.get("undecided_mean")}
             for r in res["rows"]]
    return rows


def claims(run: BenchRun, res: dict[str, Any], key_of, converged_below: float = 0.05) -> dict[str, Any]:
    """The docstring's direction claims, paired by seed, where both methods ran on >= 2 seeds. A
    claim between two reconstruction methods before both converged gets the verdict "unconverged"."""
    out: dict[str, Any] = {}
    by = {(r["model"], r["bits"], r["method"]): r for r in res["rows"]}
    for (model, bits, method), r in by.items():
        pairs = [("minmax", "reconstruction beats min-max")] if method != "minmax" else []
        if method == "qdrop":
            pairs += [("brecq", "QDrop >= BRECQ")]
        if method == "mgrq":
            pairs += [("brecq", "MGRQ >= BRECQ"), ("qdrop", "MGRQ >= QDrop"),
                      ("repq_vit", "MGRQ >= its RepQ-ViT start")]
        for base, what in pairs:
            other = by.get((model, bits, base))
            if other is None or len(r["top1"]) < 2:
                continue
            est = paired_difference(r["top1"], other["top1"])
            floor = spread_floor(other["top1"])  # how far the baseline itself moves between seeds
            key = key_of(model, bits, f"{method}_vs_{base}")
            undecided = [u for u in (r.get("undecided_mean"), other.get("undecided_mean")) if u is not None]
            open_ = len(undecided) == 2 and max(undecided) > converged_below
            note = f"; UNCONVERGED: {max(undecided):.0%} undecided" if open_ else ""
            fields = run.claim(key, est, floor, what=f"{what} ({model} {bits}, top-1{note})")
            if open_:  # two budgets still moving: the difference is not yet the methods' difference
                fields[f"{key}_verdict"] = run.claims[-1]["verdict"] = "unconverged"
            out.update(fields)
    return out


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


def body(run: BenchRun) -> dict[str, Any]:
    cfg: PTQBenchConfig = run.config
    torch.set_num_threads(1)
    from methods.quant.api import _timm_attention_cls

    _timm_attention_cls()  # import timm once, outside the timed calibration of the first method
    t0 = time.perf_counter()
    res = bench(cfg)
    res["wall_s"] = time.perf_counter() - t0
    run.path("bench.json").write_text(json.dumps(res, indent=2))
    if cfg.plot:
        plot(res, run.path("top1_vs_bits.png"))
    run.table("top1", table_rows(res), f"test top-1 over {cfg.seeds} seed(s), mean ± std; calibration s")
    short = {"cnn-bn-digits": "cnn", "vit-digits": "vit", "cnn-bn-textures": "tcnn", "vit-textures": "tvit",
             "vit-textures-outliers": "ovit"}

    def key_of(model: str, bits: str, what: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{short.get(model, model)}.{bits}.{what}")

    summary: dict[str, Any] = {"wall_s": f"{res['wall_s']:.0f}"}
    for m, acc in res["fp_top1"].items():
        summary[f"{short.get(m, m)}.fp"] = f"{acc:.4f}"
    for r in res["rows"]:
        summary[key_of(r["model"], r["bits"], r["method"])] = f"{r['top1_mean']:.4f}"
    if cfg.seeds < 2:
        print("one seed: no intervals, no claims (run --seeds 2 or more)")
    summary.update(claims(run, res, key_of, cfg.converged_below))
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv,
        bench="bench_ptq",
        description=__doc__.splitlines()[0],
        config_cls=PTQBenchConfig,
        body=body,
        **shorthands(
            Shorthand("--models", "models", _list_flag, "comma-separated zoo models"),
            Shorthand("--bits", "bits", _bits_flag, "comma-separated quantized bits specs"),
            Shorthand("--methods", "methods", _list_flag, "comma-separated subset (default: all registered); "
                      "'name:key=value' overrides a config field, e.g. mgrq:lambda_global=0:lambda_local=0"),
            Shorthand("--seeds", "seeds", int, "number of seeds (calibration draws)"),
            Shorthand("--iters", "iters", int, "reconstruction iterations per unit"),
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
