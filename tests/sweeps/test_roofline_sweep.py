from __future__ import annotations

from actors.roofline_device import RooflineTask, parse_bits
from cluster.results import read_table, summarise_trials
from sweeps import roofline_sweep


def test_parse_bits():
    assert parse_bits("W4A16KV8") == (4, 16, 8) and parse_bits("8-8-8") == (8, 8, 8)


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
    assert rows["W4A16KV16"]["decode_time"] < rows["W16A16KV16"]["decode_time"]  # decode is memory bound
