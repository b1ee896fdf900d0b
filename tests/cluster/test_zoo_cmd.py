"""`evfarm zoo` sub-command: list, train into a folder, check against the card (ok / mismatch / bad input)."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from cluster import zoo_cmd
from sims.zoo.registry import WEIGHTS_DIR, card_path, weights_path


def _parse(argv):
    parser = argparse.ArgumentParser(prog="evfarm")
    zoo_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_list_shows_every_digits_model_with_its_card_value(capsys):
    assert zoo_cmd.run(_parse(["zoo", "list"])) == 0
    out = capsys.readouterr().out
    for name in ("cnn-bn-digits", "vit-digits", "digits-classifier", "ddpm-digits"):
        assert name in out
    card = json.loads(card_path("cnn-bn-digits").read_text())
    assert f"{card['test_top1']:.4f}" in out


def test_parser_dispatches_to_run():
    args = _parse(["zoo", "check", "cnn-bn-digits"])
    assert args.func is zoo_cmd.run and args.name == "cnn-bn-digits"
    with pytest.raises(SystemExit):
        _parse(["zoo"])  # an action is required


def test_train_writes_into_out_and_check_passes(tmp_path, capsys):
    assert (
        zoo_cmd.run(
            _parse(["zoo", "train", "cnn-bn-digits", "--out", str(tmp_path), "--seed", "1", "--steps", "30"])
        )
        == 0
    )
    assert "trained cnn-bn-digits" in capsys.readouterr().out
    assert weights_path("cnn-bn-digits", tmp_path).is_file()
    card = json.loads(card_path("cnn-bn-digits", tmp_path).read_text())
    assert card["seed"] == 1 and card["steps"] == 30
    assert zoo_cmd.run(_parse(["zoo", "check", "cnn-bn-digits", "--root", str(tmp_path)])) == 0
    assert capsys.readouterr().out.startswith("ok:")


def test_check_committed_classifier(capsys):
    assert zoo_cmd.run(_parse(["zoo", "check", "cnn-bn-digits"])) == 0
    assert "ok: cnn-bn-digits test_top1" in capsys.readouterr().out


def test_check_reports_mismatch_with_exit_1(tmp_path, capsys):
    for suffix in (".safetensors", ".json"):
        shutil.copy(WEIGHTS_DIR / f"cnn-bn-digits{suffix}", tmp_path)
    card = json.loads(card_path("cnn-bn-digits", tmp_path).read_text())
    card["test_top1"] = card["test_top1"] - 0.2  # a card that no longer describes the weights
    card_path("cnn-bn-digits", tmp_path).write_text(json.dumps(card))
    assert zoo_cmd.run(_parse(["zoo", "check", "cnn-bn-digits", "--root", str(tmp_path)])) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert zoo_cmd.run(_parse(["zoo", "check", "cnn-bn-digit"])) == 2
    assert "Did you mean 'cnn-bn-digits'" in capsys.readouterr().err
    assert zoo_cmd.run(_parse(["zoo", "check", "cnn-bn-digits", "--root", str(tmp_path)])) == 2
    assert "evfarm zoo train cnn-bn-digits" in capsys.readouterr().err
    shutil.copy(WEIGHTS_DIR / "cnn-bn-digits.json", tmp_path)
    weights_path("cnn-bn-digits", tmp_path).write_bytes(b"broken")
    assert zoo_cmd.run(_parse(["zoo", "check", "cnn-bn-digits", "--root", str(tmp_path)])) == 2
    assert "corrupted" in capsys.readouterr().err


def test_metric_tolerance_rule():
    assert zoo_cmd.metric_matches(10.0, 10.9, {"tolerance": 0.5, "rel_tolerance": 0.05})
    assert not zoo_cmd.metric_matches(10.0, 11.1, {"tolerance": 0.5, "rel_tolerance": 0.05})
    assert zoo_cmd.metric_matches(0.99, 0.99, {})
