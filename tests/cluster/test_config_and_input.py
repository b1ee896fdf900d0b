"""Configs from TOML + --set, and bad input: one clear paragraph, exit 2, nothing touched."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from cluster.config import apply_overrides, config_hash, from_dict, load_config, parse_override, to_toml
from cluster.study import StudyConfig
from methods.errors import ConfigError
from sweeps import demo_sweep


@dataclass(frozen=True)
class Inner:
    clip_ratio: float = 0.9
    bits: tuple[int, ...] = (4, 8)
    version: int = 1


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    name: str = "x"
    n: int | None = None
    version: int = 1


def test_overrides_nested_values_with_toml_literals():
    cfg = apply_overrides(Outer(), ["inner.clip_ratio=0.5", "inner.bits=[2, 4]", 'name="y"', "n=3"])
    assert cfg.inner.clip_ratio == 0.5 and cfg.inner.bits == (2, 4) and cfg.name == "y" and cfg.n == 3
    assert parse_override("name=plain words") == ("name", "plain words")


def test_unknown_key_lists_the_nearest_valid_keys():
    with pytest.raises(ConfigError) as exc:
        apply_overrides(Outer(), ["inner.clip_ration=0.5"])
    assert "inner.clip_ratio" in str(exc.value) and "Did you mean" in str(exc.value)


def test_wrong_type_says_expected_and_received():
    with pytest.raises(ConfigError, match="expected an integer, got 'abc'"):
        apply_overrides(Outer(), ["n=abc"])
    with pytest.raises(ConfigError, match="expected a number"):
        from_dict(Outer, {"inner": {"clip_ratio": "high"}})


def test_toml_round_trip_and_hash(tmp_path):
    cfg = apply_overrides(Outer(), ["inner.clip_ratio=0.25"])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    again = load_config(Outer, path)
    assert again == cfg and config_hash(again) == config_hash(cfg) != config_hash(Outer())


def test_study_config_validates_sampler():
    with pytest.raises(ConfigError, match="grid, tpe, nsga2, random"):
        StudyConfig(sampler="bayes")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--set", "study.actorz=3"], "study.actors"),
        (["--set", "study.actors=two"], "expected an integer"),
        (["--sampler", "annealing"], "tpe"),
        (["--set", "C=[-1.0]"], "positive"),
    ],
)
def test_bad_input_exits_2_with_one_paragraph_and_writes_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "results"
    (out / "demo_sweep" / "old").mkdir(parents=True)
    keep = out / "demo_sweep" / "old" / "part-000000.parquet"
    keep.write_bytes(b"precious")
    rc = demo_sweep.main(argv + ["--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and needle in err and "Traceback" not in err
    assert sorted(os.listdir(out / "demo_sweep")) == ["old"] and keep.read_bytes() == b"precious"


def test_resume_of_a_directory_that_is_not_a_run_exits_2(tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "data.txt").write_text("x")
    rc = demo_sweep.main(["--resume", str(tmp_path / "notarun"), "--no-progress"])
    assert rc == 2 and "not an evfarm run directory" in capsys.readouterr().err
    assert os.listdir(tmp_path / "notarun") == ["data.txt"]


def test_dry_run_prints_grid_and_creates_nothing(tmp_path, capsys):
    rc = demo_sweep.main(["--dry-run", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "grid: 12 points" in out and out.strip().splitlines()[-1] == "summary: dry_run=1"
    assert os.listdir(tmp_path) == []


def test_fixed_length_tuple_fields_keep_values_and_types():
    @dataclass(frozen=True)
    class Pair:
        shape: tuple[int, float] = (1, 2.0)
        version: int = 1

    assert apply_overrides(Pair(), ["shape=[3, 4]"]).shape == (3, 4.0)
    with pytest.raises(ConfigError, match="expected an integer"):
        apply_overrides(Pair(), ['shape=["a", 4]'])
