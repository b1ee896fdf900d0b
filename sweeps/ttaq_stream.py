"""TTAQ stream sweep: continual-corruption TTA streams of quantized models through the farm.

    python sweeps/ttaq_stream.py            # digits-C: 3 bits x 3 TTA x 3 TTAQ parts x 2 label orders
    python sweeps/ttaq_stream.py --set 'tta=["tent"]' --set 'bits=["w2a4"]'
    python sweeps/ttaq_stream.py --source cifar10c --root /data/CIFAR-10-C --calib clean.npy \\
        --arch resnet18 --checkpoint resnet18_cifar.safetensors --set task.num_classes=10
    python sweeps/ttaq_stream.py --source imagenetc --root /data/ImageNet-C --calib clean.npy \\
        --arch resnet50 --checkpoint r50.safetensors --set task.num_classes=1000 \\
        --set 'task.input_mean=[0.485,0.456,0.406]' --set 'task.input_std=[0.229,0.224,0.225]'

Grid: stream seeds × bits (w2a4, w4a4, w8a8; 'fp' allowed) × TTA method (bn_adapt, tent, cotta) ×
TTAQ parts ('none' = QDrop PTQ; 'pem+pcr'; 'pem+pcr+abl') × label order (balanced; imbalanced =
RoTTA's Dirichlet order). Each trial is one stream held by a `tta_stream_cpu1` actor
(`actors/tta_stream.py`); every chunk of `task.n_batches` batches lands one `row_kind="stream"` row
per batch while the stream runs, and a stream whose actor dies resumes from its last landed batch.
At the end: a table of mean error over domains per configuration and a per-domain error plot.
TTAQ: Xiao et al., arXiv:2412.09899 (our instantiation, see methods/ttaq.py).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/ttaq_stream.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.tta_stream import LABEL_ORDERS, TTAStreamTask, TTAStreamTaskConfig, check_sources
from cluster.results import read_table
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import format_table, run_sweep
from methods.errors import ConfigError
from methods.quant.bits import canonical_bits_list
from methods.tta import TTA_METHODS
from methods.tta.stream import NO_TTA
from methods.ttaq import TTAQ_BITS, parse_parts
from sims.data.digits_c import CorruptionStream

SWEEP = "ttaq_stream"
PARAMS = ("stream_seed", "bits", "tta", "ttaq", "label_order")


@dataclass(frozen=True)
class TTAQStreamConfig:
    study: StudyConfig = StudyConfig(sampler="grid", actors=2, profile="tta_stream_cpu1")
    task: TTAStreamTaskConfig = field(default_factory=TTAStreamTaskConfig)
    stream_seeds: tuple[int, ...] = (0,)
    bits: tuple[str, ...] = ("w2a4", "w4a4", "w8a8")
    tta: tuple[str, ...] = ("bn_adapt", "tent", "cotta")
    ttaq: tuple[str, ...] = ("none", "pem+pcr", "pem+pcr+abl")
    label_orders: tuple[str, ...] = LABEL_ORDERS
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", canonical_bits_list(self.bits, **TTAQ_BITS))  # rows say 'w2a4'
        for p in self.ttaq:
            parse_parts(p)
        for t in self.tta:
            if t != NO_TTA:
                TTA_METHODS.get(t)
        for o in self.label_orders:
            if o not in LABEL_ORDERS:
                raise ConfigError(f"label_orders must be drawn from {LABEL_ORDERS}, got {o!r}.")
        if not (self.stream_seeds and self.bits and self.tta and self.ttaq and self.label_orders):
            raise ConfigError("stream_seeds, bits, tta, ttaq and label_orders must each list at least one "
                              "value.")


def stream_length(task: TTAStreamTaskConfig) -> int:
    return len(CorruptionStream(task.stream_config(0, "balanced")))


def build_spec(cfg: TTAQStreamConfig) -> StudySpec:
    check_sources(cfg.task)  # a bad --checkpoint/--calib is exit 2 here, not a dead actor later
    n_chunks = math.ceil(stream_length(cfg.task) / cfg.task.n_batches)
    space = {"stream_seed": ("categorical", list(cfg.stream_seeds)),
             "bits": ("categorical", list(cfg.bits)),
             "tta": ("categorical", list(cfg.tta)), "ttaq": ("categorical", list(cfg.ttaq)),
             "label_order": ("categorical", list(cfg.label_orders))}
    if cfg.study.sampler != "grid":
        raise ConfigError("ttaq_stream enumerates a grid of streams; use --sampler grid "
                          "(--max-trials caps it).")
    return StudySpec(sweep=SWEEP, objectives=("mean_error",), directions=("minimize",), space=space,
                     task_factory=partial(TTAStreamTask, cfg.task),
                     study=dataclasses.replace(cfg.study, n_chunks=n_chunks))


def stream_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in read_table(run_dir).to_pylist() if r.get("row_kind") == "stream"]


def duplicate_batches(rows: list[dict[str, Any]]) -> int:
    """Stream batches landed more than once for the same configuration (must be 0)."""
    seen: set[tuple] = set()
    dups = 0
    for r in rows:
        key = (r["params_json"], r["batch_index"])
        dups += key in seen
        seen.add(key)
    return dups


def per_domain(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """params_json -> {domain: item-weighted error} from the stream rows."""
    acc: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        d = acc.setdefault(r["params_json"], {}).setdefault(r["domain"], [0.0, 0.0])
        d[0] += r["batch_error"] * r["n_items"]
        d[1] += r["n_items"]
    return {k: {dom: w / n for dom, (w, n) in v.items()} for k, v in acc.items()}


def report(run_dir: Path, cfg: TTAQStreamConfig, outcome: Any) -> dict[str, Any]:
    rows = stream_rows(run_dir)
    domains = per_domain(rows)
    table = []
    for key, errs in sorted(domains.items()):
        p = json.loads(key)
        n = sum(1 for r in rows if r["params_json"] == key)
        table.append({**{k: p.get(k) for k in PARAMS}, "batches": n,
                      "mean_error": sum(errs.values()) / len(errs)})
    print(format_table(table))
    extras: dict[str, Any] = {"stream_rows": len(rows), "duplicate_batches": duplicate_batches(rows)}
    if table:
        extras["plot"] = str(plot_domains(run_dir, domains, list(cfg.task.corruptions)))
        best = min(table, key=lambda r: r["mean_error"])
        extras["best_config"] = "/".join(str(best[k]) for k in PARAMS[1:])
    return extras


def plot_domains(run_dir: Path, domains: dict[str, dict[str, float]], order: list[str]) -> Path:
    from methods.plotting import colormap, new_figure, save_figure

    bits = sorted({json.loads(k)["bits"] for k in domains})
    fig, axes = new_figure(1, len(bits), figsize=(5 * len(bits) + 3, 4), squeeze=False, sharey=True)
    colors = colormap("tab20").colors
    for ax, b in zip(axes[0], bits, strict=True):
        for i, (key, errs) in enumerate(sorted(domains.items())):
            p = json.loads(key)
            if p["bits"] != b:
                continue
            names = [d for d in order if d in errs] + [d for d in errs if d not in order]
            style = "-" if p["label_order"] == "balanced" else "--"
            ax.plot(range(len(names)), [errs[d] for d in names], style, marker="o", ms=3,
                    color=colors[i % 20],
                    label=f"{p['tta']} / {p['ttaq']} / {p['label_order']} / s{p['stream_seed']}")
        ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=7)
        ax.set_title(f"{b}")
        ax.set_ylabel("error")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("TTAQ stream: per-domain error (continual order left to right)")
    fig.tight_layout()
    path = save_figure(fig, run_dir / "per_domain_error.png", dpi=110)
    print(f"plot: {path}")
    return path


def add_arguments(p) -> None:
    p.add_argument("--source", choices=("digits", "textures", "cifar10c", "imagenetc"),
                   help="stream source (default digits; textures: textures-C, use with "
                        "--set task.model=cnn-bn-textures)")
    p.add_argument("--root", help="CIFAR-10-C / ImageNet-C folder")
    p.add_argument("--calib", help=".npy of clean calibration images (needed for folder sources)")
    p.add_argument("--checkpoint", help="a user's weights: for the zoo model, or a timm file with --arch")
    p.add_argument("--arch", help="timm architecture of --checkpoint (e.g. resnet50)")


def config_from_args(args) -> list[str]:
    out = []
    for flag, key in (("source", "source"), ("root", "root"), ("calib", "calib_path"),
                      ("checkpoint", "checkpoint"), ("arch", "arch")):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"task.{key}={json.dumps(str(value))}")
    if args.source not in (None, "digits", "textures"):
        out.append("task.batches_per_domain=0")  # the whole split of each domain
    return out


def main(argv: list[str] | None = None) -> int:
    return run_sweep(argv, sweep=SWEEP, description=__doc__.splitlines()[0], config_cls=TTAQStreamConfig,
                     build_spec=build_spec, report=report, add_arguments=add_arguments,
                     config_from_args=config_from_args)


if __name__ == "__main__":
    sys.exit(main())
