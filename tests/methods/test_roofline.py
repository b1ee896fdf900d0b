"""Roofline analysis: LLM-Viewer's check values (compat), each corrected-mode fix, properties, errors,
grids, and the traced vision analysis on a tiny timm ViT and a tiny diffusers U-Net."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from methods.errors import ConfigError, UnknownNameError
from methods.roofline import RooflineConfig, roofline_point, select_peak
from methods.roofline_llm import analyze_llm, generation_time, roofline_grid
from methods.roofline_types import LLMConfig
from sims.hardware import get_device
from sims.llm_configs import get_llm_config

# The methods take objects; the tests resolve names through the sims tables, as every caller does.
A100 = get_device("nvidia_A100")
LLAMA7B = get_llm_config("Llama-2-7b")
LLAMA70B = get_llm_config("Llama-2-70b")


def cfg(**kw) -> RooflineConfig:
    return RooflineConfig(**{"seq": 1024, **kw})


def row(report, stage: str, layer: str) -> dict:
    (match,) = [r for r in report.rows if r["stage"] == stage and r["layer"] == layer]
    return match


# ---- the recorded LLM-Viewer run (reference systems.md §2.5) ------------------------------

@pytest.fixture(scope="module")
def llama7b_compat():
    return analyze_llm(LLAMA7B, A100, cfg())


@pytest.mark.parametrize(("stage", "key", "published"), [
    ("decode", "time", 8.8539e-3),
    ("prefill", "time", 5.0791e-2),
    ("decode", "memory_access", 1.3768e10),
    ("decode", "ops", 1.3628e10),
    ("prefill", "ops", 1.3821e13),
    ("prefill", "memory_access", 3.0948e10),
])
def test_compat_matches_llm_viewer_check_values(llama7b_compat, stage, key, published):
    assert llama7b_compat.totals[stage][key] == pytest.approx(published, rel=5e-5)


@pytest.mark.parametrize(("stage", "key", "published"), [
    ("prefill", "load_weight", 1.32142e10), ("prefill", "load_act", 8.50606e9),
    ("prefill", "store_act", 8.15379e9), ("prefill", "load_kv", 5.36871e8),
    ("prefill", "store_kv", 5.36871e8), ("decode", "load_act", 8.31488e6),
    ("decode", "store_act", 8.02662e6),
])
def test_compat_matches_llm_viewer_line_items(llama7b_compat, stage, key, published):
    assert llama7b_compat.totals[stage][key] == pytest.approx(published, rel=5e-6)


def test_compat_footprint_matches_llm_viewer(llama7b_compat):
    assert llama7b_compat.footprint["weights"] == pytest.approx(1.2952e10, rel=5e-5)
    assert llama7b_compat.footprint["kv_cache"] == pytest.approx(5.3687e8, rel=5e-5)


def test_compat_weight_bytes_equal_closed_form(llama7b_compat):
    h, i, layers, vocab = 4096, 11008, 32, 32000
    # per layer: q, k, v, o (h x h) + gate, up, down (h x I), 2 bytes each; plus the head (h x V)
    expected = (4 * h * h + 3 * h * i) * 2 * layers + h * vocab * 2
    assert llama7b_compat.totals["decode"]["load_weight"] == expected
    assert llama7b_compat.totals["prefill"]["store_kv"] == 2 * layers * 1024 * h * 2


def test_bounds_llama7b(llama7b_compat):
    decode = [r for r in llama7b_compat.rows if r["stage"] == "decode"]
    assert {r["bound"] for r in decode} == {"memory"}
    turning = get_device(A100).turning_point("FP16")
    for name in ("q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "up_proj", "down_proj"):
        r = row(llama7b_compat, "prefill", name)
        assert r["bound"] == "compute"
        assert turning < 682 < r["arithmetic_intensity"] < 764  # reference: AI ≈ 683–763 vs ≈ 201
    for name in ("qk_matmul", "sv_matmul", "softmax", "attn_norm", "mlp_act"):
        assert row(llama7b_compat, "prefill", name)["bound"] == "memory"


def test_roofline_point_is_max_of_compute_and_memory_time():
    for ops, mem in [(1e12, 1e9), (1e9, 1e9), (5e13, 1e9)]:
        p = roofline_point(ops, mem, 1555e9, 312e12)
        assert p["time"] == pytest.approx(max(ops / 312e12, mem / 1555e9), rel=1e-12)
        assert p["bound"] == ("memory" if ops / mem < 312e12 / 1555e9 else "compute")


# ---- properties (issue 9's evidence list) ---------------------------------------------

@pytest.mark.parametrize("mode", ["compat", "corrected"])
@pytest.mark.parametrize(("model", "device", "w", "a", "kv", "seq"), [
    ("Llama-2-7b", A100, 16, 16, 16, 1024), ("Llama-2-70b", "nvidia_H100", 4, 16, 8, 4096),
    ("opt-1.3b", "raspberry_pi5_cpu", 8, 8, 8, 256),
    ("chatglm3-6b", "nvidia_jetson_agx_orin_64g", 4, 8, 4, 2048),
])
def test_decode_time_at_least_weight_bytes_over_bandwidth(mode, model, device, w, a, kv, seq):
    rep = analyze_llm(get_llm_config(model), get_device(device),
                      cfg(w_bits=w, a_bits=a, kv_bits=kv, seq=seq, mode=mode))
    bw = get_device(device).bandwidth
    assert rep.totals["decode"]["time"] >= rep.totals["decode"]["load_weight"] / bw
    assert rep.totals["decode"]["time"] >= rep.totals["decode"]["memory_access"] / bw * (1 - 1e-12)


@pytest.mark.parametrize("mode", ["compat", "corrected"])
def test_halving_weight_bits_roughly_halves_weight_bound_decode(mode):
    times = {w: analyze_llm(LLAMA7B, A100, cfg(w_bits=w, seq=128, mode=mode)).totals["decode"]["time"]
             for w in (16, 8, 4)}
    assert 0.48 < times[8] / times[16] < 0.53
    assert 0.48 < times[4] / times[8] < 0.55


def test_all_bits_at_most_8_switch_to_int8_peak():
    dev = get_device(A100)
    assert analyze_llm(LLAMA7B, A100, cfg(w_bits=8, a_bits=8, kv_bits=8)).peak_dtype == "INT8"
    for w, a, kv in [(4, 16, 16), (8, 8, 16), (4, 16, 4)]:  # W4A16 stays on the FP16 roof
        assert analyze_llm(LLAMA7B, A100, cfg(w_bits=w, a_bits=a, kv_bits=kv)).peak_dtype == "FP16"
    fp16 = row(analyze_llm(LLAMA7B, A100, cfg(w_bits=8, a_bits=8, kv_bits=16)), "prefill", "up_proj")
    int8 = row(analyze_llm(LLAMA7B, A100, cfg(w_bits=8, a_bits=8, kv_bits=8)), "prefill", "up_proj")
    assert fp16["bound"] == int8["bound"] == "compute"
    assert int8["time"] == pytest.approx(fp16["time"] * dev.peak("FP16") / dev.peak("INT8"))


def test_grouped_kv_heads_cut_kv_bytes_by_heads_over_kv_heads():
    gqa = LLAMA70B
    mha = dataclasses.replace(gqa, name="Llama-2-70b-mha", num_key_value_heads=gqa.num_attention_heads)
    ratio = gqa.num_attention_heads // gqa.num_key_value_heads
    assert ratio == 8
    for mode in ("compat", "corrected"):
        g, m = (analyze_llm(x, A100, cfg(mode=mode)) for x in (gqa, mha))
        for stage in ("decode", "prefill"):
            assert m.totals[stage]["load_kv"] == pytest.approx(ratio * g.totals[stage]["load_kv"])
            assert m.totals[stage]["store_kv"] == pytest.approx(ratio * g.totals[stage]["store_kv"])
        assert m.footprint["kv_cache"] == pytest.approx(ratio * g.footprint["kv_cache"])


@pytest.mark.parametrize("mode", ["compat", "corrected"])
def test_more_bits_move_more_bytes(mode):
    def tot(**kw):
        return analyze_llm(LLAMA7B, A100, cfg(mode=mode, **kw)).totals["decode"]

    w = [tot(w_bits=b)["load_weight"] for b in (2, 3, 4, 8, 16)]
    kv = [tot(kv_bits=b)["load_kv"] for b in (2, 4, 8, 16)]
    act = [tot(a_bits=b, kv_bits=16)["load_act"] for b in (4, 8, 16)]
    assert w == sorted(w) and len(set(w)) == len(w)
    assert kv == sorted(kv) and len(set(kv)) == len(kv)
    assert act == sorted(act) and len(set(act)) == len(act)


@pytest.mark.parametrize("flash", [False, True])
@pytest.mark.parametrize("mode", ["compat", "corrected"])
def test_longer_sequence_means_more_decode_time(mode, flash):
    times = [analyze_llm(LLAMA7B, A100, cfg(seq=s, flash=flash, mode=mode)).totals["decode"]["time"]
             for s in (128, 512, 2048, 8192)]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))


def test_kv_bits_default_to_a_bits():
    assert cfg(a_bits=8).kv == 8
    a = analyze_llm(LLAMA7B, A100, cfg(a_bits=8))
    b = analyze_llm(LLAMA7B, A100, cfg(a_bits=8, kv_bits=8))
    assert a.totals == b.totals


def test_batch_scales_activation_and_kv_traffic_not_weights():
    one, four = (analyze_llm(LLAMA7B, A100, cfg(batch=b, mode="corrected")).totals["decode"]
                 for b in (1, 4))
    assert four["load_weight"] == one["load_weight"]
    assert four["load_kv"] == pytest.approx(4 * one["load_kv"])
    assert four["ops"] == pytest.approx(4 * one["ops"])


# ---- compat vs corrected: one test per documented difference ------------------------------

def test_diff_prefill_q_load_uses_attention_heads():
    h, a, g, s = 8192, 64, 8, 1024
    comp, corr = (analyze_llm(LLAMA70B, A100, cfg(mode=m)) for m in ("compat", "corrected"))
    d = h // a
    assert row(comp, "prefill", "qk_matmul")["load_act"] == s * d * g * 2
    assert row(corr, "prefill", "qk_matmul")["load_act"] == s * d * a * 2
    # decode already uses a in both modes; MHA models are unaffected
    assert row(comp, "decode", "qk_matmul")["load_act"] == row(corr, "decode", "qk_matmul")["load_act"]
    mha = [analyze_llm(LLAMA7B, A100, cfg(mode=m)) for m in ("compat", "corrected")]
    assert row(mha[0], "prefill", "qk_matmul")["load_act"] == row(mha[1], "prefill", "qk_matmul")["load_act"]


def test_diff_flash_kv_load_uses_kv_heads_and_o_has_s_by_d_elements():
    s, h, a, g = 4096, 8192, 64, 8
    d = h // a
    comp, corr = (analyze_llm(LLAMA70B, A100, cfg(seq=s, flash=True, mode=m))
                  for m in ("compat", "corrected"))
    block_r = min(math.ceil(27648e3 / (2 * d)), d)
    n_blocks = math.ceil(s / block_r)
    c, k = row(comp, "prefill", "fused_attention"), row(corr, "prefill", "fused_attention")
    assert c["load_kv"] == n_blocks * s * d * a * 2 * 2
    assert k["load_kv"] == n_blocks * s * d * g * 2 * 2
    assert c["store_act"] == 2 * s * s * a * 2
    assert k["store_act"] == s * d * a * 2
    assert c["ops"] == k["ops"] == 4 * s * s * d * a + 5 * a * s * s
    decode_kv = [row(rep, "decode", "fused_attention")["load_kv"] for rep in (comp, corr)]
    assert decode_kv[0] == 8 * decode_kv[1]


def test_flash_replaces_three_attention_nodes_by_one():
    rep = analyze_llm(LLAMA7B, A100, cfg(flash=True))
    names = {r["layer"] for r in rep.rows}
    assert "fused_attention" in names and not names & {"qk_matmul", "sv_matmul", "softmax"}
    plain = analyze_llm(LLAMA7B, A100, cfg(mode="corrected"))
    fused = analyze_llm(LLAMA7B, A100, cfg(flash=True, mode="corrected"))
    assert fused.totals["prefill"]["memory_access"] < plain.totals["prefill"]["memory_access"]


def test_diff_mlp_act_uses_intermediate_size():
    comp, corr = (analyze_llm(LLAMA7B, A100, cfg(seq=64, mode=m)) for m in ("compat", "corrected"))
    h, i, s = 4096, 11008, 64
    assert row(comp, "prefill", "mlp_act")["ops"] == 2 * h * s
    assert row(corr, "prefill", "mlp_act")["ops"] == (4 + 1) * i * s  # SiLU 4 + gate multiply 1
    assert row(corr, "prefill", "mlp_act")["load_act"] == 2 * i * s * 2
    opt = analyze_llm(get_llm_config("opt-1.3b"), A100, cfg(seq=64, mode="corrected"))
    assert row(opt, "prefill", "mlp_act")["ops"] == 1 * 8192 * 64  # ReLU, no gate
    assert row(opt, "prefill", "mlp_act")["load_act"] == 8192 * 64 * 2


@pytest.mark.parametrize("batch", [1, 4])
def test_diff_lm_head_factor_two_and_batch(batch):
    h, v = 4096, 32000
    comp, corr = (analyze_llm(LLAMA7B, A100, cfg(batch=batch, mode=m)) for m in ("compat", "corrected"))
    for stage in ("decode", "prefill"):
        c, k = row(comp, stage, "lm_head"), row(corr, stage, "lm_head")
        assert c["ops"] == batch * h * v and k["ops"] == 2 * batch * h * v
        assert c["load_act"] == h * 2 and k["load_act"] == batch * h * 2
        assert c["store_act"] == v * 2 and k["store_act"] == batch * v * 2
        assert c["load_weight"] == k["load_weight"] == h * v * 2


def test_diff_opt_has_no_gate_in_corrected_mode():
    comp, corr = (analyze_llm(get_llm_config("opt-6.7b"), A100, cfg(mode=m)) for m in ("compat", "corrected"))
    assert "gate_proj" in {r["layer"] for r in comp.rows}
    assert "gate_proj" not in {r["layer"] for r in corr.rows}
    ffn = [sum(r["load_weight"] for r in rep.rows if r["stage"] == "decode" and r["layer"] in
               ("gate_proj", "up_proj", "down_proj")) for rep in (comp, corr)]
    assert ffn[1] == pytest.approx(ffn[0] * 2 / 3)


def test_diff_gptj_intermediate_size_and_single_norm():
    base = get_llm_config("gpt-j-6B")
    small = dataclasses.replace(base, name="gptj-narrow", intermediate_size=8192)
    comp, corr = (analyze_llm(small, A100, cfg(mode=m)) for m in ("compat", "corrected"))
    assert row(comp, "decode", "up_proj")["load_weight"] == 4096 * 16384 * 2  # hard-coded in LLM-Viewer
    assert row(corr, "decode", "up_proj")["load_weight"] == 4096 * 8192 * 2
    for rep in (comp, corr):
        names = {r["layer"] for r in rep.rows}
        assert "attn_norm" in names and "mlp_norm" not in names and "gate_proj" not in names


def test_diff_dit_adaln_and_no_gate_no_head():
    dit = get_llm_config("DiT-XL/2")
    comp, corr = (analyze_llm(dit, A100, cfg(seq=256, mode=m)) for m in ("compat", "corrected"))
    cn, kn = {r["layer"] for r in comp.rows}, {r["layer"] for r in corr.rows}
    assert "gate_proj" in cn and "gate_proj" not in kn
    assert "adaLN_modulation" in kn and "adaLN_modulation" not in cn
    assert "lm_head" not in cn | kn
    assert get_llm_config("DiT-XL/2").default_seq == 256


def test_diff_footprint_counts_head_and_untied_embedding():
    comp, corr = (analyze_llm(LLAMA7B, A100, cfg(mode=m)) for m in ("compat", "corrected"))
    assert corr.footprint["weights"] - comp.footprint["weights"] == 2 * 4096 * 32000 * 2
    comp, corr = (analyze_llm(get_llm_config("opt-1.3b"), A100, cfg(mode=m)) for m in ("compat", "corrected"))
    ffn_gate = 24 * 2048 * 8192 * 2  # compat's phantom OPT gate, removed in corrected mode
    assert corr.footprint["weights"] - comp.footprint["weights"] == 2048 * 50272 * 2 - ffn_gate


def test_diff_device_without_int8_peak():
    with pytest.raises(ConfigError, match="no INT8 peak"):
        analyze_llm(LLAMA7B, get_device("intel_13900k"), cfg(w_bits=8, a_bits=8, kv_bits=8))
    cpu = get_device("intel_13900k")
    rep = analyze_llm(LLAMA7B, cpu, cfg(w_bits=8, a_bits=8, kv_bits=8, mode="corrected"))
    assert rep.peak_dtype == "FP16"


def test_diff_fp32_peak_for_wide_bits():
    pi = get_device("raspberry_pi5_cpu")
    assert select_peak(pi, 32, 32, 32, "compat") == ("FP16", pi.peak("FP16"))
    assert select_peak(pi, 32, 32, 32, "corrected") == ("FP32", pi.peak("FP32"))
    assert select_peak(get_device(A100), 32, 32, 32, "corrected")[0] == "FP16"  # no FP32 entry


def test_corrected_equals_compat_where_no_quirk_applies():
    """Nodes untouched by the fixes are identical in both modes (guards against accidental drift)."""
    comp, corr = (analyze_llm(LLAMA7B, A100, cfg(mode=m)) for m in ("compat", "corrected"))
    for name in ("q_proj", "k_proj", "down_proj", "sv_matmul", "softmax", "attn_norm", "mlp_add"):
        for stage in ("decode", "prefill"):
            assert row(comp, stage, name) == row(corr, stage, name)


# ---- generation task, errors, grid ----------------------------------------------------

def test_generation_is_prefill_plus_growing_decode():
    c = cfg(seq=100, gen_tokens=3)
    gen = analyze_llm(LLAMA7B, A100, c).generation
    expect_prefill = analyze_llm(LLAMA7B, A100, cfg(seq=100)).totals["prefill"]["time"]
    expect_decode = sum(analyze_llm(LLAMA7B, A100, cfg(seq=s)).totals["decode"]["time"]
                        for s in (100, 101, 102))
    assert gen["prefill_time"] == pytest.approx(expect_prefill, rel=1e-12)
    assert gen["decode_time"] == pytest.approx(expect_decode, rel=1e-12)
    assert gen["tokens_per_s"] == pytest.approx(3 / expect_decode)
    assert generation_time(LLAMA7B, A100, c, 100, 0)["decode_time"] == 0


@pytest.mark.parametrize("kw", [{"w_bits": 0}, {"a_bits": 33}, {"kv_bits": 4.5}, {"w_bits": True},
                                {"seq": 0}, {"batch": -1}, {"mode": "exact"}, {"gen_tokens": -2},
                                {"flash": "yes"}])
def test_bad_config_is_a_config_error(kw):
    with pytest.raises(ConfigError):
        RooflineConfig(**kw)


def test_unknown_model_and_device_list_near_names():
    with pytest.raises(UnknownNameError, match="Llama-2-7b"):
        get_llm_config("Llama-2-7")
    with pytest.raises(UnknownNameError, match="nvidia_A100"):
        get_device("nvidia_A1000")


def test_methods_take_objects_and_say_where_to_resolve_a_name():
    """Methods never resolve names (that would import sims): a name is refused with the fix."""
    from methods.roofline_vision import analyze_module

    with pytest.raises(ConfigError, match=r"analyze_llm takes an LLMConfig.*get_llm_config\('Llama-2-7b'\)"):
        analyze_llm("Llama-2-7b", A100, cfg())
    with pytest.raises(ConfigError, match=r"takes a Device.*get_device\('nvidia_A100'\)"):
        analyze_llm(LLAMA7B, "nvidia_A100", cfg())
    with pytest.raises(ConfigError, match="generation_time takes a Device"):
        generation_time(LLAMA7B, "nvidia_A100", cfg(), 10, 1)
    with pytest.raises(ConfigError, match="analyze_module takes a Device"):
        analyze_module(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), "nvidia_A100")


def test_config_search_space():
    space = RooflineConfig.search_space()
    for key, (kind, values) in space.items():
        assert kind == "categorical" and values
        RooflineConfig(**{key: values[0]})  # every value is accepted by the config
    assert RooflineConfig().to_dict()["version"] == 1


def test_roofline_grid_rows():
    models = [LLAMA7B, get_llm_config("opt-125m")]
    devices = [A100, get_device("raspberry_pi5_cpu")]
    rows = roofline_grid(models, devices, [(16, 16, 16), (4, 16, 4)], [128, 1024])
    assert len(rows) == 16
    assert {(r["model"], r["device"], r["w_bits"], r["seq"]) for r in rows} == {
        (m, d, w, s) for m in ("Llama-2-7b", "opt-125m") for d in ("nvidia_A100", "raspberry_pi5_cpu")
        for w in (16, 4) for s in (128, 1024)}
    first = rows[0]
    assert first["decode_time"] == analyze_llm(LLAMA7B, A100, cfg(seq=128)).totals["decode"]["time"]
    assert rows == roofline_grid(models, devices, [(16, 16, 16), (4, 16, 4)], [128, 1024])


def test_custom_llmconfig_validation():
    with pytest.raises(ConfigError, match="multiple"):
        LLMConfig("bad", "llama", 64, 128, 6, 4, 2, 100)
    with pytest.raises(ConfigError, match="family"):
        LLMConfig("bad", "rwkv", 64, 128, 4, 4, 2, 100)


# ---- traced vision models -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                             num_classes=10).eval()


@pytest.fixture(scope="module")
def tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       attention_head_dim=8).eval()


def test_vit_linear_and_conv_ops_match_torch_flop_counter(tiny_vit):
    from torch.utils.flop_counter import FlopCounterMode

    from methods.roofline_vision import analyze_module

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tiny_vit(x)
    rep = analyze_module(tiny_vit, (x,), A100)
    ours = sum(r["ops"] for r in rep.rows if r["op"] in ("linear", "conv2d"))
    assert ours == counter.get_total_flops()
    qkv = row(rep, "forward", "blocks.0.attn.qkv")
    tokens = 2 * (16 + 1)  # batch x (patches + class token)
    assert qkv["ops"] == 2 * tokens * 32 * 96 and qkv["load_weight"] == 32 * 96 * 2
    sdpa = row(rep, "forward", "blocks.0.attn:scaled_dot_product_attention")
    scores = 2 * 2 * 17 * 17  # batch x heads x L x S
    assert sdpa["ops"] == 2 * scores * 16 * 2 + 5 * scores


def test_vit_per_module_bits(tiny_vit):
    from methods.roofline_vision import analyze_module

    x = torch.randn(1, 3, 32, 32)
    base = analyze_module(tiny_vit, (x,), A100)
    quant = analyze_module(tiny_vit, (x,), A100, bits={"blocks.0": (4, 8), "head": (8, 8)})
    assert quant.totals["forward"]["ops"] == base.totals["forward"]["ops"]
    for name in ("blocks.0.attn.qkv", "blocks.0.mlp.fc1"):
        q, b = row(quant, "forward", name), row(base, "forward", name)
        assert q["load_weight"] == b["load_weight"] / 4 and q["load_act"] == b["load_act"] / 2
        assert q["peak_dtype"] == "INT8" and b["peak_dtype"] == "FP16"
    assert row(quant, "forward", "blocks.1.attn.qkv") == row(base, "forward", "blocks.1.attn.qkv")
    assert quant.totals["forward"]["time"] < base.totals["forward"]["time"]
    with pytest.raises(UnknownNameError, match="blocks.0"):
        analyze_module(tiny_vit, (x,), A100, bits={"blocks.O": (4, 8)})
    with pytest.raises(ConfigError):
        analyze_module(tiny_vit, (x,), A100, bits={"head": (0, 8)})


def test_vit_unfused_attention_moves_more_bytes(tiny_vit):
    from methods.roofline_vision import analyze_module

    x = torch.randn(1, 3, 32, 32)
    fused = analyze_module(tiny_vit, (x,), A100)
    unfused = analyze_module(tiny_vit, (x,), A100, fused_attention=False)
    name = "blocks.0.attn:scaled_dot_product_attention"
    assert row(unfused, "forward", name)["memory_access"] - row(fused, "forward", name)["memory_access"] == \
        4 * 1 * 2 * 17 * 17 * 2


def test_unet_trace_and_cached_steps(tiny_unet):
    from methods.roofline_vision import analyze_module, cache_schedule, cached_step_cost

    inputs = {"sample": torch.randn(1, 3, 16, 16), "timestep": 10}
    rep = analyze_module(tiny_unet, inputs, get_device("nvidia_jetson_orin_nano_8g"))
    ops = {r["op"] for r in rep.rows}
    assert {"conv2d", "group_norm", "silu", "linear", "scaled_dot_product_attention"} <= ops
    full = rep.totals["forward"]
    skipped = {"mid_block", "up_blocks.0"}
    cached = cached_step_cost(rep, skipped)
    under = [r for r in rep.rows if any(r["module"] == p or r["module"].startswith(p + ".") for p in skipped)]
    assert any(r["module"] == "up_blocks.0" for r in under)  # the block's own cat/add calls count too
    assert not any(r["module"].startswith("up_blocks.1") for r in under)
    assert cached["time"] == pytest.approx(full["time"] - sum(r["total_time"] for r in under))
    assert 0 < cached["time"] < full["time"]
    steps = cache_schedule(rep, skipped, num_steps=10, interval=3)
    assert [s["cached"] for s in steps] == [i % 3 != 0 for i in range(10)]
    assert [s["time"] for s in steps if not s["cached"]] == [full["time"]] * 4
    assert cache_schedule(rep, skipped, 4, 1) == [{"step": i, "cached": False, **full} for i in range(4)]
    with pytest.raises(UnknownNameError, match="mid_block"):
        cached_step_cost(rep, {"mid_blok"})
    with pytest.raises(ConfigError):
        cache_schedule(rep, skipped, 0, 2)


def test_sam_encoder_matmul_and_einsum_ops_match_torch_flop_counter():
    """SAM's image encoder uses q @ k^T, softmax and einsum (relative positions), not SDPA."""
    from segment_anything.modeling import ImageEncoderViT
    from torch.utils.flop_counter import FlopCounterMode

    from methods.roofline_vision import analyze_module

    torch.manual_seed(0)
    enc = ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, window_size=2,
                          global_attn_indexes=(1,), use_rel_pos=True, out_chans=16).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        enc(x)
    rep = analyze_module(enc, (x,), get_device("apple_m2_gpu"))
    ops = {r["op"] for r in rep.rows}
    assert {"matmul", "einsum", "softmax"} <= ops
    assert sum(r["ops"] for r in rep.rows if r["op"] in ("linear", "conv2d", "matmul", "einsum")) == \
        counter.get_total_flops()


def test_einsum_contracted_sizes():
    from methods.roofline_vision import _einsum_contracted

    a, b = torch.zeros(3, 4, 5), torch.zeros(5, 6)
    assert _einsum_contracted("ijk,kl->ijl", [a, b]) == 5
    assert _einsum_contracted("ijk,kl", [a, b]) == 5  # implicit output
    assert _einsum_contracted("...k,kl->...l", [a, b]) == 5
    assert _einsum_contracted("ijk,kl->l", [a, b]) == 3 * 4 * 5


@pytest.mark.parametrize(("model", "published", "rel"), [
    ("Llama-2-7b", 6_738_415_616, 1e-4),   # Hugging Face parameter count
    ("Llama-2-70b", 68_976_648_192, 1e-4),
    ("DiT-XL/2", 675e6, 1.5e-2),           # DiT paper, Table 1 (we omit embedders and final layer)
])
def test_corrected_weight_footprint_matches_published_parameter_counts(model, published, rel):
    corr = analyze_llm(get_llm_config(model), A100, cfg(mode="corrected")).footprint["weights"] / 2
    comp = analyze_llm(get_llm_config(model), A100, cfg(mode="compat")).footprint["weights"] / 2
    assert corr == pytest.approx(published, rel=rel)
    assert comp < corr  # compat leaves out the head and embedding (and DiT's adaLN)
