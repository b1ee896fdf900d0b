"""SpacedDDIM and quad spacing: exactness against diffusers' DDIM, the official quad formula, the
previous-timestep rule on non-uniform sequences, clipping, duplicates and a full sampling loop."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from methods.ddim_spacing import SpacedDDIM, build_spaced_scheduler, quad_timesteps
from methods.errors import ConfigError


def ddim(**kw) -> DDIMScheduler:
    return DDIMScheduler(**{"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", **kw})


def eps_model(x: torch.Tensor, t) -> torch.Tensor:
    """A fixed deterministic 'noise prediction' depending on x and t."""
    wobble = 0.3 * torch.sin(torch.arange(x.numel()).reshape(x.shape) * 0.37)
    return torch.tanh(0.8 * x + wobble) + float(t) / 2000


def official_quad_ascending(n_train: int, steps: int) -> list[int]:
    """np.linspace(0, sqrt(0.8 T), steps) ** 2 then int, written in plain Python (linspace's
    `k * step` with the last point pinned to `stop`)."""
    stop = math.sqrt(n_train * 0.8)
    if steps == 1:
        return [0]
    step = stop / (steps - 1)
    vals = [k * step for k in range(steps)]
    vals[-1] = stop
    return [int(v * v) for v in vals]


def run_loop(sched, steps: int, x: torch.Tensor, **step_kw):
    sched.set_timesteps(steps)
    outs = []
    for t in sched.timesteps:
        out = sched.step(eps_model(x, t), t, x, **step_kw)
        outs.append(out)
        x = out.prev_sample
    return x, outs


@pytest.mark.parametrize("kw", [
    {"set_alpha_to_one": False},
    {"set_alpha_to_one": False, "clip_sample": False},
    {"set_alpha_to_one": False, "steps_offset": 1},
    {"set_alpha_to_one": True, "timestep_spacing": "trailing", "clip_sample_range": 0.5},
])
@pytest.mark.parametrize("clipped_eps", [False, True])
def test_explicit_uniform_sequence_reproduces_diffusers_ddim_loop_exactly(kw, clipped_eps):
    ref = ddim(**kw)
    ref.set_timesteps(10)
    seq = [int(t) for t in ref.timesteps]
    spaced = SpacedDDIM(ddim(**kw), seq, final_alpha="scheduler")
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.5
    want, want_steps = run_loop(ref, 10, x, use_clipped_model_output=clipped_eps)
    got, got_steps = run_loop(spaced, 10, x, use_clipped_model_output=clipped_eps)
    assert spaced.timesteps.dtype == torch.long and spaced.timesteps.tolist() == seq
    for a, b in zip(want_steps, got_steps, strict=True):
        assert torch.allclose(a.prev_sample, b.prev_sample, atol=1e-6, rtol=0)
        assert torch.allclose(a.pred_original_sample, b.pred_original_sample, atol=1e-6, rtol=0)
    assert torch.allclose(want, got, atol=1e-6, rtol=0)


def test_final_alpha_rule_is_switchable():
    """With set_alpha_to_one=False diffusers ends at alpha_bar[0] < 1; the official rule ends at 1."""
    sched = ddim(set_alpha_to_one=False)
    seq = [900, 500, 0]
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    one, one_steps = run_loop(SpacedDDIM(sched, seq, final_alpha="one"), 3, x)
    dif, _ = run_loop(SpacedDDIM(sched, seq, final_alpha="scheduler"), 3, x)
    assert torch.equal(one, one_steps[-1].pred_original_sample)
    assert not torch.allclose(one, dif, atol=1e-4)


@pytest.mark.parametrize("steps", [1, 2, 5, 10, 16, 20, 29, 50, 100, 250])
def test_quad_timesteps_equals_official_formula_descending(steps):
    seq = quad_timesteps(1000, steps)
    assert seq == official_quad_ascending(1000, steps)[::-1]
    assert len(seq) == steps and seq[-1] == 0
    if steps > 1:
        assert seq[0] == 800  # int(800.0000000000001): linspace pins the end point
    assert all(a >= b for a, b in zip(seq[:-1], seq[1:], strict=True))
    if len(set(seq)) == steps:
        assert all(a > b for a, b in zip(seq[:-1], seq[1:], strict=True))


def test_quad_timesteps_known_values_and_float_truncation():
    assert quad_timesteps(1000, 10) == [800, 632, 483, 355, 246, 158, 88, 39, 9, 0]
    assert 31 in quad_timesteps(1000, 16)  # exact value 32; the official float truncation gives 31


def test_quad_duplicates_kept_by_default_and_refused_on_request():
    seq = quad_timesteps(1000, 100)
    assert seq[-4:] == [0, 0, 0, 0] and seq.count(2) == 2  # the official sequence repeats small t
    assert len(set(quad_timesteps(1000, 29))) == 29
    with pytest.raises(ConfigError, match=r"repeats timesteps \[0, 2\].*100 without repeats is 29"):
        quad_timesteps(1000, 100, duplicates="error")
    with pytest.raises(ConfigError, match="repeats"):
        SpacedDDIM(ddim(), "quad", duplicates="error").set_timesteps(50)


def test_prev_timestep_is_next_entry_not_t_minus_ratio():
    sched = ddim(clip_sample=False)
    spaced = SpacedDDIM(sched, "quad")
    spaced.set_timesteps(10)
    seq = spaced.timesteps.tolist()
    i = 3  # 355 -> 246; diffusers' rule would go to 355 - 100 = 255
    t, t_prev = seq[i], seq[i + 1]
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    eps = eps_model(x, t)
    ab = sched.alphas_cumprod.double()
    x0 = (x.double() - (1 - ab[t]).sqrt() * eps.double()) / ab[t].sqrt()
    want = ab[t_prev].sqrt() * x0 + (1 - ab[t_prev]).sqrt() * eps.double()
    wrong = ab[t - 100].sqrt() * x0 + (1 - ab[t - 100]).sqrt() * eps.double()
    got = spaced.step(eps, seq[i], x).prev_sample.double()
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, wrong, atol=1e-3)
    assert spaced.prev_timestep(i) == t_prev and spaced.prev_timestep(len(seq) - 1) == -1


def test_clip_sample_matches_diffusers_and_clips():
    ref = ddim(clip_sample=True, clip_sample_range=1.0)
    ref.set_timesteps(10)
    spaced = SpacedDDIM(ddim(clip_sample=True, clip_sample_range=1.0), [int(t) for t in ref.timesteps],
                        final_alpha="scheduler")
    spaced.set_timesteps(10)
    t = 900
    x = torch.linspace(-3, 3, 16).reshape(1, 1, 4, 4)
    eps = -torch.linspace(-3, 3, 16).reshape(1, 1, 4, 4)  # makes |x0| far above 1 at t = 900
    ab = ref.alphas_cumprod[t]
    assert ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).abs().max() > 2
    for clipped_eps in (False, True):
        a = ref.step(eps, t, x, use_clipped_model_output=clipped_eps)
        spaced.set_timesteps(10)
        b = spaced.step(eps, t, x, use_clipped_model_output=clipped_eps)
        assert b.pred_original_sample.abs().max() == 1.0
        assert torch.allclose(a.pred_original_sample, b.pred_original_sample, atol=1e-6, rtol=0)
        assert torch.allclose(a.prev_sample, b.prev_sample, atol=1e-6, rtol=0)


def test_full_quad_loop_ends_at_alpha_bar_one():
    spaced = build_spaced_scheduler(ddim(set_alpha_to_one=False), "quad")
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    out, steps = run_loop(spaced, 20, x)
    assert len(steps) == 20 and torch.isfinite(out).all()
    assert torch.equal(out, steps[-1].pred_original_sample)  # alpha_bar = 1 after t = 0


def test_duplicated_timesteps_follow_the_step_counter():
    spaced = SpacedDDIM(ddim(clip_sample=False), "quad")
    spaced.set_timesteps(100)
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    xs = []
    for t in spaced.timesteps:
        xs.append(x)
        x = spaced.step(eps_model(x, t), t, x).prev_sample
    # the three repeated t = 0 steps (a_prev = a_t) leave x unchanged up to rounding
    for k in (96, 97, 98):
        assert torch.allclose(xs[k + 1], xs[k], atol=1e-5)
    assert torch.isfinite(x).all()
    spaced.set_timesteps(100)
    with pytest.raises(ConfigError, match="repeats in the sequence"):
        spaced.step(x, 0, x)  # t = 0 out of order is ambiguous


def test_sample_loop_with_spaced_scheduler_matches_plain_loop():
    from tiny_diffusion import tiny_unet

    from methods.deepcache import DeepCacheUNet, sample_loop

    unet = tiny_unet()
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    sched = SpacedDDIM(ddim(), "quad")
    got = sample_loop(DeepCacheUNet(unet, 0), sched, noise, 5, list(range(5)))
    plain = SpacedDDIM(ddim(), "quad")
    plain.set_timesteps(5)
    x = noise
    with torch.no_grad():
        for t in plain.timesteps:
            x = plain.step(unet(x, t).sample, t, x).prev_sample
    assert sched.timesteps.tolist() == [800, 450, 200, 50, 0]
    assert torch.allclose(got, x, atol=1e-6)


def test_wrapper_interface():
    base = ddim()
    spaced = SpacedDDIM(base, "quad")
    assert spaced.config is base.config and spaced.config.num_train_timesteps == 1000
    assert spaced.init_noise_sigma == 1.0 and spaced.order == 1 and len(spaced) == 1000
    x, n = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    ts = torch.tensor([10, 700])
    assert torch.equal(spaced.add_noise(x, n, ts), base.add_noise(x, n, ts))
    assert torch.equal(spaced.scale_model_input(x, 5), x)
    spaced.set_timesteps(4, device="cpu")
    prev, x0 = spaced.step(n, 800, x, return_dict=False)
    assert prev.shape == x0.shape == x.shape
    # built from a DDPMScheduler / a config mapping (the zoo card stores a DDPMScheduler config)
    assert isinstance(SpacedDDIM(DDPMScheduler(beta_schedule="squaredcos_cap_v2")).scheduler, DDIMScheduler)
    assert SpacedDDIM(dict(base.config)).config.beta_schedule == "squaredcos_cap_v2"


def test_build_spaced_scheduler():
    base = ddim()
    assert build_spaced_scheduler(base, "uniform") is base
    assert isinstance(build_spaced_scheduler(base, "quad"), SpacedDDIM)
    with pytest.raises(ConfigError, match="Did you mean 'quad'"):
        build_spaced_scheduler(base, "qaud")


@pytest.mark.parametrize("kw, match", [
    ({"prediction_type": "v_prediction"}, "epsilon"),
    ({"prediction_type": "sample"}, "epsilon"),
    ({"thresholding": True}, "thresholding=False"),
])
def test_unsupported_configs_raise(kw, match):
    with pytest.raises(ConfigError, match=match):
        SpacedDDIM(ddim(**kw), "quad")


def test_bad_arguments_raise():
    with pytest.raises(ConfigError, match="descending"):
        SpacedDDIM(ddim(), [0, 500, 900])
    with pytest.raises(ConfigError, match=r"\[0, 999\]"):
        SpacedDDIM(ddim(), [1000, 0])
    with pytest.raises(ConfigError, match="final_alpha"):
        SpacedDDIM(ddim(), "quad", final_alpha="on")
    with pytest.raises(ConfigError, match="steps=3"):
        SpacedDDIM(ddim(), [900, 500, 0]).set_timesteps(10)
    spaced = SpacedDDIM(ddim(), "quad")
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ConfigError, match="before set_timesteps"):
        spaced.step(x, 800, x)
    spaced.set_timesteps(5)
    with pytest.raises(ConfigError, match="eta"):
        spaced.step(x, 800, x, eta=0.5)
    with pytest.raises(ConfigError, match="is not in"):
        spaced.step(x, 801, x)
    with pytest.raises(ConfigError, match="steps must be"):
        quad_timesteps(1000, 0)
