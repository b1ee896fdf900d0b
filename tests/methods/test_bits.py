"""The one bits spec: parsing, canonical spelling, overrides, method ranges and the error message."""

import pytest

from methods.errors import ConfigError
from methods.quant.bits import (
    FAKE_QUANT,
    BitsError,
    BitsSpec,
    canonical_bits,
    canonical_bits_list,
    parse_bits,
)


@pytest.mark.parametrize(
    ("text", "w", "a", "kv"),
    [("fp", None, None, None), ("w8a8", 8, 8, None), ("w4a8", 4, 8, None), ("w2a4", 2, 4, None),
     ("w4a16kv8", 4, 16, 8), ("w16a16kv16", 16, 16, 16), ("w1a1", 1, 1, None)],
)
def test_parse_fields_and_round_trip(text, w, a, kv):
    spec = parse_bits(text)
    assert (spec.w, spec.a, spec.kv) == (w, a, kv)
    assert spec.name == str(spec) == text
    assert parse_bits(spec.name) == spec
    assert parse_bits(spec) is spec


@pytest.mark.parametrize(("text", "canon"), [
    ("W2A4", "w2a4"), ("FP", "fp"), (" Fp ", "fp"), ("W4A16KV8", "w4a16kv8"), ("w8A8", "w8a8"),
    ("W4A8, Attn = W8A8", "w4a8,attn=w8a8"),
    ("w4a8,head=fp,blocks.*.attn=w8a8", "w4a8,blocks.*.attn=w8a8,head=fp"),
])
def test_case_spaces_and_order_give_one_canonical_spelling(text, canon):
    assert canonical_bits(text) == canon
    assert canonical_bits(canon) == canon


def test_is_fp_and_wa():
    assert parse_bits("fp").is_fp and parse_bits("fp").wa == (None, None)
    assert not parse_bits("w8a8").is_fp and parse_bits("w8a8").wa == (8, 8)
    assert not parse_bits("fp,head=w8a8").is_fp  # an FP base with a quantized module is quantized


def test_overrides_longest_match_wins_and_components_are_whole():
    spec = parse_bits("w4a8kv4,blocks=w6a6,blocks.3=w8a8,blocks.*.attn=fp,head=fp")
    assert spec.for_module("stem.conv") == BitsSpec(4, 8)  # base, without the kv bits
    assert spec.for_module("blocks.0.mlp") == BitsSpec(6, 6)
    assert spec.for_module("blocks.3.mlp.fc1") == BitsSpec(8, 8)
    assert spec.for_module("blocks.30.mlp") == BitsSpec(6, 6)  # 'blocks.3' does not cover 'blocks.30'
    assert spec.for_module("blocks.0.attn.qkv").is_fp
    assert spec.for_module("blocks.3.attn").is_fp  # three components beat two
    assert spec.for_module("Head").is_fp


def test_override_ties_prefer_fewer_wildcards():
    spec = parse_bits("w4a8,*.attn=w6a6,blocks.attn=w8a8")
    assert spec.for_module("blocks.attn") == BitsSpec(8, 8)
    assert spec.for_module("other.attn") == BitsSpec(6, 6)


def test_dataclass_overrides_are_validated_and_sorted():
    spec = BitsSpec(4, 8, overrides=(("head", "fp"), ("attn", BitsSpec(8, 8))))
    assert spec.name == "w4a8,attn=w8a8,head=fp"
    assert spec == parse_bits(spec.name)


@pytest.mark.parametrize(("text", "problem", "fix"), [
    ("", "empty string", "such as"),
    ("4-16-8", "not a bits setting", "'w4a16kv8'"),
    ("8/8", "not a bits setting", "'w8a8'"),
    ("fp16", "not a bits setting", "'fp' for the unquantized model"),
    ("4bit", "not a bits setting", "after 'w'"),
    ("w4", "not a bits setting", "after 'w'"),
    ("w3a3x", "not a bits setting", "after 'w'"),
    ("w0a8", "weight bits 0 lie outside 1..16", "1 to 16"),
    ("w8a17", "activation bits 17 lie outside 1..16", "1 to 16"),
    ("w8a8kv32", "kv bits 32 lie outside 1..16", "1 to 16"),
    ("w4a8,attn", "is not '<module>=<bits>'", "',<module>=<bits>'"),
    ("w4a8,=w8a8", "is not '<module>=<bits>'", "',<module>=<bits>'"),
    ("w4a8,at-tn=w8a8", "not a dotted module name", "blocks.3"),
    ("w4a8,attn=w8a8kv4", "sets kv bits", "'w4a8kv4'"),
    ("w4a8,attn=w8a8,attn=fp", "overridden twice", "one override"),
    ("w4a8,attn=x", "not a bits setting", "after 'w'"),
])
def test_every_parse_error_says_expected_received_and_what_to_do(text, problem, fix):
    with pytest.raises(BitsError) as err:
        parse_bits(text)
    msg = str(err.value)
    assert msg.startswith("bits: expected 'fp' or 'w<W>a<A>[kv<KV>]'")
    assert "e.g. 'w8a8', 'w4a16kv8', 'fp', 'w4a8,attn=w8a8'" in msg
    assert f"got {text!r}" in msg and problem in msg and fix in msg
    assert isinstance(err.value, ConfigError)  # callers that catch ConfigError keep working


def test_non_string_is_refused():
    with pytest.raises(BitsError, match=r"got 8: a int, not a string\. Quote"):
        parse_bits(8)


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"w": None, "a": 8}, "both be set or both None"),
    ({"w": None, "a": None, "kv": 8}, "'fp' takes no kv bits"),
    ({"w": 0, "a": 8}, "weight bits 0"),
    ({"w": 4, "a": 8, "kv": True}, "kv bits True"),
    ({"w": 4, "a": 8, "overrides": (("attn", BitsSpec(8, 8, 8)),)}, "kv bits or nested overrides"),
])
def test_dataclass_validation(kwargs, problem):
    with pytest.raises(BitsError, match=problem):
        BitsSpec(**kwargs)


def test_require_accepts_what_the_method_supports():
    spec = parse_bits("w4a16kv8")
    assert spec.require(w=(2, 8), a=(4, 16), kv=(2, 16), who="roofline") is spec
    assert canonical_bits("W8A8", w=(2, 8), a=(4, 16), who="CacheQuant") == "w8a8"
    assert canonical_bits("FP", who="CacheQuant") == "fp"
    assert parse_bits("w4a8,attn=w8a8").require(overrides=True).name == "w4a8,attn=w8a8"


@pytest.mark.parametrize(("text", "kwargs", "problem", "fix"), [
    ("fp", {"fp": False}, "CacheQuant needs quantized bits, not 'fp'", "Pick a quantized setting instead"),
    ("w4a8kv8", {}, "CacheQuant has no KV cache to quantize", "Drop 'kv8'"),
    ("w4a8,attn=w8a8", {}, "does not take per-module overrides", "e.g. 'w4a8'"),
    ("w1a8", {}, "weight bits 1 lie outside 2..8", "bits 2 to 8"),
    ("w8a2", {}, "activation bits 2 lie outside 4..16", "bits 4 to 16"),
    ("w4a8kv1", {"kv": (2, 16)}, "kv bits 1 lie outside 2..16", "bits 2 to 16"),
    ("w4a8,attn=w16a8", {"overrides": True}, "'attn' weight bits 16 lie outside 2..8", "bits 2 to 8"),
])
def test_require_errors_name_the_method_and_its_range(text, kwargs, problem, fix):
    with pytest.raises(BitsError) as err:
        parse_bits(text).require(w=(2, 8), a=(4, 16), who="CacheQuant", **kwargs)
    msg = str(err.value)
    assert msg.startswith("CacheQuant bits: expected ")
    assert "w2..8 a4..16" in msg and "e.g. " in msg and f"got {parse_bits(text).name!r}" in msg
    assert problem in msg and fix in msg


def test_canonical_bits_list_normalises_and_refuses_repeats_and_single_strings():
    assert canonical_bits_list(["W2A4", "fp", "W8A8"], **FAKE_QUANT) == ("w2a4", "fp", "w8a8")
    assert canonical_bits_list(()) == ()
    repeat = r"^TTAQ bits: expected a list of distinct bits settings \(e\.g\. \['w2a4'.*"
    with pytest.raises(BitsError, match=repeat + r"'W4A4' and 'w4a4' are both 'w4a4'\. List each"):
        canonical_bits_list(("W4A4", "w4a4"), who="TTAQ")
    with pytest.raises(BitsError, match=r"a list of settings belongs\. Write a list, e\.g\. \['w4a4'\]"):
        canonical_bits_list("w4a4")
    with pytest.raises(BitsError, match="TTAQ bits: expected fp or w2..16 a2..16"):
        canonical_bits_list(["w1a4"], **FAKE_QUANT, who="TTAQ")
