"""Built-in LLM/DiT shapes and the local Hugging Face config.json reader."""
from __future__ import annotations

import json

import pytest

from methods.errors import ConfigError, UnknownNameError
from methods.roofline import RooflineConfig
from methods.roofline_llm import analyze_llm
from sims.hardware import get_device
from sims.llm_configs import get_llm_config, model_names, read_hf_config

LLAMA7B_JSON = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                "num_attention_heads": 32, "num_key_value_heads": 32, "num_hidden_layers": 32,
                "vocab_size": 32000, "hidden_act": "silu"}


def test_builtin_models_cover_llm_viewer_list():
    names = set(model_names())
    for n in ("Llama-2-7b", "Llama-2-13b", "Llama-2-70b", "gpt-j-6B", "chatglm3-6b", "opt-125m", "opt-66b",
              "DiT-XL/2", "DiT-B/8"):
        assert n in names
    assert get_llm_config("meta-llama/Llama-2-70b-hf").num_key_value_heads == 8
    assert get_llm_config("LLAMA-2-13B").hidden_size == 5120
    assert get_llm_config("THUDM/chatglm3-6b").num_key_value_heads == 2
    assert get_llm_config("facebook/opt-1.3b").gated_mlp is False


def test_local_config_json_equals_builtin(tmp_path):
    folder = tmp_path / "llama7b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA7B_JSON))
    local = read_hf_config(folder)
    assert local.name == "llama7b" and local.family == "llama"
    cfg = RooflineConfig(seq=512)
    a100 = get_device("nvidia_A100")
    assert analyze_llm(get_llm_config(str(folder / "config.json")), a100, cfg).totals == \
        analyze_llm(get_llm_config("Llama-2-7b"), a100, cfg).totals


def test_local_configs_of_other_families(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "chatglm", "hidden_size": 4096, "ffn_hidden_size": 13696,
                                "num_attention_heads": 32, "multi_query_attention": True,
                                "multi_query_group_num": 2, "num_layers": 28, "padded_vocab_size": 65024}))
    assert read_hf_config(path).to_dict() | {"name": "", "source": ""} == \
        get_llm_config("chatglm3-6b").to_dict() | {"name": "", "source": ""}
    path.write_text(json.dumps({"model_type": "gptj", "n_embd": 64, "n_head": 4, "n_layer": 2,
                                "vocab_size": 100, "n_inner": None}))
    assert read_hf_config(path).intermediate_size == 256
    path.write_text(json.dumps({"model_type": "mistral", **{k: v for k, v in LLAMA7B_JSON.items()
                                                           if k != "model_type"}, "num_key_value_heads": 8}))
    assert read_hf_config(path).num_key_value_heads == 8


def test_missing_field_names_the_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in LLAMA7B_JSON.items() if k != "intermediate_size"}))
    with pytest.raises(ConfigError, match="intermediate_size"):
        read_hf_config(path)


@pytest.mark.parametrize("content", ['{"model_type": "bert"}', "[1, 2]", "not json"])
def test_unsupported_or_broken_config(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError):
        read_hf_config(path)


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="No config.json"):
        read_hf_config(tmp_path)
    with pytest.raises(UnknownNameError, match="opt-1.3b"):
        get_llm_config("opt-1.3")
