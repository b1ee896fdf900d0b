"""Bad input through the whole command-line surface: exit 2, one paragraph, no traceback (issue 21, row 10).

Every `sweeps/*.py` entry point (sweeps and benches) and every `evfarm` subcommand runs in-process
with a table of bad inputs. Each must return exit status 2 before Ray starts (`ray.init` is
refused), print one paragraph on stderr (at most a few lines, no blank line, no "Traceback") that
contains the table's words, and leave the results root empty. `evfarm doctor` must exit 0.
"""

from __future__ import annotations

import importlib
import json
import shutil
import socket
from pathlib import Path

import pytest
from entry_points import ENTRY_POINTS

from methods.errors import CheckpointError

MAX_LINES = 6


@pytest.fixture
def no_ray(monkeypatch):
    """Refuse Ray starts: bad input must be refused before a cluster is started or joined."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("bad input reached ray.init")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


@pytest.fixture
def bad(tmp_path):
    """The bad inputs' files: a results root that must stay empty, and what goes wrong."""
    paths = {"root": tmp_path / "results", "scratch": tmp_path / "scratch"}
    paths["root"].mkdir()
    paths["scratch"].mkdir()
    paths["toml"] = paths["scratch"] / "broken.toml"
    paths["toml"].write_text("study = [unclosed\n")
    paths["missing"] = paths["scratch"] / "missing.toml"
    paths["notrun"] = paths["scratch"] / "not-a-run"
    paths["notrun"].mkdir()
    (paths["notrun"] / "notes.txt").write_text("no run.json here")
    paths["file"] = paths["scratch"] / "a-file"
    paths["file"].write_text("not a folder")
    return paths


def assert_one_paragraph(rc, err: str, words: tuple[str, ...]) -> None:
    assert rc == 2, f"exit {rc}, expected 2; stderr: {err}"
    text = err.strip()
    assert text, "no message on stderr"
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) <= MAX_LINES and "" not in (line.strip() for line in lines), text
    for word in words:
        assert word in text, f"{word!r} not in the message: {text}"


# (case, argv given the bad files, words a sweep's message holds, words a bench's message holds)
SWEEP_CASES = [
    ("unknown_key", lambda b: ["--set", "nonsense=1"], ("Unknown config key 'nonsense'",), None),
    ("zero_actors", lambda b: ["--set", "study.actors=0"], ("study.actors", ">= 1"), ("study.actors",)),
    ("bad_type", lambda b: ["--set", "study.actors=abc"], ("study.actors", "expected an integer", "'abc'"),
     ("study.actors",)),
    ("missing_config", lambda b: ["--config", str(b["missing"])], ("missing.toml", "does not exist"), None),
    ("malformed_toml", lambda b: ["--config", str(b["toml"])], ("broken.toml", "not valid TOML"), None),
    ("set_without_equals", lambda b: ["--set", "study.actors"], ("KEY=VALUE", "'study.actors'"), None),
    ("resume_non_run", lambda b: ["--resume", str(b["notrun"])], ("not-a-run", "not an evfarm run directory"),
     ("does not resume",)),
    ("out_is_a_file", lambda b: ["--out", str(b["file"])], ("a-file",), None),
]


@pytest.mark.parametrize("case", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_refuses_bad_input_with_one_paragraph(name, case, bad, no_ray, capsys):
    _, argv, sweep_words, bench_words = case
    module = importlib.import_module(f"sweeps.{name}")
    args = argv(bad)
    if "--out" not in args:
        args += ["--out", str(bad["root"])]
    rc = module.main([*args, "--no-progress"])
    words = bench_words if name.startswith("bench_") and bench_words is not None else sweep_words
    assert_one_paragraph(rc, capsys.readouterr().err, words)
    assert not any(bad["root"].iterdir()), f"{name} wrote into the results root"


# ---- evfarm subcommands -------------------------------------------------------------------------


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def weights_copy(tmp_path, monkeypatch):
    """A temporary copy of the committed zoo weights, with the registry pointed at it."""
    from sims.zoo import registry

    copy = tmp_path / "weights"
    shutil.copytree(registry.WEIGHTS_DIR, copy)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", copy)
    return copy


def _corrupt_card(folder: Path, name: str = "cnn-bn-digits") -> Path:
    card = folder / f"{name}.json"
    card.write_text(card.read_text()[: len(card.read_text()) // 2])  # a truncated write
    return card


def _plot_into_a_file(b):
    return ["roofline", "Llama-2-7b", "--hw", "nvidia_A100", "--plot", str(b["file"] / "roofline.png")]


EVFARM_CASES = [
    ("results_non_run", lambda b: ["results", str(b["notrun"])],
     ("not-a-run", "not an evfarm run directory")),
    ("results_missing", lambda b: ["results", str(b["scratch"] / "gone")], ("gone",)),
    ("zoo_train_unknown", lambda b: ["zoo", "train", "nonsense"], ("Unknown zoo model 'nonsense'",)),
    ("zoo_check_unknown", lambda b: ["zoo", "check", "cnn-bn-digit"], ("Did you mean 'cnn-bn-digits'",)),
    ("zoo_train_out_file", lambda b: ["zoo", "train", "cnn-bn-digits", "--out", str(b["file"])],
     ("a-file", "--out")),
    ("roofline_unknown", lambda b: ["roofline", "nonsense", "--hw", "nonsense"],
     ("Unknown model 'nonsense'",)),
    ("roofline_unknown_hw", lambda b: ["roofline", "Llama-2-7b", "--hw", "nonsense"],
     ("Unknown device 'nonsense'",)),
    ("roofline_plot_into_a_file", _plot_into_a_file, ("Cannot write the plot", "--plot")),
    ("cluster_down_unused", lambda b: ["cluster", "down", "--port", str(_unused_port())],
     ("No evfarm head node is recorded",)),
    ("cluster_status_unused", lambda b: ["cluster", "status", "--port", str(_unused_port())],
     ("No evfarm head node is recorded",)),
    ("cluster_up_bad_resources", lambda b: ["cluster", "up", "--resources", "{galvo_rig: 4"],
     ("--resources must be JSON",)),
]


@pytest.mark.parametrize("case", EVFARM_CASES, ids=[c[0] for c in EVFARM_CASES])
def test_every_evfarm_subcommand_refuses_bad_input_with_one_paragraph(case, bad, no_ray, capsys):
    from cluster import cli

    _, argv, words = case
    rc = cli.main(argv(bad))
    assert_one_paragraph(rc, capsys.readouterr().err, words)


def test_cluster_port_out_of_range_is_a_usage_error_not_a_ray_traceback(no_ray, capsys):
    from cluster import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["cluster", "up", "--port", "-3"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "expected a TCP port number" in err and "Traceback" not in err


def test_doctor_exits_0(no_ray, capsys):
    from cluster import cli

    assert cli.main(["doctor"]) == 0
    assert "Traceback" not in capsys.readouterr().err


# ---- row 10 regressions -------------------------------------------------------------------------


def test_row10_corrupted_card_json_is_a_checkpoint_error(weights_copy, no_ray, capsys):
    from cluster import cli
    from sims.zoo.registry import read_card

    card = _corrupt_card(weights_copy)
    with pytest.raises(CheckpointError) as exc:
        read_card("cnn-bn-digits")
    assert str(card) in str(exc.value) and "evfarm zoo train cnn-bn-digits" in str(exc.value)
    assert cli.main(["zoo", "check", "cnn-bn-digits"]) == 2  # the plain form, registry at the copy
    assert_one_paragraph(2, capsys.readouterr().err, ("cnn-bn-digits.json", "not readable JSON", "restore"))
    assert cli.main(["zoo", "list"]) == 0  # a listing still lists, and says which card is bad
    assert "(unreadable card)" in capsys.readouterr().out
    card.write_text(json.dumps({"test_top1": "high"}))  # valid JSON, but not a measured figure
    assert cli.main(["zoo", "check", "cnn-bn-digits"]) == 2
    assert_one_paragraph(2, capsys.readouterr().err, ("test_top1='high'", "expected a number"))
    card.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="holds a JSON list"):
        read_card("cnn-bn-digits")


class _Exploit:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_row10_pth_checkpoint_for_the_tta_stream_is_refused_typed(tmp_path, no_ray, capsys):
    import torch

    from actors.tta_stream import TTAStreamTaskConfig, load_source_model
    from sweeps import ttaq_stream

    marker = tmp_path / "executed"
    exploit = _Exploit()
    exploit.marker = marker
    evil = tmp_path / "evil.pth"
    torch.save({"weight": exploit}, evil)
    with pytest.raises(CheckpointError) as exc:
        load_source_model(TTAStreamTaskConfig(checkpoint=str(evil)))
    assert "weights_only=True" in str(exc.value) and "safetensors" in str(exc.value)
    assert not marker.exists(), "the pickle's payload ran"
    root = tmp_path / "results"
    root.mkdir()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    for path, words in ((evil, ("evil.pth", "UnpicklingError", "pickles objects other than tensors")),
                        (garbage, ("garbage.pth", "corrupted")),
                        (wrong, ("wrong.pth", "does not fit zoo model 'cnn-bn-digits'"))):
        for dry in ([], ["--dry-run"]):  # refused in the driver, before Ray and any run directory
            rc = ttaq_stream.main(["--checkpoint", str(path), *dry, "--out", str(root), "--no-progress"])
            assert_one_paragraph(rc, capsys.readouterr().err, words)
    assert not any(root.iterdir()) and not marker.exists()


def test_row10_bad_calibration_file_for_the_tta_stream_is_refused_typed(tmp_path, no_ray, capsys):
    import numpy as np

    from sweeps import ttaq_stream

    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(5))
    root = tmp_path / "results"
    root.mkdir()
    for path, words in ((flat, ("flat.npy", "shape (5,)")), (tmp_path / "absent.npy", ("absent.npy",))):
        rc = ttaq_stream.main(["--set", f"task.calib_path={json.dumps(str(path))}", "--out", str(root)])
        assert_one_paragraph(rc, capsys.readouterr().err, (*words, "calibration images"))
    assert not any(root.iterdir())
