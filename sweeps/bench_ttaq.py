"""Benchmark: TTAQ on digits-C continual streams — mean error for FP, PTQ+Tent and PTQ+TTAQ(+Tent),
and the stream rows/s the farm sustains with 1 and 2 stream actors.

    python sweeps/bench_ttaq.py                         # 3 seeds, w2a4 + w4a4, balanced + imbalanced
    python sweeps/bench_ttaq.py --seeds 1 --iters 30 --skip-farm
    python sweeps/bench_ttaq.py --seeds 2 --iters 2 --skip-farm --set 'bits=["w4a4"]' --set calib=64
    python sweeps/bench_ttaq.py --set source=textures --set 'kappa_signs=[1,-1]' --skip-farm

Accuracy part (pure Python, no Ray): per seed, 256 clean training digits calibrate (a per-seed draw),
the zoo's `cnn-bn-digits` is quantized with QDrop (`ttaq` PTQ with PEM/PCR off) and with TTAQ
(PEM + PCR on, our instantiation in methods/ttaq.py), `iters` reconstruction iterations per
block; each model is adapted online with Tent (BN affine, SGD 1e-3, momentum 0.9) over a continual
digits-C stream (8 corruptions at `severity`, batches of 32, 14 per domain, per-seed order and
noise), once class-balanced and once label-imbalanced (RoTTA Dirichlet order, alpha 0.1). Rows:
FP (no adaptation), FP+Tent, PTQ (no adaptation), PTQ+Tent, PTQ+TTAQ+Tent (PEM+PCR),
PTQ+TTAQ+Tent+ABL (all three parts). Mean error over domains, mean ± std over seeds. The paper
(TTAQ, arXiv:2412.09899) reports a 10.1-point lower mean error at 2 bits on ImageNet-C; this is a
tiny-scale check of direction only, and the table reports what is measured.

Farm part: the `ttaq_stream` sweep's task on the embedded local Ray (calibration-only PTQ so that
the actors stream rather than reconstruct) with 1 and then 2 `tta_stream_cpu1` actors, 4 streams
of 56 batches each; sustained rows/s = stream rows / (last chunk end − first chunk start), i.e.
without Ray start and actor start-up. `time_box` (default 480 s) stops adding seeds once the
projected time would exceed it and says so.

Common flags as for every sweep (`--config`, `--set`, `--out`, `--run-id`, `--dry-run`;
cluster/bench_cli.py); `source="textures"` runs the same protocol with `cnn-bn-textures` on
textures-C (FP ~0.75 clean: the digits bed is 99.6 % clean, too easy to separate methods — issue 13),
calibrating on clean textures-10 patches; `kappa_signs=[1,-1]` adds a row with ABL's difficulty term
negated (`PTQ+TTAQ(PEM+PCR+ABL-)+Tent`, claim `abl_neg_minus_ttaq_...`), the measurement of the
sign methods/ttaq.py could only infer. The knobs are the fields of `TTAQBenchConfig` (`--seeds`, `--iters` and
`--skip-farm` are shorthands). Writes bench.json, run.json, errors.csv/.md, farm.csv/.md,
claims.csv/.md, error_by_method.png and the farm part's study directories (bench_ttaq_farm/) into
results/bench_ttaq/<run_id>/; the last line is `summary: key=value ...`. Its paired effects
`ttaq_minus_ptq_<bits>_<order>_pts` (PTQ+TTAQ+Tent − PTQ+Tent) and `abl_minus_ttaq_..._pts` (+ABL −
without) are error points, mean±std over the seeds (negative: the first is better); with ≥ 2 seeds
each gets its 95% t-interval over seeds (`..._pts_lo`, `..._pts_hi`) and a verdict (`..._pts_verdict`:
`supported` only when the CI excludes 0, i.e. the two are distinguishable in either direction).
"""
from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/bench_ttaq.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from actors.tta_stream import DIGITS_C
from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands
from cluster.rundir import create_run_dir
from methods.errors import ConfigError
from methods.metrics.stats import paired_difference, spread_floor
from methods.quant.bits import canonical_bits_list, parse_bits
from methods.tta.stream import StreamAdapter
from methods.ttaq import TTAQ_BITS, ABLConfig, TTAQConfig, run_ttaq_ptq
from sims.data.digits import load_digits_split
from sims.data.digits_c import CorruptionStream, CorruptionStreamConfig

ORDERS = {"balanced": None, "imbalanced": 0.1}


def _textures_train() -> torch.Tensor:
    from sims.data.textures import load_textures_split

    return load_textures_split("train", 16)[0]


SOURCES = {  # source -> (zoo model, its clean training images for calibration)
    "digits": ("cnn-bn-digits", lambda: load_digits_split("train", 16)[0]),
    "textures": ("cnn-bn-textures", _textures_train),
}


@dataclass(frozen=True)
class TTAQBenchConfig:
    seeds: int = 3
    bits: tuple[str, ...] = ("w2a4", "w4a4")  # quantized bits specs, stored in canonical spelling
    iters: int = 60  # reconstruction iterations per block
    calib: int = 256  # clean training digits per seed
    severity: int = 3
    time_box: float = 480.0  # seconds for the whole bench
    farm: bool = True  # the farm part (1 and 2 stream actors on the embedded local Ray)
    source: str = "digits"  # digits: cnn-bn-digits on digits-C; textures: cnn-bn-textures on textures-C
    kappa_signs: tuple[float, ...] = (1.0,)  # ABL difficulty-term signs to run (+1 = the default row)
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"TTAQBenchConfig version must be 1; received {self.version}.")
        # canonical spelling ('w2a4') in rows and summary keys, whatever was typed
        object.__setattr__(self, "bits", canonical_bits_list(self.bits, **{**TTAQ_BITS, "fp": False}))
        if self.source not in SOURCES:
            raise ConfigError(f"source must be one of {list(SOURCES)}, got {self.source!r}.")
        signs = tuple(self.kappa_signs)
        if not signs or any(isinstance(k, bool) or k not in (1, -1) for k in signs):
            raise ConfigError(f"kappa_signs must be a non-empty list of +1 / -1, got {list(signs)}.")
        object.__setattr__(self, "kappa_signs", tuple(float(k) for k in signs))
        if self.seeds < 1 or self.iters < 1 or self.calib < 1 or self.time_box <= 0:
            raise ConfigError(f"need seeds, iters, calib >= 1 and time_box > 0; received seeds={self.seeds}, "
                              f"iters={self.iters}, calib={self.calib}, time_box={self.time_box}.")


def stream_batches(seed: int, severity: int, alpha: float | None, source: str = "digits") -> list[tuple]:
    """The whole stream as (domain, x, y) batches, computed once and shared by every method."""
    cfg = CorruptionStreamConfig(corruptions=DIGITS_C, severity=severity, batch_size=32, image_size=16,
                                 seed=seed, label_shift=alpha, batches_per_domain=14, source=source)
    return [(b.domain, b.x, b.y) for b in CorruptionStream(cfg)]


def mean_error(model: torch.nn.Module, batches, tta: str, abl: bool, seed: int,
               kappa_sign: float = 1.0) -> float:
    abl_config = ABLConfig(kappa_sign=kappa_sign) if abl else None
    adapter = StreamAdapter(copy.deepcopy(model), tta, 10, abl, seed, abl_config=abl_config)
    for domain, x, y in batches:
        adapter.step(x, y, domain)
    return adapter.mean_error()


def accuracy_part(
    args: TTAQBenchConfig, fp: torch.nn.Module, deadline: float
) -> tuple[list[dict[str, Any]], int]:
    x_train = SOURCES[args.source][1]()
    results: dict[tuple[str, str, str], list[float]] = {}
    seeds_done = 0
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        streams = {o: stream_batches(seed, args.severity, a, args.source) for o, a in ORDERS.items()}
        gen = torch.Generator().manual_seed(1000 + seed)
        calib = x_train[torch.randperm(len(x_train), generator=gen)[: args.calib]]

        def record(method: str, bits: str, model, tta: str, abl: bool = False, kappa_sign: float = 1.0,
                   streams=streams, seed=seed):
            for order, batches in streams.items():
                err = mean_error(model, batches, tta, abl, seed, kappa_sign)
                results.setdefault((method, bits, order), []).append(err)

        record("FP", "fp", fp, "none")
        record("FP+Tent", "fp", fp, "tent")
        for bits in args.bits:
            w, a = parse_bits(bits).wa
            base = dict(w_bits=w, a_bits=a, iters=args.iters, batch_size=32)
            qdrop = run_ttaq_ptq(fp, calib, TTAQConfig(**base, pem=False, pcr=False), seed).model
            ttaq = run_ttaq_ptq(fp, calib, TTAQConfig(**base, pem=True, pcr=True), seed).model
            record("PTQ", bits, qdrop, "none")
            record("PTQ+Tent", bits, qdrop, "tent")
            record("PTQ+TTAQ(PEM+PCR)+Tent", bits, ttaq, "tent")
            for sign in args.kappa_signs:
                record(ABL_ROWS[sign], bits, ttaq, "tent", abl=True, kappa_sign=sign)
        seeds_done += 1
        took = time.perf_counter() - t0
        print(f"seed {seed}: {took:.0f} s", flush=True)
        if seed + 1 < args.seeds and time.perf_counter() + took > deadline:
            print(f"time box: stopping after {seeds_done} seed(s)", flush=True)
            break
    rows = []
    for (method, bits, order), errs in results.items():
        std = statistics.stdev(errs) if len(errs) > 1 else 0.0
        rows.append({"method": method, "bits": bits, "order": order, "errors": errs,
                     "mean": statistics.mean(errs), "std": std})
    return rows, seeds_done


def farm_part(actor_counts: list[int], out_root: Path) -> list[dict[str, Any]]:
    import dataclasses

    import ray

    from actors.tta_stream import TTAStreamTaskConfig
    from cluster.connect import connect
    from cluster.results import read_table
    from cluster.study import StudyRunner
    from sweeps.ttaq_stream import TTAQStreamConfig, build_spec

    owned = not ray.is_initialized()
    connect(num_cpus=max(actor_counts), local=True, log_to_driver=False)
    out = []
    try:
        for n in actor_counts:
            task = TTAStreamTaskConfig(ptq_iters=0, n_batches=14, batches_per_domain=7)
            cfg = TTAQStreamConfig(task=task, stream_seeds=(0, 1), bits=("w4a4",), tta=("tent",),
                                   ttaq=("none",))
            cfg = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, actors=n))
            run_dir = create_run_dir(out_root, "bench_ttaq_farm", f"actors{n}-{int(time.time())}")
            outcome = StudyRunner(build_spec(cfg), run_dir, run_dir.name, progress=False).run()
            rows = read_table(run_dir).to_pylist()
            stream = [r for r in rows if r.get("row_kind") == "stream"]
            chunks = [r for r in rows if r.get("row_kind") in ("chunk", "trial") and r.get("ts_start")]
            span = max(r["ts_end"] for r in chunks) - min(r["ts_start"] for r in chunks)
            out.append({"actors": n, "streams": outcome.complete, "stream_rows": len(stream),
                        "span_s": span, "rows_per_s": len(stream) / span, "wall_s": outcome.seconds})
            print(f"farm: {n} actor(s): {len(stream)} stream rows in {span:.1f} s of streaming "
                  f"({len(stream) / span:.1f} rows/s; run wall {outcome.seconds:.1f} s)", flush=True)
    finally:
        if owned:
            ray.shutdown()
    return out


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, bits): mean and std of the error in % per label order."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        row = out.setdefault((r["method"], r["bits"]), {"method": r["method"], "bits": r["bits"]})
        row[f"{r['order']}_mean_pct"] = 100 * r["mean"]
        row[f"{r['order']}_std_pct"] = 100 * r["std"]
    return list(out.values())


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from methods.plotting import new_figure, save_figure

    fig, axes = new_figure(1, len(ORDERS), figsize=(12, 4), sharey=True)
    for ax, order in zip(axes, ORDERS, strict=True):
        sel = [r for r in rows if r["order"] == order]
        labels = [f"{r['method']}\n{r['bits']}" for r in sel]
        ax.bar(range(len(sel)), [100 * r["mean"] for r in sel], yerr=[100 * r["std"] for r in sel])
        ax.set_xticks(range(len(sel)), labels, rotation=70, fontsize=6)
        ax.set_title(f"{order} label order")
        ax.set_ylabel("mean error over domains (%)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def paired_errors(rows, bits: str, order: str, a: str, b: str) -> tuple[list[float], list[float]]:
    """Per-seed error points of method a and method b (same seeds, same streams: a paired design)."""
    get = {(r["method"], r["bits"], r["order"]): r["errors"] for r in rows}
    return [100 * x for x in get[(a, bits, order)]], [100 * y for y in get[(b, bits, order)]]


def delta(rows, bits: str, order: str, a: str, b: str) -> str:
    """Paired difference a − b in error points over the seeds: 'mean±std' (negative: a is better)."""
    xa, xb = paired_errors(rows, bits, order, a, b)
    diffs = [x - y for x, y in zip(xa, xb, strict=True)]
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return f"{statistics.mean(diffs):+.2f}±{std:.2f}"


CLAIMS = (  # summary key prefix, method a, method b, what is compared (a − b)
    ("ttaq_minus_ptq", "PTQ+TTAQ(PEM+PCR)+Tent", "PTQ+Tent", "TTAQ+Tent vs PTQ+Tent"),
    ("abl_minus_ttaq", "PTQ+TTAQ(PEM+PCR+ABL)+Tent", "PTQ+TTAQ(PEM+PCR)+Tent", "TTAQ+ABL vs TTAQ"),
    ("abl_neg_minus_ttaq", "PTQ+TTAQ(PEM+PCR+ABL-)+Tent", "PTQ+TTAQ(PEM+PCR)+Tent",
     "TTAQ+ABL(kappa sign -1) vs TTAQ"),
)
ABL_ROWS = {1.0: "PTQ+TTAQ(PEM+PCR+ABL)+Tent", -1.0: "PTQ+TTAQ(PEM+PCR+ABL-)+Tent"}


def body(run: BenchRun) -> dict[str, Any]:
    cfg: TTAQBenchConfig = run.config
    torch.set_num_threads(1)
    start = time.perf_counter()
    farm_reserve = 120.0 if cfg.farm else 0.0
    import sims.zoo  # noqa: F401  (registers the zoo)
    from sims.zoo.registry import load_zoo_model

    fp = load_zoo_model(SOURCES[cfg.source][0])
    rows, seeds_done = accuracy_part(cfg, fp, start + cfg.time_box - farm_reserve)
    run.table("errors", table_rows(rows), f"mean error over domains (%), mean ± std, {seeds_done} seed(s)")
    plot(rows, run.path("error_by_method.png"))
    farm = farm_part([1, 2], run.run_dir) if cfg.farm else []
    if farm:
        run.table("farm", farm, "farm: sustained stream rows/s with 1 and 2 stream actors")
    result = {"rows": rows, "farm": farm, "seeds_done": seeds_done}
    run.path("bench.json").write_text(json.dumps(result, indent=2))
    summary: dict[str, Any] = {"source": cfg.source, "seeds": seeds_done, "severity": cfg.severity,
                               "iters": cfg.iters}
    present = {r["method"] for r in rows}
    if seeds_done < 2:
        print("one seed: no intervals, no claims (run --seeds 2 or more)")
    for bits in cfg.bits:
        for order in ORDERS:
            for prefix, a, b, what in CLAIMS:
                if a not in present or b not in present:
                    continue
                key = f"{prefix}_{bits}_{order}_pts"
                summary[key] = delta(rows, bits, order, a, b)  # 'mean±std', as this key always read
                if seeds_done >= 2:
                    errors_a, errors_b = paired_errors(rows, bits, order, a, b)
                    est = paired_difference(errors_a, errors_b)
                    label = f"{what}, {bits} {order} (error points; negative: a is better)"
                    # noise floor: how far the baseline's error moves between stream seeds
                    fields = run.claim(key, est, spread_floor(errors_b), what=label)
                    summary.update({k: v for k, v in fields.items() if k != key})
    for f in farm:
        summary[f"rows_per_s_{f['actors']}actor"] = f"{f['rows_per_s']:.1f}"
    summary["seconds"] = f"{time.perf_counter() - start:.1f}"
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv,
        bench="bench_ttaq",
        description=__doc__.splitlines()[0],
        config_cls=TTAQBenchConfig,
        body=body,
        **shorthands(
            Shorthand("--seeds", "seeds", int, "number of seeds (calibration draw and stream order)"),
            Shorthand("--iters", "iters", int, "reconstruction iterations per block"),
            Shorthand("--skip-farm", "farm", const=False, help="skip the farm part"),
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
