"""The event-segmentation task: a trained SLTNet-family model scored on a live simulated event stream.

A task for the generic evaluator actor (profile `evaluator_cpu1`). It loads the committed zoo
weights once per (model, T, V_th, decay) and, per trial, opens the simulator's window iterator
(`sims.data.events.windows`, which never materialises the stream) with the trial's noise
settings; each chunk evaluates `windows_per_chunk` successive windows as they are generated,
returns one `row_kind="stream"` row per window (window mIoU, events, energy) and a checkpoint
(stream position, running confusion matrix, energy sums), so a retried trial resumes where its
last landed chunk ended. Objectives: `miou` (over all of the trial's windows, one confusion
matrix) and `energy_uj` (µJ per window, `methods.metrics.energy`). SLTNet: arXiv 2412.12843.

Trial params (every one optional): `kind` (sltnet | sltnet-ann | snn-baseline), `time_steps`,
`v_threshold`, `decay`, `stream_seed`, `shot_noise_hz`, `leak_noise_hz`, `threshold_mismatch`,
and `base` / `bins` with `train_steps` > 0 to train a fresh network of another width or voxel
bin count inside the trial (minutes; the zoo weights fix base 16 and 5 bins) [ours].

Bad input (a `ConfigError` each): a checkpoint whose classifier predicts another class count than
the simulator's 6 (e.g. an 11- or 19-class DSEC checkpoint) fails at actor start; an empty window,
events outside the sensor, time running backwards or a label map of the wrong size in the stream
fail the trial with the window's index and the stream seed in the message.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from actors.task import register_task
from methods.config_dict import ConfigDict
from methods.errors import CheckpointError, ConfigError
from methods.metrics.energy import measure_energy
from methods.metrics.segmentation import confusion_matrix, mean_iou
from methods.sltnet import LIF, SEG_MODELS

KINDS = tuple(SEG_MODELS.names())
SIM_PARAMS = ("shot_noise_hz", "leak_noise_hz", "threshold_mismatch")
MODEL_PARAMS = ("time_steps", "v_threshold", "decay")
N_CLASSES = 6  # sims.data.events.CLASS_NAMES (imported lazily with the simulator)


@dataclass(frozen=True)
class SegmentationTaskConfig(ConfigDict):
    """What every trial shares: the stream (held-out seed, window kind, length) and the defaults."""

    version: int = 1
    kind: str = "sltnet"
    stream_seed: int = 1000
    windows_per_trial: int = 8
    windows_per_chunk: int = 4
    window_mode: str = "duration"
    window_us: int = 50_000
    window_events: int = 2_000
    train_seeds: tuple[int, ...] = (0, 1)
    train_windows: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_seeds", tuple(self.train_seeds))
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}; received {self.kind!r}.")
        if self.windows_per_trial < 1 or self.windows_per_chunk < 1:
            raise ConfigError(f"windows_per_trial and windows_per_chunk must be >= 1; received "
                              f"{self.windows_per_trial}, {self.windows_per_chunk}.")
        if self.window_mode not in ("duration", "count"):
            raise ConfigError(f"window_mode must be 'duration' or 'count'; received {self.window_mode!r}.")

    @property
    def n_chunks(self) -> int:
        return -(-self.windows_per_trial // self.windows_per_chunk)


def _set_lif(model: torch.nn.Module, v_threshold: float, decay: float) -> None:
    for m in model.modules():
        if isinstance(m, LIF):
            m.v_threshold, m.decay = v_threshold, decay


@register_task("event_segmentation")
class EventSegmentationTask:
    def __init__(self, cfg: SegmentationTaskConfig) -> None:
        from sims.zoo import sltnet_events as zoo

        self.cfg, self.zoo = cfg, zoo
        self.states: dict[str, dict[str, torch.Tensor]] = {}
        self.models: dict[tuple, torch.nn.Module] = {}
        self.runs: dict[int, dict[str, Any]] = {}
        self._weights(cfg.kind)  # a missing or corrupt checkpoint fails at actor start, not mid-sweep

    def _weights(self, kind: str) -> dict[str, torch.Tensor]:
        from sims.zoo.registry import load_state_dict_file, weights_path

        name = {v: k for k, v in self.zoo.MODELS.items()}[kind]
        if name not in self.states:
            path = weights_path(name)
            state = load_state_dict_file(path)
            if "classifier.weight" not in state:
                raise CheckpointError(f"{path} has no classifier.weight: not an SLTNet-family checkpoint. "
                                      f"Restore it from git or retrain it (`evfarm zoo train {name}`).")
            classes = int(state["classifier.weight"].shape[0])
            if classes != N_CLASSES:
                from sims.data.events import CLASS_NAMES

                raise ConfigError(f"Checkpoint {path.name} predicts {classes} classes, but this task scores "
                                  f"the simulator's {N_CLASSES} ({', '.join(CLASS_NAMES)}). Expected a "
                                  f"{N_CLASSES}-class checkpoint: retrain it (`evfarm zoo train {name}`); "
                                  "an 11- or 19-class DSEC checkpoint needs DSEC windows (sims.data.dsec).")
            self.states[name] = state
        return self.states[name]

    def model(self, params: dict[str, Any], seed: int) -> torch.nn.Module:
        kind = params.get("kind", self.cfg.kind)
        if kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}; received {kind!r}.")
        over = {k: params[k] for k in MODEL_PARAMS if k in params}
        arch = {k: params[k] for k in ("base", "bins") if k in params}
        steps = int(params.get("train_steps", 0))
        key = (kind, tuple(sorted(over.items())), tuple(sorted(arch.items())), steps)
        if key not in self.models:
            self.models = {}  # one model per actor at a time keeps memory flat over a long sweep
            if steps > 0:  # another width / bin count: train it here, on the task's small data
                bins = int(arch.get("bins", self.zoo.BINS))
                data = self.zoo.event_dataset(self.cfg.train_seeds, self.cfg.train_windows, bins=bins)
                shape = {"base": int(arch.get("base", self.zoo.ARCH["base"])), "in_channels": bins}
                model, _ = self.zoo.fit(kind, seed % 2**31, steps, data, arch=shape)
                _set_lif(model, over.get("v_threshold", 1.0), over.get("decay", 0.25))
                if "time_steps" in over:
                    model.time_steps = int(over["time_steps"])
            else:
                if arch and any(arch[k] != {"base": self.zoo.ARCH["base"], "bins": self.zoo.BINS}[k]
                                for k in arch):
                    raise ConfigError(f"base/bins {arch} differ from the zoo weights (base "
                                      f"{self.zoo.ARCH['base']}, {self.zoo.BINS} bins); set train_steps > 0 "
                                      "to train such a network inside the trial.")
                model = self.zoo.build(kind, **over)
                try:
                    model.load_state_dict(self._weights(kind), strict=True)
                except RuntimeError as exc:
                    raise CheckpointError(f"zoo weights of {kind!r} do not fit: {exc}") from exc
            self.models[key] = model.eval()
        return self.models[key]

    def _start(self, params: dict[str, Any], seed: int, chunk: int,
               checkpoint: dict | None) -> dict[str, Any]:
        from sims.data.events import windows

        sim = dataclasses.replace(self.zoo.SENSOR, **{k: params[k] for k in SIM_PARAMS if k in params})
        bins = int(params.get("bins", self.zoo.BINS))
        seed_of_stream = int(params.get("stream_seed", self.cfg.stream_seed))
        stream = windows(sim, seed_of_stream, mode=self.cfg.window_mode,
                         duration_us=self.cfg.window_us, n_events=self.cfg.window_events,
                         n_windows=self.cfg.windows_per_trial)
        run = {"stream": stream, "sim": sim, "bins": bins, "seed": seed_of_stream, "position": 0,
               "energy_uj": 0.0,
               "confusion": np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64),
               "model": self.model(params, seed)}
        if chunk > 0:
            if checkpoint is None:
                raise CheckpointError(f"chunk {chunk} of a trial arrived without its stream state.")
            run.update(position=int(checkpoint["position"]), energy_uj=float(checkpoint["energy_uj"]),
                       confusion=np.asarray(checkpoint["confusion"], dtype=np.int64))
            for _ in range(run["position"]):  # the stream is deterministic: replay to the position
                next(stream)
        return run

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int,
                 checkpoint: dict | None = None) -> dict[str, Any]:
        from sims.data.event_repr import voxel_grid
        from sims.data.events import EventDataError, check_labels

        if trial not in self.runs or chunk == 0 or checkpoint is not None:
            self.runs = {trial: self._start(params, seed, chunk, checkpoint)}
        run = self.runs[trial]
        sim, model = run["sim"], run["model"]
        last = chunk == n_chunks - 1
        grids, labels, counts = [], [], []
        for window in run["stream"]:
            try:
                grids.append(voxel_grid(window.x, window.y, window.t, window.p, sim.height, sim.width,
                                        bins=run["bins"]))
                check_labels(window.labels, sim.height, sim.width, N_CLASSES)
            except EventDataError as exc:
                raise EventDataError(f"Window {run['position'] + len(labels)} of stream seed {run['seed']} "
                                     f"(trial {trial}): {exc}") from None
            labels.append(window.labels)
            counts.append(len(window))
            if not last and len(grids) == self.cfg.windows_per_chunk:
                break
        start = time.perf_counter()
        spiking = any(isinstance(m, LIF) for m in model.modules())
        report = measure_energy(model, torch.from_numpy(np.stack(grids)), "snn" if spiking else "ann",
                                spiking_types=(LIF,))
        seconds = time.perf_counter() - start
        preds = report.output.argmax(1).numpy()
        rows = []
        for i, (pred, lab) in enumerate(zip(preds, labels, strict=True)):
            cm = confusion_matrix(pred, lab, N_CLASSES)
            run["confusion"] += cm
            rows.append({"row_kind": "stream", "window": run["position"] + i, "window_miou": mean_iou(cm),
                         "events": counts[i], "energy_uj": report.energy_uj / len(labels)})
        run["position"] += len(labels)
        run["energy_uj"] += report.energy_uj
        miou = mean_iou(run["confusion"])
        if not last:
            return {"rows": rows, "intermediate": miou,
                    "checkpoint": {"position": run["position"], "energy_uj": run["energy_uj"],
                                   "confusion": run["confusion"].tolist()}}
        self.runs.pop(trial, None)
        return {"rows": rows, "objectives": {"miou": miou, "energy_uj": run["energy_uj"] / run["position"]},
                "metrics": {"firing_rate": report.mean_firing_rate, "windows": run["position"],
                            "macs_per_window": report.macs / len(labels),
                            "seconds_per_window": seconds / len(labels)}}
