from __future__ import annotations

import pytest

from actors.roofline_device import RooflineTask
from cluster.results import read_table, summarise_trials
from sweeps import roofline_sweep


def test_sweep_bits_are_canonical_and_the_dash_form_says_how_to_write_it():
    from methods.errors import ConfigError

    cfg = roofline_sweep.RooflineSweepConfig(bits=("W4A16KV8", "w8a8"))
    assert cfg.bits == ("w4a16kv8", "w8a8")
    with pytest.raises(ConfigError, match="got '8-8-8'.*Write it as 'w8a8kv8'"):
        roofline_sweep.RooflineSweepConfig(bits=("8-8-8",))
    with pytest.raises(ConfigError, match="roofline bits: .*needs quantized bits, not 'fp'"):
        roofline_sweep.RooflineSweepConfig(bits=("fp",))


def test_task_kv_bits_default_to_the_activation_bits():
    def run(bits):
        params = {"model": "Llama-2-7b", "device": "nvidia_A100", "bits": bits, "seq": 1024}
        return RooflineTask().evaluate(params, seed=0, trial=0, chunk=0, n_chunks=1)["objectives"]

    assert run("w4a8") == run("W4A8KV8")


def test_task_reproduces_the_compat_check_value():
    out = RooflineTask().evaluate(
        {"model": "Llama-2-7b", "device": "nvidia_A100", "bits": "W16A16KV16", "seq": 1024},
        seed=0,
        trial=0,
        chunk=0,
        n_chunks=1,
    )
    assert abs(out["objectives"]["decode_time"] - 8.8539e-3) / 8.8539e-3 < 5e-5


def test_roofline_sweep_end_to_end(ray_local, tmp_path, capsys):
    rc = roofline_sweep.main(
        [
            "--out",
            str(tmp_path),
            "--run-id",
            "r",
            "--no-progress",
            "--set",
            'models=["Llama-2-7b"]',
            "--set",
            'devices=["nvidia_A100"]',
            "--set",
            'bits=["W16A16KV16", "W4A16KV16"]',
            "--set",
            "seqs=[1024]",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and out.strip().splitlines()[-1].startswith("summary: ")
    rows = {r["bits"]: r for r in summarise_trials(read_table(tmp_path / "roofline_sweep" / "r"))}
    assert rows["w4a16kv16"]["decode_time"] < rows["w16a16kv16"]["decode_time"]  # decode is memory bound
