"""Sampler choice by name, for the CLI and configs, and the checks that keep a sampler true to the model."""

import inspect

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
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
}
# Samplers that add fresh IID noise at every step from inside `step`, where the pipeline cannot pass it through the
# adapter's noise mapping network (DDIM with eta > 0 and DPM-Solver's SDE variants take `variance_noise`: those
# the pipeline maps itself).
PER_STEP_NOISE = ("DDPMScheduler", "EulerAncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
                  "DPMSolverSDEScheduler", "LCMScheduler", "TCDScheduler")  # fmt: skip
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


def make_scheduler(name: str, base: SchedulerMixin) -> SchedulerMixin:
    """
    Build the scheduler called `name` with `base`'s noise schedule and prediction type.

    Samplers without diffusers' `rescale_betas_zero_snr` option get the base's betas as `trained_betas`, so a
    zero-terminal-SNR schedule is never silently dropped.

    Raises:
        `ValueError`: `name` is not one of `SCHEDULERS`, or the sampler cannot run this model's schedule.
    """
    key = name.lower()
    if key not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}.")
    scheduler_cls = SCHEDULERS[key]
    config = dict(base.config)
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


def default_guidance_rescale(scheduler: SchedulerMixin) -> float:
    """
    The guidance rescale a model with this scheduler wants: 0.7 for a zero-terminal-SNR schedule (Lin et al. 2024,
    section 3.4; such models over-expose under strong guidance without it), else 0 (off).
    """
    return 0.7 if is_zero_terminal_snr(scheduler) else 0.0


def _accepts(scheduler_cls: type, argument: str) -> bool:
    return argument in inspect.signature(scheduler_cls.__init__).parameters
