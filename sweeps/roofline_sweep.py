"""Roofline grid through the farm: model × device × bit widths × sequence length → predicted
prefill/decode time and memory on virtual devices (LLM-Viewer's analysis, `methods/roofline_llm.py`).

    python sweeps/roofline_sweep.py
    python sweeps/roofline_sweep.py --set 'models=["Llama-2-13b"]' \
        --set 'devices=["nvidia_H100", "nvidia_jetson_agx_orin_64g"]'
    python sweeps/roofline_sweep.py --set task.mode='"corrected"' --set task.flash=true

One trial per grid point; objectives decode_time (s) and footprint (bytes), both minimised, so the
run's Pareto front lists the cheapest configurations. Writes a decode-time-vs-bits plot.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.roofline_device import ROOFLINE_BITS, RooflineTaskConfig
from actors.task import task_factory
from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import format_table, run_sweep
from methods.errors import ConfigError
from methods.quant.bits import canonical_bits_list
from sims.hardware import HARDWARE
from sims.llm_configs import LLM_CONFIGS


@dataclass(frozen=True)
class RooflineSweepConfig:
    study: StudyConfig = StudyConfig(sampler="grid", actors=1)
    models: tuple[str, ...] = ("Llama-2-7b", "opt-6.7b")
    devices: tuple[str, ...] = ("nvidia_A100", "nvidia_H100", "nvidia_jetson_agx_orin_64g")
    bits: tuple[str, ...] = ("w16a16kv16", "w8a8kv8", "w4a16kv16", "w4a8kv4")
    seqs: tuple[int, ...] = (512, 2048)
    task: RooflineTaskConfig = RooflineTaskConfig()
    version: int = 1

    def __post_init__(self) -> None:
        for m in self.models:
            if m not in LLM_CONFIGS:
                raise ConfigError(f"Unknown model {m!r}; known: {', '.join(sorted(LLM_CONFIGS))}.")
        for d in self.devices:
            if d not in HARDWARE:
                raise ConfigError(f"Unknown device {d!r}; known: {', '.join(sorted(HARDWARE))}.")
        object.__setattr__(self, "bits", canonical_bits_list(self.bits, **ROOFLINE_BITS))  # rows: 'w4a8kv4'


def build_spec(cfg: RooflineSweepConfig) -> StudySpec:
    space = {
        "model": ("categorical", list(cfg.models)),
        "device": ("categorical", list(cfg.devices)),
        "bits": ("categorical", list(cfg.bits)),
        "seq": ("categorical", list(cfg.seqs)),
    }
    return StudySpec(
        sweep="roofline_sweep",
        objectives=("decode_time", "footprint_decode_total"),
        directions=("minimize", "minimize"),
        space=space,
        study=cfg.study,
        task_factory=task_factory("roofline_device", cfg.task),
    )


def report(run_dir: Path, cfg: RooflineSweepConfig, outcome: Any) -> dict[str, Any]:
    rows = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE"]
    print(
        format_table(
            [
                {
                    k: r.get(k)
                    for k in (
                        "model",
                        "device",
                        "bits",
                        "seq",
                        "prefill_time",
                        "decode_time",
                        "footprint_decode_total",
                    )
                }
                for r in rows
            ]
        )
    )
    if not rows:
        return {}
    from methods.plotting import new_figure, save_figure

    seq = max(cfg.seqs)
    fig, ax = new_figure(figsize=(6, 3.8))
    for model in cfg.models:
        for device in cfg.devices:
            pts = [
                (cfg.bits.index(r["bits"]), r["decode_time"] * 1e3)
                for r in rows
                if r["model"] == model and r["device"] == device and r["seq"] == seq
            ]
            if pts:
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{model} @ {device}")
    ax.set_xticks(range(len(cfg.bits)), cfg.bits)
    ax.set_yscale("log")
    ax.set_ylabel(f"decode time per token (ms), seq {seq}")
    ax.legend(fontsize=6)
    fig.tight_layout()
    plot = save_figure(fig, run_dir / "decode_time_vs_bits.png", dpi=120)
    print(f"plot: {plot}")
    fastest = min(rows, key=lambda r: r["decode_time"])
    return {
        "plot": str(plot),
        "fastest": f"{fastest['model']}@{fastest['device']}:{fastest['bits']}",
        "fastest_decode_ms": fastest["decode_time"] * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    return run_sweep(
        argv,
        sweep="roofline_sweep",
        description=__doc__.splitlines()[0],
        config_cls=RooflineSweepConfig,
        build_spec=build_spec,
        report=report,
    )


if __name__ == "__main__":
    sys.exit(main())
