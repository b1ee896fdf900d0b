"""Scaling benchmark (issue 20): does the farm's driver and sink keep up with many actors and trials?

Measured side by side in one run on this machine:

1. driver throughput (trials/s) on a zero-cost objective against the number of actors (fractional
   CPUs, profile `bench_scale_frac`), for the grid, random and TPE samplers, plus one row on a
   `ray.cluster_utils.Cluster` (a head and `cluster_nodes - 1` worker nodes holding the actors);
   throughput is completions between the 10th and 90th percentile of completion times (actor
   start-up excluded), with a percentile-bootstrap interval over the gaps between completions; the
   counts in `overlap_actors` run grid and random again with `study.overlap_land`, side by side;
2. the cost per trial as the study grows, in-process on the run's own journal code: ask, tell and
   journal append (`BufferedJournal.flush`, one per trial: the worst case of one trial per round)
   at trial ~100 and at the last ~100 of `study_trials`, the ratio with a bootstrap interval; the
   same at trial ~100 with Optuna's plain `JournalFileBackend` (one fsync per operation: the
   pre-issue-20 driver); TPE to `tpe_trials`; reload time of the `study_trials`-trial journal;
3. the sink: rows/s and bytes/s into Parquet (20-column and `wide_cols`-column rows) through the
   `ResultSink` actor at batch sizes 1, 16 and 256 rows per append, the delay from an append to
   the row being readable in a published part (`roll_seconds`), and parts per 10,000 rows left
   by a trickle of one row per roll with and without compaction;
4. the Ray Tune comparison on the zero-cost objective at 1 and at `tune_many` concurrent trials:
   Tune + OptunaSearch, Tune's basic variant generator (`num_samples`), the farm; and the
   issue's two standing targets re-measured here: per-trial overhead on the ~1 ms objective
   (sweeps/bench_farm.py's measurement) at the defaults and at the settings for millisecond
   trials (`inflight_per_actor=2`, `overlap_land`), and farm vs Tune on the 0.5 s model-load workload;
5. resident memory of the driver and the sink after 1,000 and after `rss_trials` trials.

    python sweeps/bench_scale.py --quick          # < 3 minutes here: fewer actors, trials, rows
    python sweeps/bench_scale.py                  # ~15 minutes: 1..256 actors, 10,000 trials
    python sweeps/bench_scale.py --dry-run

Common flags as for every bench (cluster/bench_cli.py). Writes run.json, scale_*.csv/.md,
targets.csv/.md and scale.png into results/bench_scale/<run_id>/; each target is printed as met /
not met; the last line is `summary:`. Single runs: throughput and ratios are from one run each,
with within-run intervals (gaps between completions, trials of a window) — they do not cover
run-to-run variation, which on this shared 2-core machine is large. An actor count whose
estimated memory (proportional memory per worker, PSS, measured at the previous count) exceeds half
the available memory is skipped and says so, as is a count at which Ray's memory monitor kills
workers (and every larger count). Our own design; no paper.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands  # noqa: E402
from methods.errors import ConfigError  # noqa: E402
from methods.metrics.stats import Estimate, bootstrap_ci  # noqa: E402

FRAC = "bench_scale_frac"  # the bench's fractional-CPU evaluator profile (cluster/resources.py)
CLUSTER_FRAC = "bench_scale_cluster"  # the same on the fake cluster's worker nodes


@dataclass(frozen=True)
class ScaleBenchConfig:
    actors: tuple[int, ...] = (1, 4, 16, 64, 256)  # actor counts of part 1
    samplers: tuple[str, ...] = ("grid", "random", "tpe")
    trials_per_point: int = 2000  # trials of each part-1 run (at least 4 per actor)
    tpe_trials_per_point: int = 600  # TPE's part-1 runs (its ask grows with the study)
    inflight_per_actor: int = 2  # study.inflight_per_actor of part 1
    overlap_actors: tuple[int, ...] = (16, 64)  # part 1 counts run again with study.overlap_land
    cluster_nodes: int = 3  # nodes of the fake cluster row (0: no cluster row)
    cluster_actors: int = 16
    study_trials: int = 10_000  # part 2, grid and random
    tpe_trials: int = 2000  # part 2, TPE
    plain_trials: int = 300  # part 2 with Optuna's plain JournalFileBackend
    sink_rows: int = 20_000  # part 3, rows per sink measurement
    wide_cols: int = 200
    roll_seconds: float = 1.0
    trickle_rows: int = 300  # part 3, rows of the one-row-per-roll trickle
    tune: bool = True
    tune_trials: int = 40
    tune_many: int = 8
    overhead_trials: int = 200
    load_trials: int = 20
    rss_trials: int = 10_000
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"ScaleBenchConfig version must be 1; received {self.version}.")
        if not self.actors or min(self.actors) < 1:
            raise ConfigError(f"actors must be a non-empty list of counts >= 1; received {self.actors}.")
        bad = [s for s in self.samplers if s not in ("grid", "random", "tpe")]
        if bad or not self.samplers:
            raise ConfigError(f"samplers are grid, random, tpe; received {self.samplers}.")
        if min(self.study_trials, self.tpe_trials, self.plain_trials) < 300:
            raise ConfigError(
                f"study_trials, tpe_trials and plain_trials need >= 300 (windows of 100 at trial ~100 "
                f"and at the end); received {self.study_trials}, {self.tpe_trials}, {self.plain_trials}."
            )
        if min(self.trials_per_point, self.tpe_trials_per_point, self.tune_trials, self.overhead_trials) < 10:
            raise ConfigError(
                "trials_per_point, tpe_trials_per_point, tune_trials, overhead_trials need >= 10."
            )
        if self.cluster_nodes == 1 or self.cluster_nodes < 0:
            raise ConfigError(f"cluster_nodes is 0 (no cluster row) or >= 2; received {self.cluster_nodes}.")
        if self.rss_trials < 1000 or self.sink_rows < 1000 or self.trickle_rows < 20 or self.load_trials < 2:
            raise ConfigError("rss_trials >= 1000, sink_rows >= 1000, trickle_rows >= 20, load_trials >= 2.")
        if self.roll_seconds <= 0 or self.wide_cols < 21 or self.inflight_per_actor < 1 or self.tune_many < 2:
            raise ConfigError("roll_seconds > 0, wide_cols > 20, inflight_per_actor >= 1, tune_many >= 2.")


QUICK = {
    "actors": [1, 4, 16],
    "samplers": ["grid", "random", "tpe"],
    "trials_per_point": 300,
    "tpe_trials_per_point": 120,
    "cluster_actors": 4,
    "study_trials": 2000,
    "tpe_trials": 400,
    "plain_trials": 300,
    "sink_rows": 4000,
    "trickle_rows": 60,
    "tune_trials": 12,
    "tune_many": 4,
    "overhead_trials": 100,
    "overlap_actors": [16],
    "load_trials": 6,
    "rss_trials": 3000,
}


# -- helpers ----------------------------------------------------------------------------------
def _rss_mb(pid: int | None = None) -> float:
    try:
        text = Path(f"/proc/{pid or 'self'}/status").read_text()
    except OSError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _mem_available_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def _ratio_ci(a: np.ndarray, b: np.ndarray, seed: int = 0, n_boot: int = 2000) -> Estimate:
    """mean(b) / mean(a) with a percentile bootstrap over the trials of each window."""
    rng = np.random.default_rng(seed)
    ra = rng.choice(a, (n_boot, a.size)).mean(axis=1)
    rb = rng.choice(b, (n_boot, b.size)).mean(axis=1)
    lo, hi = np.quantile(rb / ra, [0.025, 0.975])
    return Estimate(b.mean() / a.mean(), lo, hi, a.size + b.size, 0.95, "percentile bootstrap ratio")


def _spec(
    sweep: str, sampler: str, actors: int, n: int, profile: str, inflight: int, overlap: bool = False,
    **task: Any,
):
    from cluster.study import StudyConfig
    from cluster.testing import toy_spec

    study = StudyConfig(
        sampler=sampler,
        actors=actors,
        profile=profile,
        inflight_per_actor=inflight,
        overlap_land=overlap,
        n_trials=n,
        seed=0,
    )
    if sampler == "grid":
        space = grid_space(n)
    else:
        space = {"x": ("float", 0.0, 4.0), "y": ("int", 0, 2)}
    return toy_spec(sweep, study, space=space, **task)


def grid_space(n: int) -> dict[str, tuple]:
    """A grid of at least n points as a product of small axes (a lab's grid: a few values per
    parameter; one axis of n values would put n choices into every trial's journal record)."""
    side = 50
    return {"x": ("categorical", list(range(side))), "y": ("categorical", list(range(-(-n // side))))}


def farm_run(spec, label: str, on_progress=None) -> dict[str, Any]:
    """Run one study; completion stamps, throughput between the 10th and 90th percentile."""
    from cluster.study import StudyRunner

    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{label}-"))
    stamps: list[float] = []
    cpu: list[float] = []

    def progress(outcome):
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())
        if on_progress is not None:
            on_progress(outcome)

    t0 = time.perf_counter()
    runner = StudyRunner(spec, run_dir, label, progress=False)
    outcome = runner.run(on_progress=progress)
    total = time.perf_counter() - t0
    s = np.asarray(stamps)
    lo, hi = int(len(s) * 0.1), max(int(len(s) * 0.9), int(len(s) * 0.1) + 2)
    window = s[lo:hi]
    # the driver's CPU time over its wall time in the window: near 1 when the driver is the
    # bottleneck, low when it waits (for actors, or for a core that other processes hold)
    c = np.asarray(cpu)[lo:hi]
    spans = len(window) > 2 and window[-1] > window[0]
    cpu_share = float((c[-1] - c[0]) / (window[-1] - window[0])) if spans else float("nan")
    gaps = np.diff(window)
    rate = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 2 and window[-1] > window[0] else 0.0
    est = None
    if gaps.size >= 5 and gaps.mean() > 0:
        ci = bootstrap_ci(gaps, np.mean, n_boot=1000)
        est = Estimate(
            rate,
            1 / ci.hi if ci.hi > 0 else rate,
            1 / ci.lo if ci.lo > 0 else rate * 10,
            gaps.size,
            0.95,
            "percentile bootstrap over gaps",
        )
    return {
        "outcome": outcome,
        "total_s": total,
        "startup_s": (s[0] - t0) if len(s) else total,
        "rate": rate,
        "rate_ci": est,
        "run_dir": run_dir,
        "timings": dict(outcome.timings),
        "driver_cpu_share": cpu_share,
    }


# -- part 1 -----------------------------------------------------------------------------------
def part_throughput(cfg: ScaleBenchConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from ray.exceptions import OutOfMemoryError

    rows, per_actor_mb, skipped = [], None, []
    for n_actors in cfg.actors:
        if per_actor_mb is not None and per_actor_mb * n_actors > 0.5 * _mem_available_mb():
            skipped.append(n_actors)
            print(
                f"[1] {n_actors} actors skipped: ~{per_actor_mb * n_actors / 1024:.1f} GiB needed "
                f"({per_actor_mb:.0f} MiB/actor measured), {_mem_available_mb() / 1024:.1f} GiB available",
                flush=True,
            )
            continue
        runs = [(s, False) for s in cfg.samplers]
        if n_actors in cfg.overlap_actors:  # the same counts with the append overlapped, side by side
            runs += [(s, True) for s in cfg.samplers if s in ("grid", "random")]
        for sampler, overlap in runs:
            n = cfg.tpe_trials_per_point if sampler == "tpe" else cfg.trials_per_point
            n = max(n, 4 * n_actors)
            spec = _spec(
                f"scale_{sampler}_{n_actors}", sampler, n_actors, n, FRAC, cfg.inflight_per_actor, overlap
            )
            try:
                r = farm_run(spec, f"{sampler}{n_actors}{'o' if overlap else ''}")
            except OutOfMemoryError as e:  # Ray's memory monitor killed workers: this count does not fit
                skipped.append(n_actors)
                print(f"[1] {n_actors} actors {sampler}: Ray killed workers for memory, so this and larger "
                      f"counts are skipped ({str(e).splitlines()[0][:160]})", flush=True)
                return rows, {"skipped": skipped + [a for a in cfg.actors if a > n_actors],
                              "mb_per_worker": per_actor_mb}
            t = r["timings"]
            done = r["outcome"].complete
            ci = r["rate_ci"]
            row = {
                "actors": n_actors,
                "sampler": sampler,
                "overlap_land": overlap,
                "trials": done,
                "trials_per_s": r["rate"],
                "lo": ci.lo if ci else None,
                "hi": ci.hi if ci else None,
                "startup_s": r["startup_s"],
                "ask_ms": 1e3 * t["ask"] / max(done, 1),
                "tell_ms": 1e3 * t["tell"] / max(done, 1),
                "land_ms": 1e3 * t["land"] / max(done, 1),
                "flush_ms": 1e3 * t["flush"] / max(done, 1),
                "trials_per_round": done / max(t["rounds"], 1),
                "driver_cpu_share": r["driver_cpu_share"],
                "load_avg": os.getloadavg()[0],
            }
            rows.append(row)
            print(
                f"[1] {n_actors:>3} actors {sampler:<6}{' overlap' if overlap else '        '} "
                f"{r['rate']:7.0f} trials/s"
                + (f" [{ci.lo:.0f}, {ci.hi:.0f}]" if ci else "")
                + f"  (ask {row['ask_ms']:.2f} tell {row['tell_ms']:.2f} land {row['land_ms']:.2f} "
                f"flush {row['flush_ms']:.2f} ms/trial, {row['trials_per_round']:.1f} trials/round, "
                f"start-up {r['startup_s']:.1f} s, driver CPU {r['driver_cpu_share']:.0%} of its wall "
                f"time, load {row['load_avg']:.1f})",
                flush=True,
            )
        pss = _worker_pss_mb()
        if pss and n_actors >= 4:
            per_actor_mb = float(np.mean(pss))
    return rows, {"skipped": skipped, "mb_per_worker": per_actor_mb}


def _worker_pss_mb() -> list[float]:
    """Proportional memory (PSS, MiB) of each Ray worker process started under this driver (the memory
    estimate: RSS counts the shared pages of torch & co once per process; USS, which the first
    version used, leaves out the process's share of them and let a 64-actor run be OOM-killed)."""
    try:
        import psutil
    except ImportError:
        return []
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "default_worker.py" in " ".join(p.cmdline()):
                out.append(p.memory_full_info().pss / 2**20)
        except (psutil.Error, TypeError):
            continue
    return out


def part_cluster(cfg: ScaleBenchConfig, num_cpus: int) -> dict[str, Any] | None:
    """One throughput row on a fake multi-node cluster; leaves a fresh local cluster connected."""
    if cfg.cluster_nodes < 2:
        return None
    import ray
    from ray.cluster_utils import Cluster

    from cluster.connect import connect
    from cluster.security import ensure_token

    ray.shutdown()
    ensure_token()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    per_node = -(-cfg.cluster_actors // (cfg.cluster_nodes - 1))
    for _ in range(cfg.cluster_nodes - 1):
        cluster.add_node(num_cpus=1, resources={"bench_scale_slot": per_node})
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        n = max(cfg.trials_per_point, 4 * cfg.cluster_actors)
        spec = _spec("scale_cluster", "random", cfg.cluster_actors, n, CLUSTER_FRAC, cfg.inflight_per_actor)
        r = farm_run(spec, "cluster")
        ci = r["rate_ci"]
        row = {
            "actors": cfg.cluster_actors,
            "sampler": f"random, {cfg.cluster_nodes}-node Cluster",
            "overlap_land": False,
            "trials": r["outcome"].complete,
            "trials_per_s": r["rate"],
            "lo": ci.lo if ci else None,
            "hi": ci.hi if ci else None,
            "startup_s": r["startup_s"],
        }
        print(
            f"[1] {cfg.cluster_nodes}-node Cluster, {cfg.cluster_actors} actors on {cfg.cluster_nodes - 1} "
            f"worker nodes: {r['rate']:.0f} trials/s (start-up {r['startup_s']:.1f} s)",
            flush=True,
        )
        return row
    finally:
        ray.shutdown()
        cluster.shutdown()
        connect(num_cpus=num_cpus, local=True, log_to_driver=False)


# -- part 2 -----------------------------------------------------------------------------------
def _study_loop(sampler: str, n: int, run_dir: Path, buffered: bool) -> dict[str, Any]:
    """The driver's study calls, in-process: (enqueue,) ask, seed attribute, tell, journal append."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from cluster.search import BufferedJournal, WaitingIndexStorage, distributions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = run_dir / "optuna.journal"
    backend = BufferedJournal(path) if buffered else JournalFileBackend(str(path))
    flush = backend.flush if buffered else (lambda: 0)
    smp = optuna.samplers.TPESampler(seed=0) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=0)
    # the driver's storage (queued trials indexed) and, for the plain run, Optuna's own
    storage = WaitingIndexStorage(backend) if buffered else JournalStorage(backend)
    study = optuna.create_study(study_name="s", storage=storage, sampler=smp)
    if sampler == "grid":
        dists = distributions(grid_space(n))
    else:
        dists = distributions({"x": ("float", 0.0, 4.0), "y": ("int", 0, 2)})
    window, queued, next_x, enqueue_s = 64, 0, 0, 0.0  # the driver's grid window (cluster/study.py)
    ask, tell, app = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        t0 = time.perf_counter()
        if sampler == "grid" and queued * 2 < window:
            while queued < window and next_x < n:
                point = {"x": next_x % 50, "y": next_x // 50}
                study.enqueue_trial(point, user_attrs={"attempt": 1}, skip_if_exists=False)
                queued, next_x = queued + 1, next_x + 1
            enqueue_s += time.perf_counter() - t0
        queued -= sampler == "grid"
        trial = study.ask(fixed_distributions=dists)
        trial.set_user_attr("seed", i)
        t1 = time.perf_counter()
        study.tell(trial, (trial.params["x"] - 2.0) ** 2)
        t2 = time.perf_counter()
        flush()
        t3 = time.perf_counter()
        ask[i], tell[i], app[i] = t1 - t0, t2 - t1, t3 - t2
    return {
        "ask": ask,
        "tell": tell,
        "append": app,
        "enqueue_s": enqueue_s,
        "path": path,
        "bytes": path.stat().st_size,
    }


def part_growth(cfg: ScaleBenchConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from cluster.search import BufferedJournal

    rows, extra = [], {}
    plans = [(s, cfg.tpe_trials if s == "tpe" else cfg.study_trials, True) for s in cfg.samplers]
    plans.append(("random", cfg.plain_trials, False))
    for sampler, n, buffered in plans:
        d = Path(tempfile.mkdtemp(prefix="bench-scale-growth-"))
        r = _study_loop(sampler, n, d, buffered)
        total = r["ask"] + r["tell"] + r["append"]
        early, late = slice(50, 150), slice(n - 100, n)
        # growth of ask + tell (the part that can grow with the study); the append is one fsync,
        # independent of the study's size and dominated by the disk (printed beside it)
        cpu = r["ask"] + r["tell"]
        ratio = _ratio_ci(cpu[early], cpu[late])
        label = sampler + ("" if buffered else " (plain JournalFileBackend)")
        row = {
            "sampler": label,
            "trials": n,
            "ask_ms_100": 1e3 * r["ask"][early].mean(),
            "tell_ms_100": 1e3 * r["tell"][early].mean(),
            "append_ms_100": 1e3 * r["append"][early].mean(),
            "total_ms_100": 1e3 * total[early].mean(),
            "ask_ms_end": 1e3 * r["ask"][late].mean(),
            "tell_ms_end": 1e3 * r["tell"][late].mean(),
            "append_ms_end": 1e3 * r["append"][late].mean(),
            "total_ms_end": 1e3 * total[late].mean(),
            "growth_ask_tell": ratio.value,
            "growth_lo": ratio.lo,
            "growth_total": total[late].mean() / total[early].mean(),
            "growth_hi": ratio.hi,
            "enqueue_s": r["enqueue_s"] if sampler == "grid" else None,
        }
        rows.append(row)
        print(
            f"[2] {label:<34} trial ~100: {row['total_ms_100']:.3f} ms (ask {row['ask_ms_100']:.3f} tell "
            f"{row['tell_ms_100']:.3f} append {row['append_ms_100']:.3f}); "
            f"trial ~{n}: {row['total_ms_end']:.3f} ms "
            f"-> ask+tell x{ratio.value:.2f} [{ratio.lo:.2f}, {ratio.hi:.2f}]"
            + (f"; enqueue (windows of 64) {r['enqueue_s']:.2f} s in all" if sampler == "grid" else ""),
            flush=True,
        )
        if buffered and sampler in ("random", "grid") and "reload_s" not in extra:
            import optuna
            from optuna.storages import JournalStorage

            t0 = time.perf_counter()
            study = optuna.load_study(study_name="s", storage=JournalStorage(BufferedJournal(r["path"])))
            n_loaded = len(study.get_trials(deepcopy=False))
            extra.update(
                reload_s=time.perf_counter() - t0, reload_trials=n_loaded, journal_mb=r["bytes"] / 2**20
            )
            print(
                f"[2] reload of a {n_loaded}-trial journal ({extra['journal_mb']:.1f} MiB): "
                f"{extra['reload_s']:.2f} s",
                flush=True,
            )
    return rows, extra


# -- part 3 -----------------------------------------------------------------------------------
def _sink_rows(n: int, cols: int, start: int = 0) -> list[dict[str, Any]]:
    extra = cols - 14  # the 14 base columns
    return [
        {
            "run_id": "bench",
            "sweep": "scale",
            "row_kind": "trial",
            "trial_number": start + i,
            "attempt": 1,
            "state": "COMPLETE",
            "seed": i,
            "ts_start": 0.0,
            "ts_end": 1.0,
            "params_json": "{}",
            **{f"m{j}": float(i + j) for j in range(extra)},
        }
        for i in range(n)
    ]


def part_sink(cfg: ScaleBenchConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import ray

    from actors.sink import ResultSink
    from cluster.resources import actor_options
    from cluster.results import _listed_parts, read_table

    rows = []
    for cols in (20, cfg.wide_cols):
        for batch in (1, 16, 256):
            n = min(cfg.sink_rows, 2000) if batch == 1 else cfg.sink_rows
            d = Path(tempfile.mkdtemp(prefix="bench-scale-sink-"))
            sink = ResultSink.options(**actor_options("sink_head")).remote(str(d), {}, roll_seconds=1e9)
            ray.get(sink.stats.remote())
            data = _sink_rows(n, cols)
            batches = [data[i : i + batch] for i in range(0, n, batch)]
            refs = [ray.put(b) for b in batches]
            t0 = time.perf_counter()
            for ref in refs:  # one append at a time, each waited for: what the driver does
                ray.get(sink.append.remote(ref))
            ray.get(sink.roll.remote())
            dt = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in _listed_parts(d))
            ray.get(sink.close.remote())
            ray.kill(sink)
            rows.append(
                {
                    "columns": cols,
                    "rows_per_append": batch,
                    "rows": n,
                    "rows_per_s": n / dt,
                    "MB_per_s": size / dt / 2**20,
                    "parquet_bytes_per_row": size / n,
                }
            )
            print(
                f"[3] sink {cols:>3} columns, {batch:>3} rows/append: {n / dt:9.0f} rows/s, "
                f"{size / dt / 2**20:6.2f} MB/s of Parquet",
                flush=True,
            )
    # delay from an append to the row being readable in a published part
    d = Path(tempfile.mkdtemp(prefix="bench-scale-delay-"))
    sink = ResultSink.options(**actor_options("sink_head")).remote(str(d), {}, roll_seconds=cfg.roll_seconds)
    ray.get(sink.stats.remote())
    delays = []
    for k in range(5):
        t0 = time.perf_counter()
        ray.get(sink.append.remote(_sink_rows(1, 20, start=k)))
        while True:  # the driver's loop calls maybe_roll every 0.25 s; so does this one
            ray.get(sink.maybe_roll.remote())
            numbers = read_table(d, include_live=False).column("trial_number").to_pylist()
            if k in numbers:
                break
            time.sleep(0.25)
        delays.append(time.perf_counter() - t0)
    ray.get(sink.close.remote())
    ray.kill(sink)
    print(
        f"[3] append -> readable in a part (roll_seconds={cfg.roll_seconds:g}): "
        f"max {max(delays):.2f} s, mean {np.mean(delays):.2f} s over {len(delays)} rows",
        flush=True,
    )
    # parts per 10,000 rows for a trickle of one row per roll
    trickle = {}
    for label, after in (("no compaction", 0), ("compaction", 8)):
        d = Path(tempfile.mkdtemp(prefix="bench-scale-trickle-"))
        sink = ResultSink.options(**actor_options("sink_head")).remote(
            str(d), {}, roll_rows=1, roll_seconds=1e9, compact_rows=50_000, compact_after=after
        )
        for i in range(cfg.trickle_rows):
            ray.get(sink.append.remote(_sink_rows(1, 20, start=i)))
        stats = ray.get(sink.close.remote())
        ray.kill(sink)
        parts = len(_listed_parts(d))
        n_read = read_table(d).num_rows
        trickle[label] = {"parts": parts, "rows": n_read, "compactions": stats["compactions"]}
        print(
            f"[3] trickle of {cfg.trickle_rows} rows, one per roll, {label}: {parts} parts "
            + (
                f"(-> {parts * 10_000 / cfg.trickle_rows:.0f} parts per 10,000 such rows"
                if not after
                else f"(bounded: <= ceil(rows / 50,000) + {after} + 1 at any size"
            )
            + f"; rows read back {n_read})",
            flush=True,
        )
    return rows, {"delay_max_s": max(delays), "delay_mean_s": float(np.mean(delays)), "trickle": trickle}


# -- part 4 -----------------------------------------------------------------------------------
def _tune_run(n: int, concurrent: int, searcher: str, load: float = 0.0, sleep: float = 0.0) -> float:
    from ray import tune

    from actors.toy_task import ToyTask, ToyTaskConfig

    def trainable(config):
        task = ToyTask(ToyTaskConfig(load_seconds=load, sleep=sleep))
        out = task.evaluate({"x": config["x"], "y": config["y"]}, seed=0, trial=0, chunk=0, n_chunks=1)
        tune.report({"loss": out["objectives"]["loss"]})

    kwargs: dict[str, Any] = {"num_samples": n, "max_concurrent_trials": concurrent}
    if searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        kwargs["search_alg"] = OptunaSearch(metric="loss", mode="min", seed=0)
    else:
        kwargs.update(metric="loss", mode="min")
    cpu = 1.0 if concurrent <= 2 else 2.0 / concurrent
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpu}),
        param_space={"x": tune.uniform(0.0, 4.0), "y": tune.randint(0, 3)},
        tune_config=tune.TuneConfig(**kwargs),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="bench-scale-tune-"), verbose=0),
    )
    tuner.fit()
    return time.perf_counter() - t0


def part_tune(cfg: ScaleBenchConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = []
    for concurrent in (1, cfg.tune_many):
        spec = _spec(f"scale_vs_tune{concurrent}", "random", concurrent, cfg.tune_trials, FRAC, 1)
        farm = farm_run(spec, f"tune{concurrent}")["total_s"]
        row = {"concurrent": concurrent, "trials": cfg.tune_trials, "farm_s": farm}
        if cfg.tune:
            row["tune_optuna_s"] = _tune_run(cfg.tune_trials, concurrent, "optuna")
            row["tune_basic_s"] = _tune_run(cfg.tune_trials, concurrent, "basic")
            row["optuna_vs_farm"] = row["tune_optuna_s"] / farm
            row["basic_vs_farm"] = row["tune_basic_s"] / farm
        rows.append(row)
        print(
            f"[4] zero-cost, {cfg.tune_trials} trials, {concurrent} at once: farm {farm:.1f} s"
            + (
                f", Tune+OptunaSearch {row['tune_optuna_s']:.1f} s ({row['optuna_vs_farm']:.1f}x), "
                f"Tune basic "
                f"{row['tune_basic_s']:.1f} s ({row['basic_vs_farm']:.1f}x)"
                if cfg.tune
                else ", Tune skipped"
            ),
            flush=True,
        )
    from sweeps.bench_farm import bench_model_load, bench_overhead

    overheads = {}
    for label, study in OVERHEAD_SETTINGS.items():  # side by side: defaults, then the fast settings
        o = bench_overhead(cfg.overhead_trials, **study)
        print(
            f"[4] ~1 ms objective, 1 actor, {label}: farm {o['farm_ms']:.2f} ms/trial, bare "
            f"{o['bare_ms']:.2f} -> overhead {o['overhead_ms']:.2f} ms/trial",
            flush=True,
        )
        overheads[label] = _overhead_estimate(o)
    m = bench_model_load(cfg.load_trials, 0.5, cfg.tune)
    print(
        f"[4] {cfg.load_trials} trials with a 0.5 s model load, 2 at once: farm {m['farm_s']:.1f} s, Tune "
        f"{m['tune_s']:.1f} s -> farm {m['farm_vs_tune']:.1f}x faster",
        flush=True,
    )
    return rows, {"overhead": overheads, "load": m}


# the overhead part's settings: the defaults, and what a study of millisecond trials would set
OVERHEAD_SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "inflight_per_actor=2, overlap_land": {"inflight_per_actor": 2, "overlap_land": True},
}


def _overhead_estimate(o: dict[str, Any]) -> Estimate:
    """Mean farm time between completions minus the bare call's mean, bootstrap CI over completions."""
    bare = o["bare_each_ms"].mean()
    boot = bootstrap_ci(o["farm_each_ms"], np.mean, n_boot=1000)
    return Estimate(
        o["farm_each_ms"].mean() - bare, boot.lo - bare, boot.hi - bare, boot.n, 0.95,
        "percentile bootstrap over completions",
    )


# -- part 5 -----------------------------------------------------------------------------------
def part_memory(cfg: ScaleBenchConfig, n_actors: int) -> dict[str, Any]:
    import ray

    marks: dict[int, float] = {}
    sink_marks: dict[int, float] = {}
    holder: dict[str, Any] = {}

    def on_progress(outcome):
        if outcome.complete in (1000, cfg.rss_trials) and outcome.complete not in marks:
            marks[outcome.complete] = _rss_mb()
            if "sink" in holder:
                sink_marks[outcome.complete] = ray.get(holder["sink"].stats.remote())["rss_mb"]

    from cluster.study import StudyRunner

    spec = _spec("scale_memory", "random", n_actors, cfg.rss_trials, FRAC, cfg.inflight_per_actor)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-scale-rss-"))
    runner = StudyRunner(spec, run_dir, "rss", progress=False)
    holder["sink"] = runner.sink
    t0 = time.perf_counter()
    outcome = runner.run(on_progress=on_progress)
    dt = time.perf_counter() - t0
    out = {
        "trials": outcome.complete,
        "driver_mb": marks,
        "sink_mb": sink_marks,
        "seconds": dt,
        "rate": outcome.complete / dt,
    }
    print(
        f"[5] {outcome.complete} trials, {n_actors} actors ({out['rate']:.0f} trials/s end to end): "
        "driver RSS "
        + ", ".join(f"{v:.0f} MiB at {k}" for k, v in sorted(marks.items()))
        + "; sink RSS "
        + ", ".join(f"{v:.0f} MiB at {k}" for k, v in sorted(sink_marks.items())),
        flush=True,
    )
    return out


# -- the bench --------------------------------------------------------------------------------
def body(run: BenchRun) -> dict[str, Any]:
    cfg: ScaleBenchConfig = run.config
    import ray

    from cluster.connect import connect

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    owned = not ray.is_initialized()
    num_cpus = run.num_cpus or 2
    info = connect(num_cpus=num_cpus, dashboard=run.dashboard, local=True, log_to_driver=False)
    load0 = os.getloadavg()[0]
    print(
        f"ray: {info.nodes} node(s), {info.cpus:g} CPU; {os.cpu_count()} cores here, "
        f"load average {load0:.1f} "
        "(every number below is from this machine as shared at the time)",
        flush=True,
    )
    try:
        growth, g = part_growth(cfg)
        sink_rows, sk = part_sink(cfg)
        thr, th = part_throughput(cfg)
        mem_actors = max([a for a in cfg.actors if a not in th["skipped"]][-1:] + [1])
        mem = part_memory(cfg, min(mem_actors, 64))
        tune_rows, tu = part_tune(cfg)
        cl = part_cluster(cfg, num_cpus)
        if cl is not None:
            thr.append(cl)
    finally:
        if owned:
            ray.shutdown()
    run.table(
        "scale_throughput",
        thr,
        "1. driver throughput, zero-cost objective (one run per row; "
        "interval: bootstrap over gaps between completions)",
    )
    run.table(
        "scale_growth", growth, "2. cost per trial as the study grows (in-process; growth = end / ~100)"
    )
    run.table(
        "scale_sink", sink_rows, "3. sink throughput into Parquet (ResultSink actor, appends waited for)"
    )
    run.table("scale_tune", tune_rows, "4. farm vs Ray Tune, zero-cost objective (one run each)")

    # targets
    t64_all = [r for r in thr if r["actors"] == 64 and r["sampler"] in ("random", "grid")]
    t64 = [r for r in t64_all if not r["overlap_land"]]
    t64o = [r for r in t64_all if r["overlap_land"]]
    grow = {r["sampler"]: r for r in growth}
    targets = []

    def target(name: str, value: Any, goal: str, met: bool | None, note: str = "") -> None:
        verdict = "not measured" if met is None else ("met" if met else "not met")
        targets.append({"target": name, "value": value, "goal": goal, "verdict": verdict, "note": note})
        print(
            f"target {name}: {value} (goal {goal}) -> {verdict}" + (f"  [{note}]" if note else ""), flush=True
        )

    print()
    if t64:
        for suffix, group in (("", t64), ("_overlap_land", t64o)):
            if group:
                worst = min(group, key=lambda r: r["trials_per_s"])
                target(
                    f"driver_64_actors_trials_per_s{suffix}",
                    f"{worst['trials_per_s']:.0f} ({worst['sampler']})",
                    ">= 500",
                    worst["trials_per_s"] >= 500,
                    "the slower of grid and random",
                )
    else:
        best = max(
            (r for r in thr if isinstance(r["actors"], int) and "Cluster" not in str(r["sampler"])),
            key=lambda r: r["actors"],
        )
        target(
            "driver_64_actors_trials_per_s",
            f"{best['trials_per_s']:.0f} at {best['actors']} actors",
            ">= 500 at 64",
            None,
            "64 actors not in this run (--quick)",
        )
    for s in ("grid", "random"):
        if s in grow:
            r = grow[s]
            target(
                f"growth_{s}",
                f"x{r['growth_ask_tell']:.2f} [{r['growth_lo']:.2f}, {r['growth_hi']:.2f}] at {r['trials']}",
                "<= 2 at 10,000",
                r["growth_hi"] <= 2.0 if r["trials"] >= 10_000 else None,
                "" if r["trials"] >= 10_000 else f"measured to {r['trials']} trials only",
            )
    if "tpe" in grow:
        r = grow["tpe"]
        target(
            "growth_tpe",
            f"x{r['growth_ask_tell']:.2f} at {r['trials']}",
            "report",
            None,
            "reported, no target",
        )
    s20 = max(r["rows_per_s"] for r in sink_rows if r["columns"] == 20)
    target("sink_rows_per_s_20_cols", f"{s20:.0f}", ">= 20,000", s20 >= 20_000)
    target(
        "readable_within_s",
        f"{sk['delay_max_s']:.2f}",
        f"<= 2 (roll_seconds={cfg.roll_seconds:g})",
        sk["delay_max_s"] <= 2.0,
    )
    for i, (label, over) in enumerate(tu["overhead"].items()):
        target(
            "overhead_ms_1ms_objective" + ("" if i == 0 else "_fast"),
            f"{over.value:.2f} [{over.lo:.2f}, {over.hi:.2f}]",
            "<= 5",
            over.hi <= 5.0,
            label,
        )
    over, over_fast = tu["overhead"].values()
    lt = tu["load"]["farm_vs_tune"]
    target(
        "farm_vs_tune_model_load",
        f"{lt:.1f}x",
        ">= 10",
        None if not np.isfinite(lt) else lt >= 10,
        "" if cfg.tune else "Tune skipped",
    )
    d = mem["driver_mb"]
    if 1000 in d and cfg.rss_trials in d:
        growth_mb = d[cfg.rss_trials] - d[1000]
        target(
            "driver_rss_flat",
            f"{d[1000]:.0f} -> {d[cfg.rss_trials]:.0f} MiB ({cfg.rss_trials} trials)",
            "flat (<= +25%)",
            growth_mb <= 0.25 * d[1000],
        )
    sm = mem["sink_mb"]
    if 1000 in sm and cfg.rss_trials in sm:
        target(
            "sink_rss_flat",
            f"{sm[1000]:.0f} -> {sm[cfg.rss_trials]:.0f} MiB",
            "flat (<= +25%)",
            sm[cfg.rss_trials] - sm[1000] <= 0.25 * sm[1000],
        )
    tr = sk["trickle"]
    target(
        "parts_bounded",
        f"{tr['compaction']['parts']} parts for {cfg.trickle_rows} one-row rolls "
        f"(without compaction {tr['no compaction']['parts']})",
        "<= ceil(rows/50000)+8+1",
        tr["compaction"]["parts"] <= 10,
    )
    run.table("targets", targets, "targets of issue 20")
    _plot(thr, growth, sink_rows, run.path("scale.png"))
    best64 = {
        r["sampler"] + ("_overlap" if r.get("overlap_land") else ""): r["trials_per_s"]
        for r in thr
        if r["actors"] == max(cfg.actors)
    }
    summary: dict[str, Any] = {
        f"tps_{max(cfg.actors)}_{k.split(',')[0]}": f"{v:.0f}" for k, v in best64.items()
    }
    summary.update(
        {
            "load_avg_start": f"{load0:.1f}",
            "load_avg_end": f"{os.getloadavg()[0]:.1f}",
            "reload_s": f"{g.get('reload_s', float('nan')):.2f}",
            "reload_trials": g.get("reload_trials", 0),
            "sink_rows_per_s": f"{s20:.0f}",
            "readable_s": f"{sk['delay_max_s']:.2f}",
            "overhead_ms": f"{over.value:.2f}",
            "overhead_ms_fast": f"{over_fast.value:.2f}",
            "farm_vs_tune_load": f"{lt:.1f}",
            "targets_met": sum(t["verdict"] == "met" for t in targets),
            "targets_not_met": sum(t["verdict"] == "not met" for t in targets),
            "targets_not_measured": sum(t["verdict"] == "not measured" for t in targets),
        }
    )
    for s in ("grid", "random", "tpe"):
        if s in grow:
            summary[f"growth_{s}"] = f"{grow[s]['growth_ask_tell']:.2f}"
    if cl is not None:
        summary["tps_cluster"] = f"{cl['trials_per_s']:.0f}"
    return summary


def _plot(thr, growth, sink_rows, path: Path) -> None:
    from methods.plotting import new_figure, save_figure

    fig, axes = new_figure(1, 3, figsize=(14, 4))
    lines = sorted({(r["sampler"], r["overlap_land"]) for r in thr if "Cluster" not in str(r["sampler"])})
    for s, ov in lines:
        pts = sorted(
            (r["actors"], r["trials_per_s"]) for r in thr if r["sampler"] == s and r["overlap_land"] == ov
        )
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ls="--" if ov else "-",
                     label=s + (" overlap_land" if ov else ""))
    for r in thr:
        if "Cluster" in str(r["sampler"]):
            axes[0].plot(
                [r["actors"]], [r["trials_per_s"]], marker="*", ms=12, ls="", label="Cluster (random)"
            )
    axes[0].axhline(500, color="gray", ls=":", label="target 500/s")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("actors")
    axes[0].set_ylabel("trials/s (zero-cost objective)")
    axes[0].legend(fontsize=8)
    labels = [r["sampler"].replace(" (plain JournalFileBackend)", "\n(plain)") for r in growth]
    x = np.arange(len(growth))
    axes[1].bar(x - 0.2, [r["total_ms_100"] for r in growth], 0.4, label="trial ~100")
    axes[1].bar(x + 0.2, [r["total_ms_end"] for r in growth], 0.4, label="last 100 trials")
    axes[1].set_xticks(x, labels, fontsize=8)
    axes[1].set_ylabel("ms per trial (ask + tell + append)")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=8)
    for cols in sorted({r["columns"] for r in sink_rows}):
        pts = [(r["rows_per_append"], r["rows_per_s"]) for r in sink_rows if r["columns"] == cols]
        axes[2].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{cols} columns")
    axes[2].axhline(20_000, color="gray", ls=":", label="target 20k rows/s")
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("rows per append")
    axes[2].set_ylabel("rows/s into Parquet")
    axes[2].legend(fontsize=8)
    for ax, title in zip(axes, ("driver throughput", "cost per trial vs study size", "sink"), strict=True):
        ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in argv:
        import json

        argv.remove("--quick")
        quick = [f"{k}={json.dumps(v)}" for k, v in QUICK.items()]
        argv = [a for kv in quick for a in ("--set", kv)] + argv
    return run_bench(
        argv,
        bench="bench_scale",
        description=__doc__.splitlines()[0],
        config_cls=ScaleBenchConfig,
        body=body,
        **shorthands(Shorthand("--trials", "trials_per_point", int, "trials per part-1 run")),
    )


if __name__ == "__main__":
    sys.exit(main())
