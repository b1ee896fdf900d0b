"""TTAQ stream sweep: stream order and resumability (pure and through the farm with a killed actor),
and streaming (stream rows land in Parquet parts while the streams still run)."""
from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest
from task_hooks import Faults, with_faults

from actors.tta_stream import TTAStreamTask, TTAStreamTaskConfig
from methods.errors import ConfigError

SMALL = dict(corruptions=("gaussian_noise", "contrast"), batch_size=16, batches_per_domain=4, calib_images=64,
             ptq_iters=0, n_batches=2)


def run_chunks(task, params, chunks, n_chunks, checkpoint=None, trial=0):
    rows, out = [], None
    for c in chunks:
        out = task.evaluate(params, seed=1, trial=trial, chunk=c, n_chunks=n_chunks,
                            checkpoint=checkpoint if c == chunks[0] else None)
        rows += out["rows"]
    return rows, out


@pytest.mark.parametrize("tta", ["tent", "cotta"])
def test_resumed_stream_equals_uninterrupted_and_keeps_order(tta):
    cfg = TTAStreamTaskConfig(**SMALL)
    params = {"stream_seed": 0, "bits": "W4A4", "tta": tta, "ttaq": "abl", "label_order": "imbalanced"}
    task = TTAStreamTask(cfg)
    full, last = run_chunks(task, params, [0, 1, 2, 3], 4)
    assert [r["batch_index"] for r in full] == list(range(8))  # stream order, every batch once
    assert [r["domain"] for r in full] == ["gaussian_noise"] * 4 + ["contrast"] * 4
    assert set(last["objectives"]) == {"mean_error"} and 0 <= last["objectives"]["mean_error"] <= 1
    head, mid = run_chunks(TTAStreamTask(cfg), params, [0, 1], 4)
    # a fresh actor (new process in the farm) resumes from the checkpoint of the last landed chunk
    tail, last2 = run_chunks(TTAStreamTask(cfg), params, [2, 3], 4, checkpoint=mid["checkpoint"], trial=7)
    assert [r["batch_index"] for r in head + tail] == list(range(8))
    for a, b in zip(full, head + tail, strict=True):
        assert (a["batch_error"], a["entropy"]) == pytest.approx((b["batch_error"], b["entropy"]), abs=1e-6)
    assert last2["objectives"]["mean_error"] == pytest.approx(last["objectives"]["mean_error"], abs=1e-9)


def test_later_chunk_without_state_is_refused_and_bad_params_explain():
    task = TTAStreamTask(TTAStreamTaskConfig(**SMALL))
    from methods.errors import CheckpointError

    with pytest.raises(CheckpointError, match="checkpoint"):
        task.evaluate({"bits": "W4A4"}, seed=0, trial=0, chunk=2, n_chunks=4)
    with pytest.raises(ConfigError, match=r"w<W>a<A>.*got '4bit'"):
        task.evaluate({"bits": "4bit"}, seed=0, trial=1, chunk=0, n_chunks=4)
    with pytest.raises(ConfigError, match="calib_path"):
        TTAStreamTaskConfig(source="cifar10c", root="/nowhere")


def _stream_rows(run_dir, include_live=False):
    from cluster.results import read_table

    try:
        table = read_table(run_dir, include_live=include_live)
    except Exception:  # no part published yet
        return []
    return [r for r in table.to_pylist() if r.get("row_kind") == "stream"]


def test_farm_stream_lands_rows_while_running_and_resumes_after_actor_death(ray_local, tmp_path):
    """One farm run, two streams on two actors: the first time any stream reaches chunk 2 its actor
    process exits (os._exit); the retried trial resumes from the checkpoint of its last landed chunk.
    Meanwhile a reader polls the published Parquet parts and sees the stream rows grow."""
    from cluster.rundir import create_run_dir
    from cluster.study import StudyRunner
    from sweeps.ttaq_stream import TTAQStreamConfig, build_spec, report

    marker = tmp_path / "markers"
    marker.mkdir()
    task = TTAStreamTaskConfig(**{**SMALL, "batches_per_domain": 5, "n_batches": 2})
    # 0.5 s per chunk of 2 batches: the rows land part by part while the streams run
    faults = Faults(marker_dir=str(marker), crash_chunk=2, marker="tta_stream_crashed", chunk_sleep=0.5)
    cfg = TTAQStreamConfig(task=task, bits=("W4A4",), tta=("tent",), ttaq=("none", "pem+pcr+abl"),
                           label_orders=("imbalanced",))
    cfg = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, actors=2))
    run_dir = create_run_dir(tmp_path, "ttaq_stream", "live")
    runner = StudyRunner(with_faults(build_spec(cfg), faults), run_dir, "live", progress=False,
                         sink_roll_seconds=0.5)
    counts: list[int] = []
    done = threading.Event()

    def poll():
        while not done.is_set():
            counts.append(len(_stream_rows(run_dir)))
            time.sleep(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        outcome = runner.run()
    finally:
        done.set()
        thread.join()
    assert outcome.complete == 2 and outcome.retried == 1
    assert (marker / "tta_stream_crashed").exists()
    rows = _stream_rows(run_dir)
    by_config: dict[str, list[int]] = {}
    for r in rows:
        by_config.setdefault(r["params_json"], []).append(r["batch_index"])
    assert len(by_config) == 2
    for batches in by_config.values():
        assert sorted(batches) == list(range(10))  # every batch exactly once, crash or not
    resumed = [r for r in rows if r["attempt"] == 2]
    assert resumed and min(r["batch_index"] for r in resumed) == 4  # after the 2 landed chunks
    during = sorted({c for c in counts if 0 < c < len(rows)})
    assert len(during) >= 2, f"expected growing partial row counts while streams ran, saw {counts}"
    extras = report(run_dir, cfg, outcome)
    assert extras["duplicate_batches"] == 0 and extras["stream_rows"] == 20
    assert (run_dir / "per_domain_error.png").exists()


@pytest.mark.slow
def test_cli_sweep_end_to_end_with_killed_actor(ray_local, tmp_path, capsys, monkeypatch):
    from sweeps import ttaq_stream
    from sweeps.ttaq_stream import main

    marker = tmp_path / "markers"
    marker.mkdir()
    faults = Faults(marker_dir=str(marker), crash_chunk=2, marker="tta_stream_crashed")
    build_spec = ttaq_stream.build_spec
    monkeypatch.setattr(ttaq_stream, "build_spec", lambda cfg: with_faults(build_spec(cfg), faults))
    sets = ['bits=["W4A4"]', 'tta=["tent"]', 'ttaq=["none", "pem+pcr+abl"]', 'label_orders=["balanced"]',
            "study.actors=2"]
    sets += [f"task.{k}={json.dumps(v)}" for k, v in SMALL.items()]
    argv = ["--out", str(tmp_path / "res"), "--no-progress", "--run-id", "crash"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("summary: ") and "complete=2" in summary and "retried=1" in summary
    assert "duplicate_batches=0" in summary and "stream_rows=16" in summary


@pytest.mark.slow  # builds and quantizes a 4.9M-parameter timm ResNet: ~10 s of CPU
def test_cifar10c_folder_and_user_timm_checkpoint_flags(tmp_path, capsys):
    """A CIFAR-10-C style folder + a user's timm checkpoint + clean calibration .npy, as the sweep's
    flags set them: the task streams the folder with the quantized user model; bad paths exit 2."""
    import numpy as np
    import timm
    from safetensors.torch import save_file

    from sweeps.ttaq_stream import TTAQStreamConfig, build_spec, main

    rng = np.random.default_rng(0)
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    for name in ("gaussian_noise", "contrast"):
        np.save(root / f"{name}.npy", rng.integers(0, 256, (5 * 8, 16, 16, 3), dtype=np.uint8))
    np.save(root / "labels.npy", np.tile(np.arange(4), 10))
    np.save(tmp_path / "clean.npy", rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    model = timm.create_model("resnet10t", num_classes=4, pretrained=False)
    save_file(model.state_dict(), str(tmp_path / "user.safetensors"))
    cfg = TTAStreamTaskConfig(source="cifar10c", root=str(root), corruptions=("gaussian_noise", "contrast"),
                              batch_size=4, batches_per_domain=0, calib_path=str(tmp_path / "clean.npy"),
                              calib_images=16, arch="resnet10t",
                              checkpoint=str(tmp_path / "user.safetensors"),
                              num_classes=4, ptq_iters=0, n_batches=2)
    spec = build_spec(TTAQStreamConfig(task=cfg, bits=("W8A8",), tta=("tent",), ttaq=("none",)))
    assert spec.study.n_chunks == 2  # 2 domains x 8 images / batch 4 = 4 batches, 2 per chunk
    task = TTAStreamTask(cfg)
    params = {"stream_seed": 0, "bits": "W8A8", "tta": "tent", "ttaq": "none", "label_order": "balanced"}
    rows, last = run_chunks(task, params, [0, 1], 2)
    assert [r["batch_index"] for r in rows] == [0, 1, 2, 3] and 0 <= last["objectives"]["mean_error"] <= 1
    code = main(["--source", "cifar10c", "--root", str(tmp_path / "missing"), "--calib", "x.npy",
                 "--out", str(tmp_path / "res"), "--no-progress"])
    assert code == 2 and "CIFAR-10-C style folder" in capsys.readouterr().err


def test_user_checkpoint_for_the_zoo_model_is_loaded_and_checked(tmp_path):
    import torch

    import sims.zoo.cnn_bn_digits as zoo

    model = zoo.build()
    torch.save(model.state_dict(), tmp_path / "mine.pth")
    task = TTAStreamTask(TTAStreamTaskConfig(**SMALL, checkpoint=str(tmp_path / "mine.pth")))
    for key, value in model.state_dict().items():
        assert torch.equal(task.fp.state_dict()[key], value)  # the user's weights, not the zoo's
    from methods.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no such file"):
        TTAStreamTask(TTAStreamTaskConfig(**SMALL, checkpoint=str(tmp_path / "absent.pth")))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        TTAStreamTask(TTAStreamTaskConfig(**SMALL, checkpoint=str(tmp_path / "other.pth")))
