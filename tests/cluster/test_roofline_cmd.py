"""`evfarm roofline`: every output format, the plot, generation, zoo tracing and bad input (exit 2)."""

from __future__ import annotations

import argparse
import csv
import io
import json

import pytest

from cluster import roofline_cmd


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="evfarm")
    roofline_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["roofline", *argv])
    return args.func(args)


def test_table_prints_rows_and_totals(capsys):
    assert run_cli("Llama-2-7b", "--hw", "nvidia_A100", "--seq", "1024") == 0
    out = capsys.readouterr().out
    assert "q_proj" in out and "lm_head" in out
    assert "total decode:" in out and "time=8.8539e-03" in out
    assert "total prefill:" in out and "time=5.0791e-02" in out
    assert "weights=1.2952e+10" in out


def test_csv_rows_parse(capsys):
    assert run_cli("Llama-2-7b", "--hw", "nvidia_A100", "--format", "csv", "--stage", "decode") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["stage"] for r in rows} == {"decode"}
    assert len(rows) == 16  # 7 linears + 3 attention nodes + 2 norms + 2 adds + act + head
    total = sum(float(r["memory_access"]) * int(r["count"]) for r in rows)
    assert total == pytest.approx(1.3768e10, rel=5e-5)


def test_json_payload_and_corrected_mode(capsys):
    assert (
        run_cli(
            "Llama-2-70b",
            "--hw",
            "nvidia_H100",
            "--format",
            "json",
            "--mode",
            "corrected",
            "--w-bits",
            "4",
            "--kv-bits",
            "8",
            "--flash",
            "--gen",
            "4",
            "--seq",
            "256",
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["mode"] == "corrected" and data["config"]["w_bits"] == 4
    assert data["peak_dtype"] == "FP16"
    assert data["totals"]["decode"]["time"] > 0 and data["footprint"]["weights"] > 0
    assert data["generation"]["total_time"] > data["generation"]["prefill_time"]
    assert any(r["layer"] == "fused_attention" for r in data["rows"])


def test_plot_is_written(tmp_path, capsys):
    path = tmp_path / "plots" / "roof.png"
    assert run_cli("opt-125m", "--hw", "raspberry_pi5_cpu", "--plot", str(path), "--format", "csv") == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot:" in capsys.readouterr().err


def test_dit_uses_its_default_token_count(capsys):
    assert run_cli("DiT-XL/2", "--hw", "nvidia_A100", "--format", "json", "--stage", "prefill") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["seq"] == 256
    assert {r["stage"] for r in data["rows"]} == {"prefill"} and set(data["totals"]) == {"prefill"}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("Llama-2-7b", "--hw", "nvidia_A10O"), "nvidia_A100"),
        (("Llama-2-7", "--hw", "nvidia_A100"), "Llama-2-7b"),
        (("Llama-2-7b", "--hw", "nvidia_A100", "--w-bits", "0"), "w_bits"),
        (("Llama-2-7b", "--hw", "intel_13900k", "--w-bits", "8", "--a-bits", "8"), "INT8"),
    ],
)
def test_bad_input_exits_2_with_message(capsys, argv, needle):
    assert run_cli(*argv) == 2
    captured = capsys.readouterr()
    assert needle in captured.err and captured.out == ""


def test_zoo_model_is_traced(monkeypatch, capsys):
    import torch

    from methods.registry import Registry
    from sims.zoo import registry as zoo
    from sims.zoo.registry import ZooSpec

    def build():
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)
        )

    fake = Registry("zoo model")
    fake.register("tiny_cnn")(
        ZooSpec("tiny_cnn", build, train=lambda *a: {}, evaluate=lambda m: {}, metric="acc")
    )
    monkeypatch.setattr(zoo, "ZOO", fake)
    assert (
        run_cli(
            "tiny_cnn",
            "--hw",
            "nvidia_jetson_orin_nano_8g",
            "--input-shape",
            "2,1,8,8",
            "--format",
            "json",
            "--w-bits",
            "8",
            "--a-bits",
            "8",
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    by_layer = {r["layer"]: r for r in data["rows"]}
    assert by_layer["0"]["ops"] == 2 * 2 * 4 * 6 * 6 * 9 and by_layer["0"]["peak_dtype"] == "INT8"
    assert by_layer["3"]["load_weight"] == 144 * 10 * 1
    assert run_cli("tiny_cnn", "--hw", "nvidia_A100", "--input-shape", "2,1,8,8") == 0
    table = capsys.readouterr().out
    assert "w_bits" in table.splitlines()[0] and "total forward:" in table
    assert run_cli("tiny_cnn", "--hw", "nvidia_A100", "--input-shape", "2,x") == 2
