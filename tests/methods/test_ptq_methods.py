"""Contract test over every registered PTQ method on a tiny random ViT and CNN."""

from __future__ import annotations

import pytest
import torch

from methods.errors import ConfigError, UnknownNameError
from methods.ptq import PTQ_METHODS, PTQConfig
from methods.quant import check_ready_for_eval, count_macs_bops
from tests.methods.test_quant_wrap import tiny_cnn, tiny_vit

X = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))
EXPECTED = {"minmax", "percentile", "mse", "adaround", "brecq", "qdrop", "repq_vit", "mgrq"}


def test_registry_holds_every_method_and_names_unknown_ones():
    assert EXPECTED <= set(PTQ_METHODS.names())
    with pytest.raises(UnknownNameError, match="qdrop"):
        PTQ_METHODS.get("qdorp")


def _small(spec, **kw):
    fields = spec.config_cls.__dataclass_fields__
    extra = {"iters": 4, "batch_size": 8} if "iters" in fields else {}
    return spec.make_config(**extra, **kw)


@pytest.mark.parametrize("model_fn", [tiny_vit, tiny_cnn], ids=["vit", "cnn"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_method_returns_a_ready_quantized_copy_with_a_report(name, model_fn):
    spec = PTQ_METHODS.get(name)
    fp = model_fn()
    before = {k: v.clone() for k, v in fp.state_dict().items()}
    cfg = _small(spec, w_bits=3, a_bits=4)
    res = spec.run(fp, X, cfg, seed=1)
    check_ready_for_eval(res.model)
    out = res.model(X)
    assert out.shape == (24, 10) and torch.isfinite(out).all()
    assert not torch.equal(out, fp(X))  # quantized at all (how well: the test below)
    assert all(torch.equal(v, fp.state_dict()[k]) for k, v in before.items())  # FP model untouched
    rep = res.report
    assert rep["method"] == name and rep["calib_seconds"] > 0 and rep["config"] == cfg.to_dict()
    assert {r["w_bits"] for r in rep["bits"] if r["kind"] in ("QuantLinear", "QuantConv2d")} == {3, 8}
    assert count_macs_bops(res.model, X[:2])["bops"] > 0
    assert set(spec.config_cls.search_space()) >= {"w_bits", "a_bits"}


def test_config_errors_are_typed():
    with pytest.raises(ConfigError, match="w_bits"):
        PTQConfig(w_bits=1)
    with pytest.raises(ConfigError, match="Unknown"):
        PTQ_METHODS.get("qdrop").make_config(drop_probability=0.5)
    with pytest.raises(ConfigError, match="expects"):
        PTQ_METHODS.get("qdrop").run(tiny_cnn(), X, PTQConfig())


def test_same_seed_same_result_for_reconstruction():
    spec = PTQ_METHODS.get("qdrop")
    a = spec.run(tiny_cnn(), X, _small(spec), seed=3).model(X)
    b = spec.run(tiny_cnn(), X, _small(spec), seed=3).model(X)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["adaround", "brecq", "qdrop"])
def test_reconstruction_beats_plain_minmax_at_two_bit_weights(name):
    """(The contract test above only shows the output differs from FP.) At W2A8 a reconstruction
    method's output is closer to FP than nearest rounding with the same (MSE) weight ranges on the
    same calibration set. weight_lr 1e-2: at 80 iterations the paper's 1e-3 leaves most rounding
    variables undecided and the hardened result is no better than nearest rounding (measured)."""
    fp = tiny_cnn()
    ref = fp(X).detach()

    def err(method, **kw):
        out = PTQ_METHODS.get(method).run(fp, X, PTQ_METHODS.get(method).make_config(**kw), seed=0).model(X)
        return float((out - ref).pow(2).mean())

    bits = dict(w_bits=2, a_bits=8, first_last_bits=None)
    assert err(name, iters=80, batch_size=16, weight_lr=1e-2, **bits) < 0.5 * err("mse", **bits)
