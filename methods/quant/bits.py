"""One bits spec for every method and sweep: weight / activation / KV-cache bits, per-module overrides.

Our own design [inferred] (no paper defines a spelling); the `w<W>a<A>` form is the one the
quantization papers this project follows write in their tables (W4A8, W8A8, W2A4), and the `kv`
suffix is LLM-Viewer's (arXiv:2402.16363) third number. Every config, task and bench parses bits
with `parse_bits` and stores `spec.name` (the canonical spelling), so a result row says
`bits='w2a4'` whatever case the person typed.

Syntax (case-insensitive; spaces around ',' and '=' are ignored):

=====================================  ==============================================================
spelling                               meaning
=====================================  ==============================================================
``fp``                                 the unquantized model (w = a = kv = None)
``w8a8``                               8-bit weights, 8-bit activations
``w4a16``                              4-bit weights, 16-bit activations (weight-only in a roofline)
``w4a16kv8``                           ... and an 8-bit KV cache (LLMs); no ``kv``: the method's default
``w4a8,attn=w8a8``                     w4a8 everywhere, except modules under ``attn`` at w8a8
``w4a8,blocks.*.attn=w8a8,head=fp``    ``*`` stands for one name component; ``fp`` keeps a module FP
=====================================  ==============================================================

Each number is an integer in 1..16 (a method narrows it with `BitsSpec.require`). An override
``<module>=<bits>`` names a dotted module path; it covers that module and every module under it
(``blocks.3`` covers ``blocks.3.attn.qkv``, not ``blocks.30``). Its value is ``fp`` or ``w<W>a<A>``
(no ``kv``, no nested overrides). When several overrides match, the one with more name components
wins, then the one with fewer ``*``, then the first in canonical order. The canonical spelling
(`str(spec)`, `spec.name`) is lower case, without spaces, overrides sorted by module name.

Not accepted, on purpose: ``fp16`` / ``fp32`` (write ``fp`` for the unquantized model or
``w16a16`` for 16-bit numbers), dash forms such as ``4-16-8`` (write ``w4a16kv8``), a weight-only
``w4`` (write ``w4a16``). Every refusal raises `BitsError` with one message format: what was
expected (with examples), what was received, what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from methods.errors import ConfigError

MIN_BITS, MAX_BITS = 1, 16
#: What `methods.quant`'s fake quantizers take (QuantConfig checks 2..16; a symmetric grid needs
#: 2 bits). Methods built on them pass it on: `spec.require(**FAKE_QUANT, who="TTAQ")`.
FAKE_QUANT = {"w": (2, 16), "a": (2, 16)}
EXAMPLES = "'w8a8', 'w4a16kv8', 'fp', 'w4a8,attn=w8a8'"
SYNTAX = "'fp' or 'w<W>a<A>[kv<KV>]' with 1..16 bits each, then optional ',<module>=<bits>' overrides"

_BASE = re.compile(r"w(\d+)a(\d+)(?:kv(\d+))?")
_MODULE = re.compile(r"(?:[a-z0-9_]+|\*)(?:\.(?:[a-z0-9_]+|\*))*")
_NUMBERS = re.compile(r"\d+")
ONE_OVERRIDE = "Keep one override per module."


class BitsError(ConfigError):
    """A bits spec that does not parse, or that a method does not support."""


def bits_error(received: object, problem: str, fix: str, *, who: str = "",
               expected: str = SYNTAX, examples: str = EXAMPLES) -> BitsError:
    """The one bits error message: expected (with examples), received, the problem, what to do."""
    prefix = f"{who} bits" if who else "bits"
    return BitsError(f"{prefix}: expected {expected} (e.g. {examples}); got {received!r}: {problem}. {fix}")


@dataclass(frozen=True)
class BitsSpec:
    """Weight / activation / KV bits (None = full precision) and per-module overrides.

    `w` and `a` are both None (`fp`) or both ints; `kv` is None unless given. `overrides` holds
    (module pattern, BitsSpec without kv or overrides) pairs in canonical (sorted) order.
    """

    w: int | None
    a: int | None
    kv: int | None = None
    overrides: tuple[tuple[str, BitsSpec], ...] = ()

    def __post_init__(self) -> None:
        if (self.w is None) != (self.a is None):
            raise bits_error(self._fields(), "weight and activation bits must both be set or both None",
                             "Use 'fp' for the unquantized model or give both numbers, e.g. 'w4a16'.")
        if self.w is None and self.kv is not None:
            raise bits_error(self._fields(), "'fp' takes no kv bits",
                             "Give weight and activation bits too, e.g. 'w16a16kv8'.")
        for label, value in (("weight", self.w), ("activation", self.a), ("kv", self.kv)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not MIN_BITS <= value <= MAX_BITS):
                raise bits_error(self._fields(), f"{label} bits {value!r} are not an int in 1..16",
                                 "Use whole numbers of bits from 1 to 16.")
        pairs = tuple((str(m), parse_bits(s)) for m, s in self.overrides)
        for module, sub in pairs:
            if sub.kv is not None or sub.overrides:
                raise bits_error(self._fields(), f"override {module!r} has kv bits or nested overrides",
                                 "Write an override as '<module>=w<W>a<A>' or '<module>=fp'.")
        names = [m for m, _ in pairs]
        if len(set(names)) != len(names):
            dup = next(m for m in names if names.count(m) > 1)
            raise bits_error(self._fields(), f"module {dup!r} is overridden twice", ONE_OVERRIDE)
        object.__setattr__(self, "overrides", tuple(sorted(pairs)))

    def _fields(self) -> str:
        return f"BitsSpec(w={self.w!r}, a={self.a!r}, kv={self.kv!r}, overrides={self.overrides!r})"

    # ------------------------------------------------------------------ spelling
    @property
    def name(self) -> str:
        """The canonical spelling: 'fp', 'w8a8', 'w4a16kv8', 'w4a8,attn=w8a8'."""
        base = "fp" if self.w is None else f"w{self.w}a{self.a}" + ("" if self.kv is None else f"kv{self.kv}")
        return ",".join([base, *(f"{m}={s.name}" for m, s in self.overrides)])

    def __str__(self) -> str:
        return self.name

    @property
    def is_fp(self) -> bool:
        """True for plain 'fp' (no quantization anywhere, no overrides)."""
        return self.w is None and not self.overrides

    @property
    def wa(self) -> tuple[int | None, int | None]:
        """(w, a) of the base spec: (None, None) for 'fp'."""
        return self.w, self.a

    def for_module(self, module: str) -> BitsSpec:
        """The bits of one module (dotted name): the best matching override, else the base (without kv)."""
        parts = module.lower().split(".")
        best, best_key = BitsSpec(self.w, self.a), None
        for pattern, sub in self.overrides:
            pat = pattern.split(".")
            if len(pat) <= len(parts) and all(p in ("*", q) for p, q in zip(pat, parts, strict=False)):
                key = (len(pat), -pat.count("*"))
                if best_key is None or key > best_key:
                    best, best_key = sub, key
        return best

    # ------------------------------------------------------------------ what a method supports
    def require(self, *, w: tuple[int, int] = (MIN_BITS, MAX_BITS), a: tuple[int, int] = (MIN_BITS, MAX_BITS),
                kv: tuple[int, int] | None = None, fp: bool = True, overrides: bool = False,
                who: str = "") -> BitsSpec:
        """Check the spec against what a method supports and return it (raises `BitsError`).

        w / a: inclusive ranges of weight / activation bits; kv: range of KV bits, None = refused;
        fp: whether 'fp' is accepted; overrides: whether per-module overrides are accepted (their
        numbers must lie in the same ranges). Example: `spec.require(w=(2, 8), a=(4, 16), who="CacheQuant")`.
        """
        expected = (f"{'fp or ' if fp else ''}w{w[0]}..{w[1]} a{a[0]}..{a[1]}"
                    + (f" kv{kv[0]}..{kv[1]} (optional)" if kv else ", no kv")
                    + (", optional ',<module>=<bits>' overrides" if overrides else ", no overrides"))
        example = "'fp', " if fp else ""
        example += f"'w{w[1]}a{a[1]}', 'w{w[0]}a{a[1]}'" + (f", 'w{w[0]}a{a[1]}kv{kv[0]}'" if kv else "")

        def fail(problem: str, fix: str) -> BitsError:
            return bits_error(self.name, problem, fix, who=who, expected=expected, examples=example)

        label = f"{who} " if who else ""
        if self.w is None and not fp:
            raise fail(f"{label}needs quantized bits, not 'fp'", "Pick a quantized setting instead.")
        if self.kv is not None and kv is None:
            raise fail(f"{label}has no KV cache to quantize", f"Drop 'kv{self.kv}'.")
        if self.overrides and not overrides:
            whole = BitsSpec(self.w, self.a, self.kv).name
            raise fail(f"{label}does not take per-module overrides", f"Use one setting, e.g. {whole!r}.")
        checks = [("weight", self.w, w), ("activation", self.a, a), ("kv", self.kv, kv)]
        checks += [(f"{m!r} {kind}", v, r) for m, s in self.overrides for kind, v, r in
                   (("weight", s.w, w), ("activation", s.a, a))]
        for kind, value, (lo, hi) in ((k, v, r) for k, v, r in checks if v is not None and r is not None):
            if not lo <= value <= hi:
                raise fail(f"{kind} bits {value} lie outside {lo}..{hi}", f"Use {kind} bits {lo} to {hi}.")
        return self


# ---------------------------------------------------------------------- the one parser
def _suggest(text: str) -> str:
    """What to do for a spelling that did not parse, with a canonical guess where one is clear."""
    nums = _NUMBERS.findall(text)
    if text.startswith("fp") and nums:
        return ("Write 'fp' for the unquantized model, or the bit widths for a number format, "
                f"e.g. 'w{nums[0]}a{nums[0]}'.")
    if 2 <= len(nums) <= 3 and not re.search(r"[a-z]", text):
        guess = f"w{nums[0]}a{nums[1]}" + (f"kv{nums[2]}" if len(nums) == 3 else "")
        return f"Write it as {guess!r}."
    return "Write the weight bits after 'w' and the activation bits after 'a', e.g. 'w4a8'."


def _parse_base(text: str, original: object) -> BitsSpec:
    if text == "fp":
        return BitsSpec(None, None)
    m = _BASE.fullmatch(text)
    if m is None:
        raise bits_error(original, f"{text!r} is not a bits setting", _suggest(text))
    nums = [None if g is None else int(g) for g in m.groups()]
    for label, value in zip(("weight", "activation", "kv"), nums, strict=True):
        if value is not None and not MIN_BITS <= value <= MAX_BITS:
            raise bits_error(original, f"{label} bits {value} lie outside 1..16", "Use 1 to 16 bits.")
    return BitsSpec(*nums)


def parse_bits(text: str | BitsSpec) -> BitsSpec:
    """Parse a bits spec (see the module docstring); a `BitsSpec` is returned as it is."""
    if isinstance(text, BitsSpec):
        return text
    if not isinstance(text, str):
        raise bits_error(text, f"a {type(text).__name__}, not a string", "Quote the setting, e.g. 'w8a8'.")
    t = re.sub(r"\s+", "", text.lower())
    if not t:
        raise bits_error(text, "an empty string", "Give a bits setting such as 'w8a8' or 'fp'.")
    head, *rest = t.split(",")
    base = _parse_base(head, text)
    pairs = []
    for item in rest:
        module, eq, value = item.partition("=")
        if not eq or not module or not value:
            raise bits_error(text, f"override {item!r} is not '<module>=<bits>'",
                             "Write overrides as ',<module>=<bits>', e.g. 'w4a8,attn=w8a8'.")
        if _MODULE.fullmatch(module) is None:
            raise bits_error(text, f"{module!r} is not a dotted module name",
                             "Use module names such as 'attn', 'blocks.3' or 'blocks.*.mlp'.")
        sub = _parse_base(value, text)
        if sub.kv is not None:
            raise bits_error(text, f"override {item!r} sets kv bits",
                             f"Set kv bits once, on the base setting, e.g. '{head}kv{sub.kv}'.")
        if any(module == m for m, _ in pairs):
            raise bits_error(text, f"module {module!r} is overridden twice", ONE_OVERRIDE)
        pairs.append((module, sub))
    return BitsSpec(base.w, base.a, base.kv, tuple(pairs))


def canonical_bits(text: str | BitsSpec, **require) -> str:
    """The canonical spelling of a bits spec (configs store it); keyword args go to `BitsSpec.require`."""
    spec = parse_bits(text)
    return (spec.require(**require) if require else spec).name


def canonical_bits_list(values, **require) -> tuple[str, ...]:
    """A config's list of bits settings in canonical spelling (for `__post_init__`); refuses repeats.

    Keyword args go to `BitsSpec.require`. Two spellings of one setting ('W4A4', 'w4a4') are one
    grid point, so a repeat is an error rather than a duplicated trial.
    """
    form = {"who": require.get("who", ""), "expected": "a list of distinct bits settings",
            "examples": "['w2a4', 'w4a4', 'fp']"}
    if isinstance(values, (str, BitsSpec)):
        raise bits_error(values, "one setting where a list of settings belongs",
                         f"Write a list, e.g. [{str(values)!r}].", **form)
    out: dict[str, object] = {}
    for v in values:
        name = canonical_bits(v, **require)
        if name in out:
            raise bits_error(list(values), f"{out[name]!r} and {v!r} are both {name!r}",
                             "List each setting once.", **form)
        out[name] = v
    return tuple(out)


__all__ = ["EXAMPLES", "FAKE_QUANT", "MAX_BITS", "MIN_BITS", "BitsError", "BitsSpec", "bits_error",
           "canonical_bits", "canonical_bits_list", "parse_bits"]
