"""Farm benchmark (issue 2): three ratios measured side by side in one run.

1. Per-trial overhead of the farm (ask → actor call → sink flush → tell) against a bare Python
   loop calling the same ~1 ms objective; measured between the first and last completion so
   actor start-up is not counted (it is printed separately).
2. Throughput with 2 actors against 1 on a CPU-bound objective (expect >= 1.7x on 2 cores).
3. 20 trials of an objective with a 0.5 s model load: the farm (actors load once) against Ray Tune
   + OptunaSearch with default settings (expect the farm >= 5x faster).

    python sweeps/bench_farm.py [--trials 200] [--cpu-seconds 0.25]
    python sweeps/bench_farm.py --trials 20 --cpu-seconds 0.02 --set scale_trials=4 --set tune=false
    python sweeps/bench_farm.py --dry-run                     # print the config

Common flags as for every sweep (`--config`, `--set`, `--out`, `--run-id`, `--dry-run`,
`--num-cpus` (default 2 here), `--dashboard`; cluster/bench_cli.py); the knobs are the fields of
`FarmBenchConfig`. Writes run.json, farm.csv/.md, claims.csv/.md and farm.png into
results/bench_farm/<run_id>/; the last line is `summary:`. Each part runs once: the 2-vs-1 speed-up
and the farm-vs-Tune ratio are single measurements without an interval. The per-trial overhead has
many replicates (one per trial), so the summary adds its 95% Welch interval (`overhead_ms_lo`,
`overhead_ms_hi`: farm time between completions vs bare call time, per trial) and a verdict
(`overhead_ms_verdict=supported` when the farm's overhead is distinguishable from zero).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.toy_task import ToyTask, ToyTaskConfig  # noqa: E402
from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands  # noqa: E402
from cluster.connect import connect  # noqa: E402
from cluster.study import StudyConfig, StudyRunner  # noqa: E402
from cluster.testing import toy_spec  # noqa: E402
from methods.errors import ConfigError  # noqa: E402
from methods.metrics.stats import unpaired_difference  # noqa: E402
from methods.plotting import new_figure, save_figure  # noqa: E402


@dataclass(frozen=True)
class FarmBenchConfig:
    trials: int = 200  # trials of the overhead part
    cpu_seconds: float = 0.25  # CPU time of the CPU-bound objective (scaling part)
    scale_trials: int = 12  # trials per actor count in the scaling part
    load_trials: int = 20  # trials of the model-load part
    load_seconds: float = 0.5  # model load of the model-load part
    tune: bool = True  # run Ray Tune + OptunaSearch in the model-load part (false: the farm only)
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"FarmBenchConfig version must be 1; received {self.version}.")
        if self.trials < 3 or self.scale_trials < 3 or self.load_trials < 1:
            raise ConfigError(f"need trials >= 3, scale_trials >= 3 (intervals between completions) and "
                              f"load_trials >= 1; received {self.trials}, {self.scale_trials}, "
                              f"{self.load_trials}.")
        if self.cpu_seconds < 0 or self.load_seconds < 0:
            raise ConfigError(f"cpu_seconds and load_seconds must be >= 0; received {self.cpu_seconds}, "
                              f"{self.load_seconds}.")


def farm_run(spec, label: str):
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
    stamps: list[float] = []
    t0 = time.perf_counter()
    outcome = StudyRunner(spec, run_dir, label, progress=False).run(
        on_progress=lambda o: stamps.append(time.perf_counter())
    )
    total = time.perf_counter() - t0
    return outcome, total, stamps, t0


def bench_overhead(n: int, **study: Any) -> dict[str, Any]:
    """Farm vs bare loop on the ~1 ms objective, 1 actor; `study` are extra `StudyConfig` fields.

    The grid is a product of small axes (10 values of x, n/10 of y), as a lab's grid is: one axis of
    n values puts n choices into every distribution Optuna compares per ask and tell, which alone
    cost 1.2 ms per trial at n = 300 (measured; issue 20) and is not the farm's overhead [ours].
    """
    task = ToyTask(ToyTaskConfig(sleep=0.001))
    side = 10
    points = [{"x": i % side, "y": i // side} for i in range(n)]
    bare_each = []
    t0 = time.perf_counter()
    for i, p in enumerate(points):
        t1 = time.perf_counter()
        task.evaluate(p, seed=0, trial=i, chunk=0, n_chunks=1)
        bare_each.append(time.perf_counter() - t1)
    bare = (time.perf_counter() - t0) / n
    spec = toy_spec(
        "bench_overhead",
        StudyConfig(sampler="grid", actors=1, n_trials=n, **study),
        space={"x": ("categorical", list(range(side))), "y": ("categorical", list(range(-(-n // side))))},
        sleep=0.001,
    )
    outcome, total, stamps, t0 = farm_run(spec, "overhead")
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {
        "bare_ms": bare * 1e3,
        "farm_ms": steady * 1e3,
        "overhead_ms": (steady - bare) * 1e3,
        "startup_s": stamps[0] - t0,
        "complete": outcome.complete,
        # per-trial samples: farm time between consecutive completions, bare time of one call (ms)
        "farm_each_ms": np.diff(stamps) * 1e3,
        "bare_each_ms": np.asarray(bare_each) * 1e3,
    }


def bench_scaling(cpu_seconds: float, n: int = 12) -> dict[str, float]:
    times = {}
    for actors in (1, 2):
        spec = toy_spec(
            f"bench_scale{actors}",
            StudyConfig(sampler="grid", actors=actors),
            space={"x": ("categorical", list(range(n))), "y": ("categorical", [0])},
            cpu_seconds=cpu_seconds,
        )
        _, _, stamps, t0 = farm_run(spec, f"scale{actors}")
        # From the first to the last completion (actor start-up excluded). With k actors the first
        # k trials finish together, so the span holds n - k trials' worth of work.
        times[actors] = (stamps[-1] - stamps[0]) / (len(stamps) - actors)
    return {"s_per_trial_1": times[1], "s_per_trial_2": times[2], "speedup_2v1": times[1] / times[2]}


def bench_model_load(n: int = 20, load: float = 0.5, with_tune: bool = True) -> dict[str, float]:
    spec = toy_spec(
        "bench_load",
        StudyConfig(sampler="random", actors=2, n_trials=n, seed=0),
        space={"x": ("float", 0.0, 4.0), "y": ("int", 0, 2)},
        load_seconds=load,
        sleep=0.01,
    )
    _, farm_total, _, _ = farm_run(spec, "load")
    if not with_tune:
        nan = float("nan")
        return {"farm_s": farm_total, "tune_s": nan, "farm_vs_tune": nan, "tune_trials": 0}
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config):
        task = ToyTask(ToyTaskConfig(load_seconds=load, sleep=0.01))  # a function trainable reloads per trial
        out = task.evaluate({"x": config["x"], "y": config["y"]}, seed=0, trial=0, chunk=0, n_chunks=1)
        tune.report({"loss": out["objectives"]["loss"]})

    storage = tempfile.mkdtemp(prefix="bench-tune-")
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0.0, 4.0), "y": tune.randint(0, 3)},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(metric="loss", mode="min", seed=0), num_samples=n, max_concurrent_trials=2
        ),
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    )
    results = tuner.fit()
    tune_total = time.perf_counter() - t0
    return {
        "farm_s": farm_total,
        "tune_s": tune_total,
        "farm_vs_tune": tune_total / farm_total,
        "tune_trials": len(results),
    }


def body(run: BenchRun) -> dict[str, Any]:
    cfg: FarmBenchConfig = run.config
    import ray

    owned = not ray.is_initialized()
    info = connect(num_cpus=run.num_cpus or 2, dashboard=run.dashboard, local=True, log_to_driver=False)
    print(f"ray: {info.nodes} node(s), {info.cpus:g} CPU", flush=True)
    try:
        o = bench_overhead(cfg.trials)
        print(
            f"[1] ~1 ms objective, {cfg.trials} trials, 1 actor: bare {o['bare_ms']:.2f} ms/trial, "
            f"farm {o['farm_ms']:.2f} ms/trial -> overhead {o['overhead_ms']:.2f} ms/trial "
            f"(actor start-up {o['startup_s']:.1f} s, not counted)", flush=True
        )
        s = bench_scaling(cfg.cpu_seconds, cfg.scale_trials)
        print(
            f"[2] CPU-bound {cfg.cpu_seconds:.2f} s objective: 1 actor {s['s_per_trial_1']:.3f} s/trial, "
            f"2 actors {s['s_per_trial_2']:.3f} s/trial -> {s['speedup_2v1']:.2f}x", flush=True
        )
        m = bench_model_load(cfg.load_trials, cfg.load_seconds, cfg.tune)
        tune_text = "Ray Tune skipped (tune=false)"
        if cfg.tune:
            tune_text = (f"Ray Tune + OptunaSearch (defaults) {m['tune_s']:.1f} s -> "
                         f"farm {m['farm_vs_tune']:.1f}x faster")
        print(f"[3] {cfg.load_trials} trials, {cfg.load_seconds:g} s model load: farm {m['farm_s']:.1f} s, "
              + tune_text, flush=True)
    finally:
        if owned:
            ray.shutdown()
    parts = (  # part, measure, value, what to expect
        ("1 overhead", "bare ms/trial", o["bare_ms"], ""),
        ("1 overhead", "farm ms/trial", o["farm_ms"], ""),
        ("1 overhead", "overhead ms/trial", o["overhead_ms"], ""),
        ("1 overhead", "actor start-up s", o["startup_s"], "not counted"),
        ("2 scaling", "s/trial, 1 actor", s["s_per_trial_1"], ""),
        ("2 scaling", "s/trial, 2 actors", s["s_per_trial_2"], ""),
        ("2 scaling", "speed-up 2 vs 1", s["speedup_2v1"], ">= 1.7 (one run)"),
        ("3 model load", "farm s", m["farm_s"], ""),
        ("3 model load", "Ray Tune s", m["tune_s"], ""),
        ("3 model load", "farm vs Tune", m["farm_vs_tune"], ">= 5 (one run)"),
    )
    run.table("farm", [dict(zip(("part", "measure", "value", "expect"), p, strict=True)) for p in parts],
              "farm benchmark (parts 2 and 3: one run each, no interval)")
    _plot(o, s, m, run.path("farm.png"))
    summary: dict[str, Any] = {
        "overhead_ms_per_trial": f"{o['overhead_ms']:.2f}", "bare_ms": f"{o['bare_ms']:.2f}",
        "farm_ms": f"{o['farm_ms']:.2f}", "speedup_2v1": f"{s['speedup_2v1']:.2f}",
        "farm_s": f"{m['farm_s']:.1f}", "tune_s": f"{m['tune_s']:.1f}",
        "farm_vs_tune": f"{m['farm_vs_tune']:.1f}",
    }
    # Welch: the farm's inter-completion times and the bare calls are independent samples of trials
    est = unpaired_difference(o["farm_each_ms"], o["bare_each_ms"])
    summary.update(run.claim("overhead_ms", est, what="the farm adds per-trial overhead over a bare loop"))
    return summary


def _plot(o: dict[str, Any], s: dict[str, float], m: dict[str, float], path: Path) -> None:
    fig, axes = new_figure(1, 3, figsize=(12, 3.8))
    two = ["tab:gray", "tab:blue"]
    axes[0].bar(["bare", "farm"], [o["bare_ms"], o["farm_ms"]], color=two)
    axes[0].set_ylabel("ms per trial (~1 ms objective)")
    axes[1].bar(["1 actor", "2 actors"], [s["s_per_trial_1"], s["s_per_trial_2"]], color=two)
    axes[1].set_ylabel("s per trial (CPU-bound)")
    axes[2].bar(["farm", "Ray Tune"], [m["farm_s"], m["tune_s"]], color=two[::-1])
    axes[2].set_ylabel("total s (model load per trial)")
    for ax, title in zip(axes, ("overhead", f"scaling {s['speedup_2v1']:.2f}x",
                                f"farm vs Tune {m['farm_vs_tune']:.1f}x"), strict=True):
        ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv,
        bench="bench_farm",
        description=__doc__.splitlines()[0],
        config_cls=FarmBenchConfig,
        body=body,
        **shorthands(Shorthand("--trials", "trials", int, "trials of the overhead part"),
                     Shorthand("--cpu-seconds", "cpu_seconds", float, "CPU time of the CPU-bound objective")),
    )


if __name__ == "__main__":
    sys.exit(main())
