"""Input and memory checks of `HarivoPipeline`, kept apart so the pipeline file reads in one sitting."""

import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..schedulers import check_scheduler
from . import mg_sampling

MG_ENERGIES = ("frame_difference", "attention", "motion_path")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def check_inputs(
    pipe,
    prompt,
    num_frames,
    height,
    width,
    num_inference_steps,
    guidance_scale,
    negative_prompt,
    prompt_embeds,
    negative_prompt_embeds,
    mg_scale,
    mg_window,
    mg_energy,
    output_type,
    callback_on_step_end_tensor_inputs,
    num_videos_per_prompt=1,
    guidance_rescale=0.0,
    eta=0.0,
    motion_path_projection=None,
    motion_path_window=(0.0, 0.5),
    latents=None,
    decode_chunk_size=16,
    clip_skip=None,
) -> None:
    """Raise a `ValueError` that says what to change for any input `pipe` (a `HarivoPipeline`) cannot run."""
    if (prompt is None) == (prompt_embeds is None):
        raise ValueError("Pass exactly one of `prompt` and `prompt_embeds`.")
    if isinstance(prompt, dict) and negative_prompt is not None and not isinstance(negative_prompt, str):
        raise ValueError("With keyframe prompts give one `negative_prompt` string for every frame.")
    for name, value in (
        ("prompt", None if isinstance(prompt, dict) else prompt),
        ("negative_prompt", negative_prompt),
    ):
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(p, str) for p in value))
        ):
            also = " (or `prompt` a dict of keyframe prompts)" if name == "prompt" else ""
            raise ValueError(f"`{name}` must be a string or a list of strings{also}, got {type(value).__name__}.")
    if isinstance(prompt, list) and not prompt:
        raise ValueError("`prompt` is an empty list: pass at least one prompt.")
    if negative_prompt is not None and negative_prompt_embeds is not None:
        raise ValueError("Pass at most one of `negative_prompt` and `negative_prompt_embeds`.")
    width_unet = pipe.video_unet.config.cross_attention_dim
    for name, embeds in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
        if embeds is None:
            continue
        if not isinstance(embeds, torch.Tensor) or embeds.ndim not in (3, 4) or embeds.shape[-1] != width_unet:
            shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(
                f"`{name}` must be a tensor (batch, tokens, {width_unet}) (the U-Net's cross-attention width), or"
                f" (batch, frames, tokens, {width_unet}) per frame, got {shape}."
            )
        if embeds.ndim == 4 and embeds.shape[1] != num_frames:
            raise ValueError(
                f"`{name}` has text for {embeds.shape[1]} frames but `num_frames` is {num_frames}; give one per frame."
            )
        if not torch.isfinite(embeds).all():
            raise ValueError(f"`{name}` must be finite (it holds NaN or inf).")
    if (
        prompt_embeds is not None
        and negative_prompt_embeds is not None
        and prompt_embeds.shape != negative_prompt_embeds.shape
    ):
        raise ValueError(
            f"`prompt_embeds` {tuple(prompt_embeds.shape)} and `negative_prompt_embeds` "
            f"{tuple(negative_prompt_embeds.shape)} must have the same shape."
        )
    if clip_skip is not None:
        layers = pipe.text_encoder.config.num_hidden_layers if pipe.text_encoder is not None else None
        if not is_int(clip_skip) or clip_skip < 0 or (layers is not None and clip_skip >= layers):
            raise ValueError(
                f"`clip_skip` must be an integer from 0 to {layers - 1 if layers else 'the layers - 1'} (this"
                f" text encoder has {layers} layers), got {clip_skip!r}."
            )
    factor = pipe.vae_scale_factor
    for name, value in (("height", height), ("width", width)):
        if not is_int(value) or value <= 0 or value % factor != 0:
            suggestion = max(factor, round(value / factor) * factor) if is_finite(value) else factor
            raise ValueError(
                f"`{name}` must be a positive multiple of the VAE's down-sampling factor {factor}, got {value}"
                f" (try {suggestion})."
            )
    max_frames = pipe.adapter.max_frames if pipe.adapter is not None else None
    if pipe.free_noise_enabled:  # any length, in windows
        max_frames = None
    if not is_int(num_frames) or not 1 <= num_frames <= (max_frames or num_frames):
        longer = is_int(num_frames) and max_frames and num_frames > max_frames
        more = " (for longer videos call `pipe.enable_free_noise()`)" if longer else ""
        raise ValueError(
            f"`num_frames` must be an integer from 1 to {max_frames} (the most these temporal layers support),"
            f" got {num_frames}{more}."
        )
    if (
        pipe.free_noise_enabled
        and mg_energy == "attention"
        and mg_scale
        and num_frames > pipe._free_noise.context_length
    ):
        raise ValueError(
            "`mg_energy='attention'` compares attention maps of one pass over the clip; with FreeNoise windows use"
            " 'frame_difference' or 'motion_path'."
        )
    loop = pipe.free_noise_enabled and pipe._free_noise.closed_loop
    if loop and is_int(num_frames) and num_frames <= pipe._free_noise.context_length:
        raise ValueError(
            f"A closed loop needs more frames than one window ({pipe._free_noise.context_length}, `context_length`):"
            f" raise `num_frames` or lower `context_length`, got {num_frames} frames."
        )
    if isinstance(prompt, dict):
        check_keyframes(prompt, num_frames)
    for name, value in (
        ("num_inference_steps", num_inference_steps),
        ("num_videos_per_prompt", num_videos_per_prompt),
        ("decode_chunk_size", decode_chunk_size),
    ):
        if not is_int(value) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    train_steps = pipe.scheduler.config.get("num_train_timesteps", 1000)
    if num_inference_steps > train_steps:
        raise ValueError(
            f"`num_inference_steps` must be at most the scheduler's {train_steps} training steps, got"
            f" {num_inference_steps}."
        )
    for name, value, low, high, note in (
        ("guidance_scale", guidance_scale, 0.0, None, " (<= 1 is off)"),
        ("mg_scale", mg_scale, 0.0, None, " (alpha; 0 is off)"),
        ("eta", eta, 0.0, 1.0, " (DDIM's noise share: 0 deterministic, 1 DDPM-like)"),
        ("guidance_rescale", guidance_rescale, 0.0, 1.0, ""),
        ("motion_path_projection", motion_path_projection, 0.0, 1.0, ""),
    ):
        if value is None and name == "motion_path_projection":
            continue
        if not is_finite(value) or value < low or (high is not None and value > high):
            allowed = f"in [{low:g}, {high:g}]" if high is not None else f"a finite number >= {low:g}"
            raise ValueError(f"`{name}` must be {allowed}{note}, got {value!r}.")
    mg_sampling.check_window("mg_window", mg_window)
    mg_sampling.check_window("motion_path_window", motion_path_window)
    if mg_energy not in MG_ENERGIES:
        raise ValueError(f"`mg_energy` must be one of {MG_ENERGIES}, got {mg_energy!r}.")
    if latents is not None and not (isinstance(latents, torch.Tensor) and torch.isfinite(latents).all()):
        raise ValueError("`latents` must be a finite tensor (it holds NaN or inf, or is not a tensor).")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
    if not all(k in pipe._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs):
        raise ValueError(f"`callback_on_step_end_tensor_inputs` must be among {pipe._callback_tensor_inputs}.")
    if not (
        callable(getattr(pipe.scheduler, "set_timesteps", None)) and callable(getattr(pipe.scheduler, "step", None))
    ):
        raise ValueError(f"`scheduler` must be a diffusers scheduler, got {type(pipe.scheduler).__name__}.")
    check_scheduler(pipe.scheduler, pipe.adapter)


def check_keyframes(prompt: Mapping, num_frames: int) -> None:
    """Raise a one-line `ValueError` for a keyframe prompt dict `pipe` cannot run with `num_frames` frames."""
    if not prompt:
        raise ValueError("`prompt` is an empty dict: give at least one keyframe, e.g. {0: 'a red circle'}.")
    for frame, text in prompt.items():
        if not is_int(frame):
            raise ValueError(f"`prompt` keyframes must be integer frame indices, got {frame!r}.")
        if not 0 <= frame < num_frames:
            raise ValueError(
                f"`prompt` keyframe {frame} is outside the video's frames 0 to {num_frames - 1}; lower it or raise"
                " `num_frames`."
            )
        if not isinstance(text, str):
            raise ValueError(f"`prompt` at keyframe {frame} must be a string, got {type(text).__name__}.")


def callback_tensor(outputs: Any, name: str, current: torch.Tensor) -> torch.Tensor:
    """The tensor `name` a `callback_on_step_end` returned (or `current` where it returned none), refused in one line
    unless it is a tensor of `current`'s shape."""
    if not isinstance(outputs, dict):
        raise ValueError(f"`callback_on_step_end` must return a dict (or None), got {type(outputs).__name__}.")
    value = outputs.pop(name, current)
    if not isinstance(value, torch.Tensor) or value.shape != current.shape:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"`callback_on_step_end` returned `{name}` of shape {shape}; it must keep the shape {tuple(current.shape)}."
        )
    return value.to(current.device, current.dtype)


def estimate_memory(
    pipe,
    num_frames: int = 16,
    height: int | None = None,
    width: int | None = None,
    num_videos: int = 1,
    guidance_scale: float = 7.5,
    decode_chunk_size: int = 16,
) -> int:
    """
    Rough peak memory, in bytes, of one call: the weights plus the larger of the U-Net's and the VAE decoder's
    activations at their highest resolution, times factors measured on the embedded model (peak RSS at 128-384 px,
    16 frames: within 15 % above 256 px). An estimate for refusing sizes that cannot fit, not a promise.
    """
    unet, factor = pipe.video_unet.config, pipe.vae_scale_factor
    height = height or unet.sample_size * factor
    width = width or unet.sample_size * factor
    element = torch.finfo(pipe.video_unet.dtype).bits // 8
    copies = num_videos * (2 if guidance_scale > 1 else 1) * num_frames
    unet_activation = copies * unet.block_out_channels[0] * (height // factor) * (width // factor) * element
    vae_channels = pipe.vae.config.block_out_channels[0] if pipe.vae is not None else 128
    vae_activation = min(decode_chunk_size, num_frames) * num_videos * vae_channels * height * width * element
    weights = sum(
        p.numel() * p.element_size()
        for module in (pipe.vae, pipe.text_encoder, pipe.unet, pipe.adapter)
        if module is not None
        for p in module.parameters()
    )
    return weights + max(33 * unet_activation, 8 * vae_activation)


def check_memory(
    pipe,
    num_frames: int = 16,
    height: int | None = None,
    width: int | None = None,
    num_videos: int = 1,
    guidance_scale: float = 7.5,
    decode_chunk_size: int = 16,
    device: torch.device | str | None = None,
) -> None:
    """Raise a `MemoryError` that says what to lower when `estimate_memory` exceeds the free memory of `device`.
    `__call__` runs it first unless `pipe.memory_check` is `False`."""
    if not all(isinstance(v, int) and v > 0 for v in (num_frames, height or 1, width or 1, num_videos)):
        return  # check_inputs explains bad sizes
    needed = estimate_memory(pipe, num_frames, height, width, num_videos, guidance_scale, decode_chunk_size)
    available = free_memory(torch.device(device) if device is not None else pipe._execution_device)
    if available is not None and needed > available:
        raise MemoryError(
            f"This call needs about {needed / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is free: lower"
            " height/width, num_frames or decode_chunk_size (`pipe.memory_check = False` / CLI --skip-memory-check runs"
            " it anyway)."
        )


def free_memory(device: torch.device) -> int | None:
    """Free bytes on `device` (CUDA: free device memory; CPU: available RAM), or `None` where it is unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
