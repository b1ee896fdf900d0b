"""Deterministic DDIM (eta = 0) on an arbitrary timestep sequence, with the official DDIM code's
quadratic ("quad") spacing, as a drop-in for a diffusers `DDIMScheduler` in evfarm's samplers.

Paper: Song, Meng, Ermon, "Denoising Diffusion Implicit Models", arXiv 2010.02502 (eq. 12);
official code `ermongroup/ddim` (`runners/diffusion.py::sample_image`,
`functions/denoising.py::generalized_steps`), which CacheQuant (arXiv 2503.01323,
`BienLuky/CacheQuant`) runs on CIFAR-10 with `skip_type="quad"`.

Why this module: diffusers' `DDIMScheduler.step` takes the previous timestep to be
`t - num_train_timesteps // num_inference_steps`, which is only right for its own uniform spacing.
`SpacedDDIM.step` takes it to be the next entry of the sequence actually iterated.

* [paper] The update: x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t),
  x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps, with a = alpha_bar (cumulative product).
* [code: ermongroup/ddim] Quad spacing: `seq = np.linspace(0, sqrt(0.8 T), steps) ** 2`, truncated
  with `int` (reproduced verbatim in float64: where the exact value is a perfect square the float
  result can fall just below it, e.g. 31 for 32 at T = 1000, steps = 16), iterated from last to
  first; after the last entry alpha_bar(-1) = 1 (the code pads the betas with a 0 at index -1),
  so the final step returns the predicted x0 itself. `final_alpha="one"`
  (the default) follows this; `final_alpha="scheduler"` uses the wrapped scheduler's
  `final_alpha_cumprod` instead (1 when its `set_alpha_to_one` is True, the diffusers default and the
  zoo's setting, else alpha_bar[0]), which is what makes the step exactly comparable with diffusers.
* [inferred, measured] Quad spacing starts at t = 0.8 T, a choice made for the official code's
  *linear* beta schedule, where alpha_bar(800) = 0.0015 (the start is still noise). On the zoo's
  cosine schedule (`squaredcos_cap_v2`) alpha_bar(800) = 0.093: sampling from pure noise at that t
  misstates the signal level, and FP quality falls (ddpm-digits, 20 steps, 1,000 samples: digit-FD
  13.6 [9.4, 17.7] uniform vs 41.0 [34.5, 47.6] quad). Compare quad-spaced methods with a
  quad-spaced FP, as bench_cachequant does.
* [code: ermongroup/ddim] Duplicates: the truncation repeats small timesteps when `steps` is large
  (T = 1000: none up to 29 steps; steps = 50 gives t = 0 twice; steps = 100 gives t = 0 four
  times and t = 2 twice).
  The official loop keeps them: a repeated t is a step with a_prev = a_t, i.e. x_prev = x_t up to
  rounding (not exactly when x0 is clipped), and it still costs one model call. We keep them by
  default (`duplicates="keep"`) so step counts and cache/refresh schedules match the official run;
  `duplicates="error"` refuses such a sequence with a `ConfigError` that names the largest step
  count without repeats. Because a timestep can repeat, `step` locates the current entry by a step
  counter reset in `set_timesteps`, not by value [ours].
* [code: diffusers 0.42.1 `DDIMScheduler.step`] Order of operations, dtypes and options are
  mirrored: x0 from eps, then clipping to +-`clip_sample_range` when `config.clip_sample`, eps
  re-derived from the clipped x0 only when `use_clipped_model_output=True` (diffusers' default is
  False: the raw model output is the direction term), then the x_prev formula. Only
  `prediction_type="epsilon"`, `thresholding=False` and eta = 0 are supported; anything else is a
  `ConfigError` [ours]. Note: the official `generalized_steps` never clips x0; to match it exactly
  use a scheduler config with `clip_sample=False` (the zoo's configs have `clip_sample=True`).
* [ours] `build_spaced_scheduler(scheduler, "uniform" | "quad")`: "uniform" returns the diffusers
  scheduler unchanged (its own `timestep_spacing`; with "leading", offset 0 and T divisible by
  `steps` that is the official `range(0, T, T // steps)`), "quad" wraps it in `SpacedDDIM`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from methods.errors import ConfigError, did_you_mean

SPACINGS = ("uniform", "quad")
FINAL_ALPHAS = ("one", "scheduler")
DUPLICATES = ("keep", "error")


def _official_quad(num_train_timesteps: int, steps: int) -> list[int]:
    """The official ascending sequence, verbatim (numpy float64, `int` truncation)."""
    seq = np.linspace(0, np.sqrt(num_train_timesteps * 0.8), steps) ** 2
    return [int(s) for s in list(seq)]


def _has_repeats(seq: Sequence[int]) -> bool:
    return len(set(seq)) != len(seq)


def quad_timesteps(num_train_timesteps: int, steps: int, *, duplicates: str = "keep") -> list[int]:
    """The official DDIM `skip_type="quad"` timesteps, descending (the order samplers iterate).

    `duplicates="keep"` returns the official sequence as is, repeats included (see the module
    docstring); `duplicates="error"` raises `ConfigError` when it has repeats.

    >>> quad_timesteps(1000, 5)
    [800, 450, 200, 50, 0]
    """
    if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
        raise ConfigError(f"num_train_timesteps must be an int >= 2; received {num_train_timesteps!r}. "
                          "Pass scheduler.config.num_train_timesteps.")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps must be an int >= 1; received {steps!r}. "
                          "Pass the number of sampling steps.")
    if duplicates not in DUPLICATES:
        raise ConfigError(f"duplicates must be one of {DUPLICATES}; received {duplicates!r}. "
                          f"{did_you_mean(str(duplicates), DUPLICATES)}")
    seq = _official_quad(num_train_timesteps, steps)
    if duplicates == "error" and _has_repeats(seq):
        most = next(n for n in range(steps - 1, 0, -1)
                    if not _has_repeats(_official_quad(num_train_timesteps, n)))
        repeated = sorted({t for t in seq if seq.count(t) > 1})
        raise ConfigError(
            f"quad spacing with {steps} steps over {num_train_timesteps} train timesteps repeats timesteps "
            f"{repeated}; expected distinct timesteps. The largest step count below {steps} without "
            f"repeats is {most}; use that, or duplicates='keep' to run the official sequence with its "
            "repeats.")
    return seq[::-1]


def _as_ddim(scheduler: Any) -> Any:
    from diffusers import DDIMScheduler

    if isinstance(scheduler, DDIMScheduler):
        return scheduler
    config = getattr(scheduler, "config", scheduler)
    if isinstance(config, Mapping):
        return DDIMScheduler.from_config(dict(config))
    raise ConfigError("expected a diffusers DDIMScheduler (or a scheduler / config mapping to build one "
                      f"from); received {type(scheduler).__name__}. Pass the checkpoint's scheduler or its "
                      "config.")


class SpacedDDIM:
    """Deterministic DDIM on a given timestep sequence, wrapping a diffusers `DDIMScheduler`.

    `spacing` is "quad" (official DDIM quad spacing, computed in `set_timesteps`) or an explicit
    descending sequence of train timesteps (then `set_timesteps(steps)` needs `steps == len(seq)`).
    `final_alpha`: "one" (alpha_bar after the last step is 1, official DDIM) or "scheduler" (the
    wrapped scheduler's `final_alpha_cumprod`, diffusers' rule). The interface is the part of a
    diffusers scheduler evfarm's samplers use: `config`, `set_timesteps`, `timesteps`, `step`,
    `scale_model_input`, `add_noise`, `init_noise_sigma`, `order`.
    """

    order = 1

    def __init__(self, scheduler: Any, spacing: str | Sequence[int] = "quad", *, final_alpha: str = "one",
                 duplicates: str = "keep") -> None:
        self.scheduler = _as_ddim(scheduler)
        cfg = self.scheduler.config
        if cfg.prediction_type != "epsilon":
            raise ConfigError(f"SpacedDDIM supports prediction_type='epsilon' only; received "
                              f"{cfg.prediction_type!r}. Use spacing 'uniform' (the diffusers scheduler) "
                              "for this model.")
        if cfg.thresholding:
            raise ConfigError("SpacedDDIM supports thresholding=False only; received thresholding=True. Set "
                              "thresholding=False in the scheduler config, or use spacing 'uniform'.")
        if final_alpha not in FINAL_ALPHAS:
            raise ConfigError(f"final_alpha must be one of {FINAL_ALPHAS}; received {final_alpha!r}. "
                              f"{did_you_mean(str(final_alpha), FINAL_ALPHAS)}")
        if duplicates not in DUPLICATES:
            raise ConfigError(f"duplicates must be one of {DUPLICATES}; received {duplicates!r}. "
                              f"{did_you_mean(str(duplicates), DUPLICATES)}")
        self.final_alpha, self.duplicates = final_alpha, duplicates
        self.spacing: str | tuple[int, ...]
        if isinstance(spacing, str):
            if spacing != "quad":
                raise ConfigError(f"SpacedDDIM spacing must be 'quad' or a sequence of timesteps; received "
                                  f"{spacing!r}. {did_you_mean(spacing, ['quad'])}")
            self.spacing = spacing
        else:
            self.spacing = self._check_sequence(spacing)
        self.final_alpha_cumprod = (torch.tensor(1.0) if final_alpha == "one"
                                    else self.scheduler.final_alpha_cumprod)
        self.init_noise_sigma = self.scheduler.init_noise_sigma
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None
        self._seq: list[int] = []
        self._step_index = 0

    def _check_sequence(self, spacing: Sequence[int]) -> tuple[int, ...]:
        n_train = self.config.num_train_timesteps
        try:
            seq = tuple(int(t) for t in spacing)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"explicit spacing must be a sequence of ints; received {spacing!r}. "
                              "Pass e.g. quad_timesteps(1000, 20).") from err
        if not seq or any(not 0 <= t < n_train for t in seq):
            raise ConfigError("explicit spacing must be a non-empty sequence of timesteps in "
                              f"[0, {n_train - 1}]; received {list(seq)}. Pass train timesteps of this "
                              "scheduler.")
        if any(a < b for a, b in zip(seq[:-1], seq[1:], strict=True)):
            raise ConfigError(f"explicit spacing must be descending (the order samplers iterate); received "
                              f"{list(seq)}. Pass sorted(seq, reverse=True).")
        if self.duplicates == "error" and _has_repeats(seq):
            raise ConfigError("explicit spacing repeats timesteps with duplicates='error'; received "
                              f"{list(seq)}. Remove the repeats or pass duplicates='keep'.")
        return seq

    @property
    def config(self) -> Any:
        """The wrapped scheduler's config (`num_train_timesteps`, `clip_sample`, ...)."""
        return self.scheduler.config

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.scheduler.alphas_cumprod

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Set `self.timesteps` (LongTensor, descending) for `num_inference_steps`; resets the counter."""
        if isinstance(self.spacing, str):
            seq = quad_timesteps(self.config.num_train_timesteps, num_inference_steps,
                                 duplicates=self.duplicates)
        else:
            if num_inference_steps != len(self.spacing):
                raise ConfigError(f"this SpacedDDIM has an explicit sequence of {len(self.spacing)} "
                                  f"timesteps; received num_inference_steps={num_inference_steps}. Pass "
                                  f"steps={len(self.spacing)} or build the scheduler with another sequence.")
            seq = list(self.spacing)
        self._seq, self._step_index = seq, 0
        self.num_inference_steps = len(seq)
        self.timesteps = torch.tensor(seq, dtype=torch.long, device=device)

    def _index(self, timestep: int) -> int:
        """Index of `timestep` in the sequence: the step counter when it agrees, else its unique position."""
        i = self._step_index
        if i < len(self._seq) and self._seq[i] == timestep:
            return i
        where = [k for k, s in enumerate(self._seq) if s == timestep]
        if len(where) == 1:
            return where[0]
        got = "is not in" if not where else "repeats in"
        raise ConfigError(f"timestep {timestep} {got} the sequence {self._seq}, expected at step {i} "
                          f"timestep {self._seq[i] if i < len(self._seq) else '(none: sequence finished)'}. "
                          "Iterate scheduler.timesteps in order after set_timesteps.")

    def prev_timestep(self, index: int) -> int:
        """The timestep after entry `index`; -1 after the last (alpha_bar = `final_alpha_cumprod`)."""
        return self._seq[index + 1] if index + 1 < len(self._seq) else -1

    def step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor,
             eta: float = 0.0, use_clipped_model_output: bool = False,
             generator: torch.Generator | None = None, variance_noise: torch.Tensor | None = None,
             return_dict: bool = True, **kw: Any) -> Any:
        """One DDIM step from `timestep` to the next entry of the sequence (diffusers' signature and output).

        `generator` and `variance_noise` are accepted for interface compatibility and unused (eta = 0).
        """
        from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput

        if self.timesteps is None:
            raise ConfigError("SpacedDDIM.step called before set_timesteps; expected set_timesteps(steps) "
                              "first. Call scheduler.set_timesteps(steps) before the sampling loop.")
        if eta != 0:
            raise ConfigError(f"SpacedDDIM is deterministic DDIM (eta = 0); received eta={eta!r}. Pass eta=0 "
                              "or use spacing 'uniform' (the diffusers scheduler) for stochastic sampling.")
        if kw:
            raise ConfigError(f"SpacedDDIM.step got unexpected arguments {sorted(kw)}; expected those of "
                              "diffusers DDIMScheduler.step. Remove them.")
        t = int(timestep)
        i = self._index(t)
        prev_t = self.prev_timestep(i)
        self._step_index = i + 1

        # mirrors diffusers DDIMScheduler.step (0.42.1), steps 2-7, with eta = 0
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        pred_epsilon = model_output
        if self.config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-self.config.clip_sample_range,
                                                               self.config.clip_sample_range)
        if use_clipped_model_output:
            pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
        pred_sample_direction = (1 - alpha_prod_t_prev) ** (0.5) * pred_epsilon
        prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
        if not return_dict:
            return prev_sample, pred_original_sample
        return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """Identity, as for DDIM (diffusers pipelines call it)."""
        return self.scheduler.scale_model_input(sample, timestep)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.Tensor) -> torch.Tensor:
        """The forward process q(x_t | x_0), delegated to the wrapped scheduler."""
        return self.scheduler.add_noise(original_samples, noise, timesteps)

    def __repr__(self) -> str:
        spacing = self.spacing if isinstance(self.spacing, str) else f"<{len(self.spacing)} timesteps>"
        return (f"SpacedDDIM(spacing={spacing!r}, final_alpha={self.final_alpha!r}, "
                f"duplicates={self.duplicates!r})")


def build_spaced_scheduler(scheduler: Any, spacing: str, **kwargs: Any) -> Any:
    """'uniform': the diffusers scheduler unchanged; 'quad': `SpacedDDIM(scheduler, 'quad', **kwargs)`."""
    if spacing == "uniform":
        if kwargs:
            raise ConfigError(f"spacing 'uniform' takes no options; received {sorted(kwargs)}. Remove them "
                              "or use spacing 'quad'.")
        return scheduler
    if spacing == "quad":
        return SpacedDDIM(scheduler, "quad", **kwargs)
    raise ConfigError(f"unknown timestep spacing {spacing!r}; expected one of {SPACINGS}. "
                      f"{did_you_mean(str(spacing), SPACINGS)}")
