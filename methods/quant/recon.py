"""Block-reconstruction engine: one engine for AdaRound (layer), BRECQ/QDrop (block) and MGRQ (block +
global/local supervision), and for stage-wise units a caller defines.

Papers: BRECQ (Li et al., arXiv 2102.05426), QDrop (Wei et al., arXiv 2203.05740), AdaRound (Nagel et
al., arXiv 2004.10568). Procedure as in reference/quant.md § 1.2 [code: `yhhhli/BRECQ`
`quant/block_recon.py`, `wimh966/QDrop` `qdrop/solver/recon.py`]:

1. for each unit in execution order, cache the FP unit inputs/outputs (all quantizers off) and the
   inputs the partially quantized model feeds it (earlier units quantized and hardened);
2. iterate: sample a mini-batch, form the unit input (quantized input, or QDrop's element-wise mix
   of quantized and FP input), forward the unit with its quantizers on (activation quantizers with
   the unit's drop probability; a quantizer fed the unit input itself reuses the input's mask, so
   each element it emits is Q(x_q) or x_fp as in the official code [code], see
   `QuantizerBase.mix`), loss = `loss_fn(q_out, fp_out, ctx)` + lambda * AdaRound
   regulariser (beta annealed 20 -> 2 after a 20 % warm-up); Adam on AdaRound V (lr 1e-3) and Adam
   on LSQ steps with cosine annealing to 0;
3. harden rounding, stop learning steps, reset the drop probability to 1, next unit.

A unit is a tuple of module names run one after another (a layer, a block, or a stage of blocks);
the caller guarantees they form a chain taking one tensor. `ReconContext` gives loss callbacks what
they need: the model inputs of the batch, `fp_output()` (the FP network output, cached) and
`rest_forward(q_out)` (the unit output pushed through the full-precision rest of the network, with
gradients), and per-layer errors inside the unit when the callback sets `needs_layer_errors`.
The model is kept in eval mode throughout (BN uses running statistics, dropout off) [our choice].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from methods.errors import ConfigError
from methods.quant.api import batches, iter_quantizers, quant_disabled
from methods.quant.modules import QuantMatMul, _QuantWeightLayer
from methods.quant.quantizers import QuantizerBase, UniformQuantizer, anneal_beta

Unit = tuple[str, ...]


@dataclass(frozen=True)
class ReconConfig:
    """Hyper-parameters of one reconstruction pass (defaults: QDrop's, with tiny-scale iterations)."""

    iters: int = 200
    batch_size: int = 32
    weight_lr: float = 1e-3
    act_lr: float = 4e-5
    round_weight: float = 0.01
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0
    drop_prob: float = 1.0
    learn_weights: bool = True
    learn_acts: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        if self.iters < 1 or self.batch_size < 1:
            raise ConfigError(f"iters and batch_size must be >= 1, got {self.iters}, {self.batch_size}.")
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ConfigError(f"drop_prob must be in [0, 1], got {self.drop_prob}.")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"warmup must be in [0, 1), got {self.warmup}.")
        if not (self.learn_weights or self.learn_acts):
            raise ConfigError("Nothing to learn: set learn_weights and/or learn_acts.")

    def to_dict(self) -> dict:
        return asdict(self)


class _Stop(Exception):
    pass


def _modules(model: nn.Module, unit: Unit) -> list[nn.Module]:
    named = dict(model.named_modules())
    missing = [n for n in unit if n not in named]
    if missing:
        raise ConfigError(
            f"Unit names {missing} are not modules of the model. Known e.g.: {list(named)[:12]}."
        )
    return [named[n] for n in unit]


def run_unit(mods: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for m in mods:
        x = m(x)
    return x


@contextmanager
def shared_input_mask(
    mods: Sequence[nn.Module], x: torch.Tensor, mask: torch.Tensor | None
) -> Iterator[None]:
    """While the unit runs on the mixed input `x`, quantizers fed `x` itself reuse `mask` (QDrop)."""
    quantizers = [q for mod in mods for q in mod.modules() if isinstance(q, QuantizerBase)]
    if mask is not None:
        for q in quantizers:
            q.input_mix = (x, mask)
    try:
        yield
    finally:
        for q in quantizers:
            q.input_mix = None


def mix_input(q_x: torch.Tensor, fp_x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """QDrop's unit input: the quantized-model input where `mask`, the FP-model input elsewhere."""
    return q_x if mask is None else torch.where(mask, q_x, fp_x)


@torch.no_grad()
def fp_layer_outputs(mods: Sequence[nn.Module], fp_x: torch.Tensor) -> list[torch.Tensor]:
    """Each quantized layer's output when the unit runs in full precision on the FP-model input
    (the targets of the 'fp_model' reading of local supervision), in execution order."""
    outs: list[torch.Tensor] = []
    layers = [sub for m in mods for sub in m.modules() if isinstance(sub, _QuantWeightLayer)]
    hooks = [layer.register_forward_hook(lambda _m, _a, out: outs.append(out.detach())) for layer in layers]
    quantizers = [q for m in mods for q in m.modules() if isinstance(q, QuantizerBase)]
    saved = [q.enabled for q in quantizers]
    try:
        for q in quantizers:
            q.enabled = False
        run_unit(mods, fp_x)
    finally:
        for q, on in zip(quantizers, saved, strict=True):
            q.enabled = on
        for h in hooks:
            h.remove()
    return outs


@torch.no_grad()
def capture(model, mods, calib_x, batch_size, forward_fn, want_output: bool):
    """Inputs of mods[0] (and outputs of mods[-1]) over the calibration set."""
    ins, outs = [], []

    def grab_in(_m, args):
        ins.append(args[0].detach().clone())
        if not want_output:
            raise _Stop

    def grab_out(_m, _args, out):
        outs.append(out.detach().clone())
        raise _Stop

    h1 = mods[0].register_forward_pre_hook(grab_in)
    h2 = mods[-1].register_forward_hook(grab_out) if want_output else None
    try:
        for xb in batches(calib_x, batch_size):
            try:
                forward_fn(model, xb)
            except _Stop:
                pass
    finally:
        h1.remove()
        if h2 is not None:
            h2.remove()
    return torch.cat(ins), (torch.cat(outs) if want_output else None)


def lp_loss(q_out: torch.Tensor, fp_out: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """BRECQ/QDrop's reconstruction loss: |d|^p summed over channels (last dim for tokens (B, N, C),
    dim 1 otherwise), averaged over everything else."""
    d = (q_out - fp_out).abs().pow(p)
    dim = -1 if d.dim() == 3 else (1 if d.dim() > 1 else 0)
    return d.sum(dim).mean()


def default_loss(q_out, fp_out, ctx) -> torch.Tensor:
    return lp_loss(q_out, fp_out)


@dataclass
class ReconContext:
    """What a loss callback may use; created per iteration by the engine."""

    iteration: int
    iters: int
    unit: Unit
    index: torch.Tensor
    model: nn.Module
    model_input: torch.Tensor
    engine: ReconEngine
    unit_input: torch.Tensor | None = None
    layer_errors: list[torch.Tensor] = field(default_factory=list)
    #: QDrop's unit-input mask (True: quantized-model input) and the FP-model unit input
    input_mask: torch.Tensor | None = None
    fp_unit_input: torch.Tensor | None = None
    #: torch's RNG state just before the unit's forward: a second pass started from it draws the
    #: same activation drop masks (`forward_same_masks`)
    rng_state: torch.Tensor | None = None

    def fp_output(self) -> torch.Tensor:
        return self.engine.fp_output()[self.index]

    def rest_forward(self, q_out: torch.Tensor) -> torch.Tensor:
        """The network output when the unit's output is replaced by `q_out` and the rest runs in FP."""
        last = _modules(self.model, self.unit[-1:])[0]
        handle = last.register_forward_hook(lambda _m, _a, _o: q_out)
        try:
            with quant_disabled(self.model):
                return self.engine.forward_fn(self.model, self.model_input)
        finally:
            handle.remove()

    def forward_unit(self, hard: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Re-run the unit on this iteration's input (optionally with AdaRound hardened, i.e. nearest
        rounding at iteration 0); returns the output and the per-layer errors."""
        mods = _modules(self.model, self.unit)
        errors: list[torch.Tensor] = []
        ada = [
            m.adaround
            for mod in mods
            for m in mod.modules()
            if isinstance(m, _QuantWeightLayer) and m.adaround
        ]
        saved = [a.soft for a in ada]
        hooks = self.engine._layer_error_hooks(mods, errors, self.layer_targets(mods))
        try:
            for a in ada:
                a.soft = a.soft and not hard
            with shared_input_mask(mods, self.unit_input, self.input_mask):
                out = run_unit(mods, self.unit_input)
        finally:
            for a, soft in zip(ada, saved, strict=True):
                a.soft = soft
            for h in hooks:
                h.remove()
        return out, errors


    def layer_targets(self, mods: Sequence[nn.Module]) -> list[torch.Tensor] | None:
        """Targets of the per-layer errors: None (each layer in FP on its own input in the quantized
        unit) or, for a loss with ``layer_error_target = 'fp_model'``, the FP model's layer outputs."""
        if self.engine.layer_error_target != "fp_model":
            return None
        return fp_layer_outputs(mods, self.fp_unit_input)

    def forward_same_masks(self, q_x: torch.Tensor, fp_x: torch.Tensor) -> torch.Tensor:
        """The unit on another input pair (e.g. perturbed views) with this iteration's unit-input mask
        and activation drop masks, so the two passes differ only by their inputs; torch's RNG stream
        continues as if this pass had not run."""
        mods = _modules(self.model, self.unit)
        x = mix_input(q_x, fp_x, self.input_mask)
        after = torch.get_rng_state()
        if self.rng_state is not None:
            torch.set_rng_state(self.rng_state)
        try:
            with shared_input_mask(mods, x, self.input_mask):
                return run_unit(mods, x)
        finally:
            torch.set_rng_state(after)


LossFn = Callable[[torch.Tensor, torch.Tensor, ReconContext], torch.Tensor]


class ReconEngine:
    """Reconstructs units of a calibrated fake-quantized model in place."""

    def __init__(
        self,
        model: nn.Module,
        calib_x: torch.Tensor,
        config: ReconConfig,
        seed: int = 0,
        forward_fn: Callable | None = None,
        capture_batch: int = 128,
    ) -> None:
        self.model, self.calib_x, self.config = model, calib_x, config
        self.forward_fn = forward_fn or (lambda m, xb: m(xb))
        self.capture_batch = capture_batch
        self.gen = torch.Generator().manual_seed(seed)
        self._fp_out: torch.Tensor | None = None
        self.layer_error_target = "block_input"

    @torch.no_grad()
    def fp_output(self) -> torch.Tensor:
        if self._fp_out is None:
            with quant_disabled(self.model):
                self._fp_out = torch.cat(
                    [self.forward_fn(self.model, xb) for xb in batches(self.calib_x, 128)]
                )
        return self._fp_out

    def _layer_error_hooks(self, mods, store, targets: list[torch.Tensor] | None = None):
        def hook(m, args, out):
            if targets is not None:  # the FP model's own output of this layer (in execution order)
                target = targets[len(store)]
            else:  # the FP layer on the same (quantized-block) input, not a path to train through
                target = m.fp_forward(args[0]).detach()
            store.append(((out - target) ** 2).mean())

        return [
            sub.register_forward_hook(hook)
            for m in mods
            for sub in m.modules()
            if isinstance(sub, _QuantWeightLayer)
        ]

    def reconstruct(self, units: Sequence[Unit], loss_fn: LossFn = default_loss) -> list[dict]:
        """Reconstruct `units` in order; returns one stats row per unit (first/last loss)."""
        params = [p for p in self.model.parameters()]
        saved = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            return [self._unit(tuple(u), loss_fn) for u in units]
        finally:
            for p, r in zip(params, saved, strict=True):
                p.requires_grad_(r)

    def _unit(self, unit: Unit, loss_fn: LossFn) -> dict:
        cfg, model = self.config, self.model
        mods = _modules(model, unit)
        with quant_disabled(model):
            fp_in, fp_out = capture(model, mods, self.calib_x, self.capture_batch, self.forward_fn, True)
        q_in, _ = capture(model, mods, self.calib_x, self.capture_batch, self.forward_fn, False)
        layers = [m for mod in mods for m in mod.modules() if isinstance(m, _QuantWeightLayer)]
        acts = [q for mod in mods for _, q in iter_quantizers(mod, "act")]
        alphas, steps = [], []
        if cfg.learn_weights:
            for layer in layers:
                if layer.w_quant.enabled:
                    alphas.append((layer.adaround or layer.init_adaround()).alpha)
        for a in alphas:
            a.requires_grad_(True)
        if cfg.learn_acts:
            for q in acts:
                if isinstance(q, UniformQuantizer) and q.enabled and q.calibrated:
                    q.learn_step(True)
                    steps.append(q.step)
        for q in acts:
            q.drop_prob = cfg.drop_prob
        opt_w = torch.optim.Adam(alphas, lr=cfg.weight_lr) if alphas else None
        opt_s = torch.optim.Adam(steps, lr=cfg.act_lr) if steps else None
        sched = (
            torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, T_max=cfg.iters, eta_min=0.0) if opt_s else None
        )
        if hasattr(loss_fn, "start_unit"):
            loss_fn.start_unit(unit)
        needs_layers = getattr(loss_fn, "needs_layer_errors", False)
        self.layer_error_target = getattr(loss_fn, "layer_error_target", "block_input")
        first = last = math.nan
        n = fp_in.shape[0]
        for it in range(cfg.iters if (alphas or steps) else 0):
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=self.gen)
            mask = None
            if cfg.drop_prob < 1.0:
                mask = torch.rand(q_in[idx].shape, generator=self.gen) < cfg.drop_prob
            x = mix_input(q_in[idx], fp_in[idx], mask)
            ctx = ReconContext(
                it, cfg.iters, unit, idx, model, self.calib_x[idx], self, x,
                input_mask=mask, fp_unit_input=fp_in[idx], rng_state=torch.get_rng_state(),
            )
            hooks = []
            if needs_layers:
                hooks = self._layer_error_hooks(mods, ctx.layer_errors, ctx.layer_targets(mods))
            try:
                with shared_input_mask(mods, x, mask):
                    out = run_unit(mods, x)
            finally:
                for h in hooks:
                    h.remove()
            rec = loss_fn(out, fp_out[idx], ctx)
            loss = rec
            beta = anneal_beta(it, cfg.iters, cfg.warmup, cfg.beta_start, cfg.beta_end)
            if alphas and beta is not None:
                loss = loss + cfg.round_weight * sum(
                    layer.adaround.regularizer(beta) for layer in layers if layer.adaround is not None
                )
            for opt in (opt_w, opt_s):
                if opt:
                    opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in (opt_w, opt_s):
                if opt:
                    opt.step()
            if sched:
                sched.step()
            with torch.no_grad():
                for s in steps:
                    s.clamp_(min=1e-8)
            first = float(rec.detach()) if it == 0 else first
            last = float(rec.detach())
        counts = [layer.adaround.undecided() for layer in layers if layer.adaround is not None and alphas]
        undecided = sum(c[0] for c in counts) / max(sum(c[1] for c in counts), 1) if counts else math.nan
        for layer in layers:
            if layer.adaround is not None:
                layer.adaround.harden()
        for q in acts:
            q.drop_prob = 1.0
            if isinstance(q, UniformQuantizer):
                q.learn_step(False)
        return {
            "unit": ",".join(unit),
            "first_loss": first,
            "last_loss": last,
            "n_weight_layers": len(alphas),
            "n_act_steps": len(steps),
            # fraction of the unit's rounding variables still undecided when hardened (NaN: none learned)
            "undecided": undecided,
        }


def execution_order(
    model: nn.Module,
    candidates: dict[str, nn.Module],
    example: torch.Tensor,
    forward_fn: Callable | None = None,
) -> list[str]:
    """Names of `candidates` in the order their forward first runs on `example`."""
    order: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, _a, n=n: order.append(n) if n not in order else None)
        for n, m in candidates.items()
    ]
    try:
        with torch.no_grad(), quant_disabled(model):
            (forward_fn or (lambda m, xb: m(xb)))(model, example[:1])
    finally:
        for h in hooks:
            h.remove()
    return order


def default_units(model: nn.Module, example: torch.Tensor, level: str = "block") -> list[Unit]:
    """Reconstruction units in execution order.

    'layer': every QuantLinear/QuantConv2d alone. 'block': every module whose class name ends in
    'Block' (timm's ViT blocks, ResNet blocks) as one unit; in a plain `nn.Sequential` backbone each
    quantized layer together with the non-quantized modules that follow it (Conv-BN-ReLU); every
    other quantized layer alone (patch embedding, head) [our unit choice, BRECQ-like].
    """
    if level not in ("layer", "block"):
        raise ConfigError(f"level must be 'layer' or 'block', got {level!r}.")
    named = dict(model.named_modules())
    layers = {n: m for n, m in named.items() if isinstance(m, _QuantWeightLayer)}
    if level == "layer":
        return [(n,) for n in execution_order(model, layers, example)]
    if isinstance(model, nn.Sequential):
        units: list[list[str]] = []
        for name, child in model.named_children():
            has_quant = any(isinstance(m, (_QuantWeightLayer, QuantMatMul)) for m in child.modules())
            if has_quant or not units:
                units.append([name])
            else:
                units[-1].append(name)
        return [tuple(u) for u in units]
    blocks = {n: m for n, m in named.items() if type(m).__name__.endswith("Block") and n}
    cands = dict(blocks)
    for n, m in layers.items():
        if not any(n.startswith(b + ".") for b in blocks):
            cands[n] = m
    return [(n,) for n in execution_order(model, cands, example)]
