"""Transformer shapes for the roofline analysis: built-in LLM / DiT configs and a `config.json` reader.

Paper: "LLM Inference Unveiled: Survey and Roofline Model Insights" (Yuan et al., arXiv 2402.16363),
official code hahnyuan/LLM-Viewer (`configs/*.py`, `model_params/DiT.py`, `backend_settings.py`).

Which parts follow what:
- [code] The model list is LLM-Viewer's (Llama-2 7b/13b/70b, GPT-J-6B, ChatGLM3-6b, OPT 125m-66b,
  DiT S/B/L/XL with patch 2/4/8). The numbers are the models' own published Hugging Face
  `config.json` values (DiT: the DiT paper's Table 1, arXiv 2212.09748, as in LLM-Viewer's
  `model_params/DiT.py`).
- [inferred] `LLMConfig` (in `methods/roofline_types.py`: methods take the object, this module
  resolves names) records the *true* architecture (gated MLP or not, number of norms, activation,
  tied embeddings). LLM-Viewer's own deviations (an OPT/DiT gate, GPT-J's hard-coded intermediate
  size) are applied by compat mode in `methods/roofline_llm.py`, not stored here.
- [inferred] Reading a local `config.json` maps `model_type` to a family and reads the family's
  field names; a missing field is a ConfigError naming it. No network, no transformers import.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from methods.errors import ConfigError, UnknownNameError, did_you_mean
from methods.registry import REPLACE_FIELDS, Registry
from methods.roofline_types import LLMConfig

# LLM_CONFIGS.create(name, **fields): a copy of that model config with some fields replaced.
LLM_CONFIGS: Registry[LLMConfig] = Registry("model config", LLMConfig, creator=REPLACE_FIELDS)
_ALIASES: dict[str, str] = {}


def _add(cfg: LLMConfig, *aliases: str) -> None:
    LLM_CONFIGS.register(cfg.name)(cfg)
    for alias in aliases:
        _ALIASES[alias] = cfg.name


def _hf(repo: str) -> str:
    return f"Hugging Face {repo} config.json"


# ---- Llama-2 (SwiGLU, RMSNorm x2, untied head) -------------------------------------------
for _size, (_h, _i, _a, _g, _l) in {
    "7b": (4096, 11008, 32, 32, 32),
    "13b": (5120, 13824, 40, 40, 40),
    "70b": (8192, 28672, 64, 8, 80),
}.items():
    _add(LLMConfig(f"Llama-2-{_size}", "llama", _h, _i, _a, _g, _l, 32000,
                   source=_hf(f"meta-llama/Llama-2-{_size}-hf")),
         f"meta-llama/Llama-2-{_size}-hf")

# ---- OPT (ReLU fc1/fc2 MLP without a gate, LayerNorm x2, head tied to the embedding) -----
for _size, (_h, _l, _a) in {
    "125m": (768, 12, 12), "1.3b": (2048, 24, 32), "2.7b": (2560, 32, 32),
    "6.7b": (4096, 32, 32), "13b": (5120, 40, 40), "30b": (7168, 48, 56), "66b": (9216, 64, 72),
}.items():
    _add(LLMConfig(f"opt-{_size}", "opt", _h, 4 * _h, _a, _a, _l, 50272, gated_mlp=False,
                   activation="relu", tied_embeddings=True, source=_hf(f"facebook/opt-{_size}")),
         f"facebook/opt-{_size}")

# ---- GPT-J-6B (parallel attention + MLP after one LayerNorm, GELU, n_inner = 4 n_embd) ----
_add(LLMConfig("gpt-j-6B", "gptj", 4096, 16384, 16, 16, 28, 50400, gated_mlp=False, num_norms=1,
               activation="gelu", source=_hf("EleutherAI/gpt-j-6B")), "EleutherAI/gpt-j-6B")

# ---- ChatGLM3-6b (SwiGLU, multi-query attention with 2 groups, RMSNorm x2) ----------------
_add(LLMConfig("chatglm3-6b", "chatglm", 4096, 13696, 32, 2, 28, 65024,
               source=_hf("THUDM/chatglm3-6b")), "THUDM/chatglm3-6b")

# ---- DiT (adaLN-Zero blocks, GELU MLP ratio 4, no LM head); tokens = (256/8/patch)^2 -------
for _variant, (_depth, _h, _heads) in {
    "XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6),
}.items():
    for _patch in (2, 4, 8):
        _add(LLMConfig(f"DiT-{_variant}/{_patch}", "dit", _h, 4 * _h, _heads, _heads, _depth, 0,
                       gated_mlp=False, activation="gelu", has_lm_head=False,
                       default_seq=(256 // 8 // _patch) ** 2,
                       source="DiT paper (arXiv 2212.09748) Table 1; LLM-Viewer model_params/DiT.py"))


# ---- local Hugging Face config.json ------------------------------------------------------
_MODEL_TYPES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "opt": "opt",
                "gptj": "gptj", "chatglm": "chatglm"}


def _field(raw: dict[str, Any], key: str, where: str, model_type: str) -> Any:
    if raw.get(key) is None:
        raise ConfigError(
            f"{where} lacks the field {key!r}, which a {model_type!r} config needs; "
            f"add it or pass a built-in model name instead."
        )
    return raw[key]


def config_from_dict(raw: dict[str, Any], name: str, where: str = "config") -> LLMConfig:
    """Build an LLMConfig from the fields of a Hugging Face `config.json` (already parsed)."""
    model_type = raw.get("model_type")
    family = _MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not supported; expected one of "
            f"{sorted(_MODEL_TYPES)}. Use a built-in name ({', '.join(LLM_CONFIGS.names()[:4])}, ...)."
        )

    def f(key: str) -> Any:
        return _field(raw, key, where, model_type)

    if family == "llama":
        heads = f("num_attention_heads")
        act = "silu" if raw.get("hidden_act", "silu") == "silu" else "gelu"
        return LLMConfig(name, family, f("hidden_size"), f("intermediate_size"), heads,
                         raw.get("num_key_value_heads") or heads, f("num_hidden_layers"),
                         f("vocab_size"), activation=act,
                         tied_embeddings=bool(raw.get("tie_word_embeddings", False)), source=where)
    if family == "opt":
        heads = f("num_attention_heads")
        return LLMConfig(name, family, f("hidden_size"), f("ffn_dim"), heads, heads,
                         f("num_hidden_layers"), f("vocab_size"), gated_mlp=False, activation="relu",
                         tied_embeddings=bool(raw.get("tie_word_embeddings", True)), source=where)
    if family == "gptj":
        hidden, heads = f("n_embd"), f("n_head")
        return LLMConfig(name, family, hidden, raw.get("n_inner") or 4 * hidden, heads, heads,
                         f("n_layer"), f("vocab_size"), gated_mlp=False, num_norms=1,
                         activation="gelu", source=where)
    heads = f("num_attention_heads")  # chatglm
    kv = f("multi_query_group_num") if raw.get("multi_query_attention") else heads
    return LLMConfig(name, family, f("hidden_size"), f("ffn_hidden_size"), heads, kv, f("num_layers"),
                     f("padded_vocab_size"), source=where)


def read_hf_config(path: str | Path) -> LLMConfig:
    """Read a local Hugging Face `config.json` (or a model folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise ConfigError(f"No config.json at {str(p)!r}; pass a file, a model folder or a built-in name.")
    try:
        raw = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{str(p)!r} is not readable JSON ({exc}); pass a Hugging Face config.json."
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{str(p)!r} holds a JSON {type(raw).__name__}, expected an object.")
    name = raw.get("_name_or_path") or p.parent.name or p.stem
    return config_from_dict(raw, str(name), where=str(p))


def model_names() -> list[str]:
    return LLM_CONFIGS.names()


def get_llm_config(name: str | LLMConfig) -> LLMConfig:
    """A built-in config by name or Hugging Face id (case-insensitive), or a local config path."""
    if isinstance(name, LLMConfig):
        return name
    if name in LLM_CONFIGS:
        return LLM_CONFIGS.get(name)
    if name in _ALIASES:
        return LLM_CONFIGS.get(_ALIASES[name])
    folded = {n.lower(): n for n in [*LLM_CONFIGS.names(), *_ALIASES]}
    if name.lower() in folded:
        return get_llm_config(folded[name.lower()])
    if name.endswith(".json") or Path(name).is_dir():
        return read_hf_config(name)
    raise UnknownNameError(
        f"Unknown model {name!r}. {did_you_mean(name, LLM_CONFIGS.names())} "
        f"Built-in models: {', '.join(LLM_CONFIGS.names())}; or pass a local config.json path."
    )
