"""Sampler choice by name, for the CLI and configs."""

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


def make_scheduler(name: str, config: dict) -> SchedulerMixin:
    """
    Build the scheduler called `name` from another scheduler's `config` (keeps the base model's noise schedule).

    Raises:
        `ValueError`: `name` is not one of `SCHEDULERS`.
    """
    key = name.lower()
    if key not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}.")
    return SCHEDULERS[key].from_config(config)


def default_guidance_rescale(config: dict) -> float:
    """
    The guidance rescale a model with this scheduler `config` wants: 0.7 for a zero-terminal-SNR schedule (Lin et al.
    2024, section 3.4; such models over-expose under strong guidance without it), else 0 (off).
    """
    return 0.7 if config.get("rescale_betas_zero_snr", False) else 0.0
