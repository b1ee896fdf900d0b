"""U-Net reconstruction units: the unit chain equals diffusers' forward, calibration data from FP
trajectories, per-sample temporal activation quantizers, and block-wise distillation bookkeeping."""
from __future__ import annotations

import copy

import pytest
import torch
from tiny_diffusion import tiny_cond_unet, tiny_scheduler, tiny_unet

from methods.errors import ConfigError
from methods.quant import QuantConfig, quant_disabled, quantize_
from methods.quant.unet_units import (
    CalibSet,
    StepIndex,
    TemporalActQuant,
    UNetState,
    distill,
    fp_calibration_set,
    run_units,
    unit_modules,
    unit_names,
    use_temporal_acts,
)


def test_unit_chain_equals_the_library_forward():
    unet = tiny_unet()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 400, 999])
    names = unit_names(unet)
    assert names == ["embed", "down.0", "down.1", "mid", "up.0", "up.1", "head"]
    with torch.no_grad():
        out = run_units(unet, names, UNetState(x, t))
        ref = unet(x, t).sample
    assert torch.allclose(out.h, ref, atol=1e-6) and out.res == ()


def test_unknown_unets_and_blocks_are_refused():
    with pytest.raises(ConfigError, match="UNet2DModel"):
        unit_names(tiny_cond_unet())
    unet = tiny_unet()
    unet.mid_block = torch.nn.Identity()
    with pytest.raises(ConfigError, match="Identity"):
        unit_names(unet)
    with pytest.raises(ConfigError, match="unknown U-Net unit"):
        unit_modules(tiny_unet(), "down.7")


def test_fp_calibration_set_spreads_samples_over_the_steps():
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(4, 1, 8, 8)
    calib = fp_calibration_set(unet, sched, noise, steps=5, size=12)
    assert len(calib) == 12
    counts = torch.bincount(calib.idx, minlength=5)
    assert counts.min() >= 2 and counts.max() <= 3
    sched.set_timesteps(5)
    assert torch.equal(calib.t, sched.timesteps[calib.idx].long())
    first = calib.x[calib.idx == 0]  # step 0's inputs are the noise itself
    assert all(any(torch.equal(f, n) for n in noise) for f in first)
    with pytest.raises(ConfigError, match="calibration size"):
        fp_calibration_set(unet, sched, noise, steps=5, size=21)


def test_temporal_act_quant_calibrates_each_step_from_its_own_samples():
    index = StepIndex()
    q = TemporalActQuant(8, 4, index, observer="minmax")
    q.enabled = False
    q.start_observing()
    x = torch.cat([torch.linspace(-1, 1, 9).expand(2, 9) * (k + 1) for k in (0, 2)])
    index.set(torch.tensor([0, 0, 2, 2]))
    q(x)
    q.finish_observing()
    q.enabled = True
    s = q.tq.step.detach()
    assert float(s[2]) == pytest.approx(3 * float(s[0]), rel=1e-5)
    assert float(s[1]) in (pytest.approx(float(s[0])), pytest.approx(float(s[2])))  # nearest seen step
    flat = TemporalActQuant(8, 4, index, temporal=False)
    assert flat.tq.num_steps == 1


def _quantized(unet, steps, index):
    q = quantize_(copy.deepcopy(unet), QuantConfig(w_bits=4, a_bits=8, quant_matmul=False))
    use_temporal_acts(q, steps, index)
    return q


def test_distill_feeds_each_group_the_chain_state_and_its_own_targets():
    # quantizers off: the quantized chain is the FP chain, so every group starts at zero loss; a
    # misaligned input/target pair or a wrong skip stack would show up as a positive loss
    unet, index = tiny_unet(), StepIndex()
    calib = CalibSet(torch.randn(8, 1, 8, 8), torch.randint(0, 1000, (8,)), torch.randint(0, 4, (8,)))
    q = _quantized(unet, 4, index)

    def weights(mods):
        ps = [m.weight for mod in mods for m in mod.modules() if hasattr(m, "w_quant")]
        for p in ps:
            p.requires_grad_(True)
        return [{"params": ps, "lr": 0.0}]

    with quant_disabled(q):
        rows = distill(q, unet, calib, [[n] for n in unit_names(unet)], weights, iters=1, batch_size=4,
                       index=index)
    assert len(rows) == 7 and all(r["first_loss"] < 1e-10 for r in rows)
    assert all(r["trained"] > 0 for r in rows)
    with pytest.raises(ConfigError, match="smaller than the batch"):
        distill(q, unet, calib, [["embed"]], weights, iters=1, batch_size=9, index=index)
