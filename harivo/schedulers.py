"""Sampler choice by name, for the CLI and configs, and the checks that keep a sampler true to the model."""

import inspect
from collections.abc import Callable

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-ancestral": EulerAncestralDiscreteScheduler,
    "dpm-solver++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "lcm": LCMScheduler,  # few-step samplers of consistency-distilled models (LCM-LoRA, AnimateLCM)
    "tcd": TCDScheduler,
}
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
                 "rescale_betas_zero_snr")  # fmt: skip
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")  # diffusers' `timestep_spacing` (trailing: Lightning models)
# Samplers that add fresh IID noise at every step from inside `step`, where the pipeline cannot pass it through the
# adapter's noise mapping network (DDIM with eta > 0 and DPM-Solver's SDE variants take `variance_noise`: those
# the pipeline maps itself).
PER_STEP_NOISE = ("DDPMScheduler", "EulerAncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
                  "DPMSolverSDEScheduler")  # fmt: skip
# Consistency samplers: each step predicts the clean latents, then noises them again to the next step's level. Their
# `step` draws that noise itself; `renoised_step` redoes the noising with noise the pipeline maps.
RENOISING = (LCMScheduler, TCDScheduler)
# Samplers whose update divides by the signal level: they cannot start at a zero-terminal-SNR schedule's pure-noise
# step (PNDM's PLMS update is `sqrt(alpha_bar_prev / alpha_bar_t)`).
NEEDS_NONZERO_SNR = ("PNDMScheduler",)
# Below this signal level a step is pure noise in all but name: a zero-terminal-SNR schedule's last `alpha_bar` is 0,
# which Euler, DPM-Solver and UniPC clamp to 2**-24 (DDIM keeps 0), and its next few are under 1e-6 as well. There the
# clean-latent prediction `(z_t - sqrt(1 - a_t) eps) / sqrt(a_t)` multiplies any change to `eps` by over 1000.
PURE_NOISE_ALPHA_BAR = 1e-6


def is_zero_terminal_snr(scheduler: SchedulerMixin) -> bool:
    """Whether the schedule ends at pure noise (`alpha_bar_T` = 0, Lin et al. 2024)."""
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is not None:
        return float(alphas_cumprod[-1]) < PURE_NOISE_ALPHA_BAR
    return bool(scheduler.config.get("rescale_betas_zero_snr", False))


def make_scheduler(name: str, base: SchedulerMixin, timestep_spacing: str | None = None) -> SchedulerMixin:
    """
    Build the scheduler called `name` with `base`'s noise schedule and prediction type (and, if given, diffusers'
    `timestep_spacing`: `"trailing"` for AnimateDiff-Lightning-style models).

    Samplers without diffusers' `rescale_betas_zero_snr` option get the base's betas as `trained_betas`, so a
    zero-terminal-SNR schedule is never silently dropped.

    Raises:
        `ValueError`: `name` is not one of `SCHEDULERS`, or the sampler cannot run this model's schedule.
    """
    key = name.lower()
    if key not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}.")
    if timestep_spacing is not None and timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(
            f"Unknown timestep spacing {timestep_spacing!r}; choose one of: {', '.join(TIMESTEP_SPACINGS)}."
        )
    scheduler_cls = SCHEDULERS[key]
    config = dict(base.config)
    # diffusers gives keys the base left at its class's defaults the new class's defaults: right for how a sampler
    # steps (its timestep spacing), wrong for the noise schedule, whose defaults differ between samplers (DDIM's
    # beta_start 1e-4, LCM's 8.5e-4): the base's schedule always carries over
    config["_use_default_values"] = [key for key in config.get("_use_default_values", []) if key not in SCHEDULE_KEYS]
    if timestep_spacing is not None:
        if not _accepts(scheduler_cls, "timestep_spacing"):
            raise ValueError(f"The {name} scheduler has no timestep spacing to choose.")
        config["timestep_spacing"] = timestep_spacing
    if config.get("rescale_betas_zero_snr") and not _accepts(scheduler_cls, "rescale_betas_zero_snr"):
        config["trained_betas"] = base.betas.tolist()
    scheduler = scheduler_cls.from_config(config)
    check_schedule(scheduler, base, name)
    check_scheduler(scheduler)
    return scheduler


def check_schedule(scheduler: SchedulerMixin, base: SchedulerMixin, name: str | None = None) -> None:
    """Raise a `ValueError` unless `scheduler` has `base`'s noise schedule and prediction type."""
    name = name or type(scheduler).__name__
    ours, theirs = getattr(scheduler, "alphas_cumprod", None), getattr(base, "alphas_cumprod", None)
    if ours is not None and theirs is not None and not torch.allclose(ours.float(), theirs.float(), atol=1e-6):
        raise ValueError(f"The {name} scheduler cannot reproduce this model's noise schedule; use ddim or euler.")
    prediction = base.config.get("prediction_type", "epsilon")
    if scheduler.config.get("prediction_type", "epsilon") != prediction:
        raise ValueError(f"The {name} scheduler does not support this model's prediction type {prediction!r}.")


def check_scheduler(scheduler: SchedulerMixin, adapter=None) -> None:
    """
    Raise a `ValueError` (saying why, and what to use) for a sampler that would silently break a HARIVO model.

    Args:
        scheduler: The pipeline's scheduler.
        adapter ([`HarivoAdapter`], *optional*): Its adapter; samplers with their own per-step noise are refused only
            when its noise mapping network is not the identity.
    """
    kind = type(scheduler).__name__
    mapped = adapter is not None and not adapter.mapping_network.is_identity
    if mapped and kind in PER_STEP_NOISE:
        raise ValueError(
            f"{kind} adds fresh noise at every step that bypasses this adapter's noise mapping network (the frames"
            " would flicker); use ddim (eta > 0 for stochastic sampling), euler, dpm-solver++ or unipc."
        )
    if kind in NEEDS_NONZERO_SNR and is_zero_terminal_snr(scheduler):
        raise ValueError(
            f"{kind} divides by the signal level, which is zero at this model's first (pure-noise) step of its"
            " zero-terminal-SNR schedule; use ddim, euler, dpm-solver++ or unipc."
        )


def adds_step_noise(scheduler: SchedulerMixin, eta: float = 0.0) -> bool:
    """Whether `scheduler.step` adds noise that it takes as `variance_noise` (DDIM with `eta` > 0, DPM-Solver's SDE
    variants): the pipeline then draws that noise itself, through the mapping network."""
    if "variance_noise" not in inspect.signature(scheduler.step).parameters:
        return False
    if isinstance(scheduler, DDIMScheduler):
        return eta > 0
    return "sde" in str(scheduler.config.get("algorithm_type", ""))


def renoised_step(
    scheduler: SchedulerMixin, model_output: torch.Tensor, timestep, sample: torch.Tensor,
    noise: Callable[[], torch.Tensor], eta: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """
    One step of a consistency sampler (LCM, TCD) whose fresh noise is `noise()` (the pipeline's, mapped like the
    initial noise; drawn only where the step noises) instead of the noise `step` draws itself: the same update as
    diffusers' `step` given that noise.

    Args:
        eta (`float`): TCD's gamma, the share of each step that is noised again (LCM always noises all of it).
    """
    kwargs = {"eta": eta} if isinstance(scheduler, TCDScheduler) else {}
    # the sampler's own draw is discarded: a throwaway generator keeps the caller's random state untouched
    output = scheduler.step(model_output, timestep, sample, generator=torch.Generator().manual_seed(0), **kwargs)
    index = scheduler.step_index  # the next timestep's (`step` advanced it)
    if index >= scheduler.num_inference_steps:  # the last step: no noise
        return output.prev_sample
    alphas_cumprod = scheduler.alphas_cumprod.to(sample.device)
    next_timestep = int(scheduler.timesteps[index])
    alpha_next = alphas_cumprod[next_timestep]
    if isinstance(scheduler, LCMScheduler):
        return alpha_next.sqrt() * output.denoised + (1 - alpha_next).sqrt() * noise()
    if eta == 0:
        return output.prev_sample  # TCD without gamma is deterministic
    ratio = alpha_next / alphas_cumprod[int((1 - eta) * next_timestep)]
    return ratio.sqrt() * output.pred_noised_sample + (1 - ratio).sqrt() * noise()


def default_guidance_rescale(scheduler: SchedulerMixin) -> float:
    """
    The guidance rescale a model with this scheduler wants: 0.7 for a zero-terminal-SNR schedule (Lin et al. 2024,
    section 3.4; such models over-expose under strong guidance without it), else 0 (off).
    """
    return 0.7 if is_zero_terminal_snr(scheduler) else 0.0


def _accepts(scheduler_cls: type, argument: str) -> bool:
    return argument in inspect.signature(scheduler_cls.__init__).parameters
