"""Farm benchmark (issue 2): three ratios measured side by side in one run.

1. Per-trial overhead of the farm (ask → actor call → sink flush → tell) against a bare Python
   loop calling the same ~1 ms objective; measured between the first and last completion so
   actor start-up is not counted (it is printed separately).
2. Throughput with 2 actors against 1 on a CPU-bound objective (expect >= 1.7x on 2 cores).
3. 20 trials of an objective with a 0.5 s model load: the farm (actors load once) against Ray Tune
   + OptunaSearch with default settings (expect the farm >= 5x faster).

    python sweeps/bench_farm.py [--trials 200] [--cpu-seconds 0.25]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.toy_task import ToyTask, ToyTaskConfig  # noqa: E402
from cluster.connect import connect  # noqa: E402
from cluster.study import StudyConfig, StudyRunner  # noqa: E402
from cluster.testing import toy_spec  # noqa: E402


def farm_run(spec, label: str):
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
    stamps: list[float] = []
    t0 = time.perf_counter()
    outcome = StudyRunner(spec, run_dir, label, progress=False).run(
        on_progress=lambda o: stamps.append(time.perf_counter())
    )
    total = time.perf_counter() - t0
    return outcome, total, stamps, t0


def bench_overhead(n: int) -> dict[str, float]:
    task = ToyTask(ToyTaskConfig(sleep=0.001))
    xs = list(range(n))
    t0 = time.perf_counter()
    for x in xs:
        task.evaluate({"x": x, "y": 0}, seed=0, trial=x, chunk=0, n_chunks=1)
    bare = (time.perf_counter() - t0) / n
    spec = toy_spec(
        "bench_overhead",
        StudyConfig(sampler="grid", actors=1),
        space={"x": ("categorical", xs), "y": ("categorical", [0])},
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


def bench_model_load(n: int = 20, load: float = 0.5) -> dict[str, float]:
    spec = toy_spec(
        "bench_load",
        StudyConfig(sampler="random", actors=2, n_trials=n, seed=0),
        space={"x": ("float", 0.0, 4.0), "y": ("int", 0, 2)},
        load_seconds=load,
        sleep=0.01,
    )
    _, farm_total, _, _ = farm_run(spec, "load")
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200, help="trials of the overhead part")
    p.add_argument("--cpu-seconds", type=float, default=0.25, help="CPU time of the CPU-bound objective")
    args = p.parse_args(argv)
    info = connect(num_cpus=2, local=True, log_to_driver=False)
    print(f"ray: {info.nodes} node(s), {info.cpus:g} CPU")
    o = bench_overhead(args.trials)
    print(
        f"[1] ~1 ms objective, {args.trials} trials, 1 actor: bare {o['bare_ms']:.2f} ms/trial, "
        f"farm {o['farm_ms']:.2f} ms/trial -> overhead {o['overhead_ms']:.2f} ms/trial "
        f"(actor start-up {o['startup_s']:.1f} s, not counted)"
    )
    s = bench_scaling(args.cpu_seconds)
    print(
        f"[2] CPU-bound {args.cpu_seconds:.2f} s objective: 1 actor {s['s_per_trial_1']:.3f} s/trial, "
        f"2 actors {s['s_per_trial_2']:.3f} s/trial -> {s['speedup_2v1']:.2f}x"
    )
    m = bench_model_load()
    print(
        f"[3] 20 trials, 0.5 s model load: farm {m['farm_s']:.1f} s, Ray Tune + OptunaSearch (defaults) "
        f"{m['tune_s']:.1f} s -> farm {m['farm_vs_tune']:.1f}x faster"
    )
    print(
        f"summary: overhead_ms_per_trial={o['overhead_ms']:.2f} bare_ms={o['bare_ms']:.2f} "
        f"farm_ms={o['farm_ms']:.2f} speedup_2v1={s['speedup_2v1']:.2f} farm_s={m['farm_s']:.1f} "
        f"tune_s={m['tune_s']:.1f} farm_vs_tune={m['farm_vs_tune']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
