"""Images and videos given to the pipelines (condition frames, input videos, first frames) as checked tensors."""

from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from ..video_io import to_tensor_frames


def frames_of(frames: Any, name: str) -> torch.Tensor:
    """Frames given as a list of PIL images, an array `(F, H, W, C)` (`uint8` or float in [0, 1]) or a tensor
    `(F, C, H, W)` in [0, 1] (one image alone counts as one frame), as a float tensor `(F, 3, H, W)` in [0, 1]; `name`
    is the argument named in errors."""
    if isinstance(frames, PIL.Image.Image | np.ndarray) and not (isinstance(frames, np.ndarray) and frames.ndim == 4):
        frames = [frames] if isinstance(frames, PIL.Image.Image) else frames[None]
    if isinstance(frames, list | tuple) and frames and all(isinstance(f, torch.Tensor) for f in frames):
        frames = torch.cat([f[None] if f.ndim == 3 else f for f in frames])  # per-frame (3, H, W) tensors
    if isinstance(frames, torch.Tensor):
        tensor = frames.detach().float().cpu()
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
            raise ValueError(f"`{name}` as a tensor must be (frames, 3, height, width), got {tuple(frames.shape)}.")
        if tensor.numel() == 0:
            raise ValueError(f"`{name}` holds no images.")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"`{name}` must be finite (it holds NaN or inf).")
        if tensor.min() < 0 or tensor.max() > 1:
            raise ValueError(
                f"`{name}` as a tensor must hold values in [0, 1], got [{tensor.min():g}, {tensor.max():g}]."
            )
        return tensor.expand(-1, 3, -1, -1) if tensor.shape[1] == 1 else tensor
    if isinstance(frames, list | tuple) and frames and all(isinstance(f, np.ndarray) for f in frames):
        frames = np.stack(frames)
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = frames[..., None]  # (F, H, W) grey masks
    try:
        return to_tensor_frames(frames)
    except ValueError as error:
        raise ValueError(
            f"`{name}` must be PIL images, an array (frames, height, width, 3) or a tensor (frames, 3, height, width):"
            f" {error}"
        ) from None


def videos_of(video: Any, name: str) -> list[torch.Tensor]:
    """One video, or several (one per prompt, as diffusers takes them: a list of frame lists, of arrays `(F, H, W,
    3)` or of tensors `(F, 3, H, W)`, or one array / tensor of 5 dimensions), as `frames_of` tensors."""
    several = isinstance(video, np.ndarray | torch.Tensor) and video.ndim == 5
    several = several or (
        isinstance(video, list | tuple)
        and bool(video)
        and all(
            isinstance(v, list | tuple) or (isinstance(v, np.ndarray | torch.Tensor) and v.ndim == 4) for v in video
        )
    )
    return [frames_of(v, name) for v in video] if several else [frames_of(video, name)]


def num_prompts(prompt: Any, prompt_embeds: torch.Tensor | None) -> int:
    """How many prompts a call has (a keyframe dict is one)."""
    if isinstance(prompt, list):
        return len(prompt)
    if prompt is None and isinstance(prompt_embeds, torch.Tensor):
        return prompt_embeds.shape[0]
    return 1


def videos_per_prompt(call: dict) -> int:
    """A bound call's `num_videos_per_prompt` (1 where it is not an integer: the call's own checks refuse it)."""
    value = call["num_videos_per_prompt"]
    return value if isinstance(value, int) else 1


def paths_per_video(paths: torch.Tensor, per_prompt: int) -> torch.Tensor:
    """Motion paths read from the inputs, `(inputs, F, 2)`: one input's path for every video (`(F, 2)`), or one per
    prompt, repeated for that prompt's videos (`(prompts * per_prompt, F, 2)`)."""
    return paths[0] if len(paths) == 1 else paths.repeat_interleave(per_prompt, 0)


def fit_frames(frames: torch.Tensor, height: int, width: int, name: str, multiple: int = 8) -> torch.Tensor:
    """Frames at the video's size: resized when only the scale differs, refused when the aspect ratio does (saying
    which video size, in multiples of `multiple`, the VAE's factor, would fit them)."""
    h, w = frames.shape[-2:]
    if (h, w) == (height, width):
        return frames
    if abs(h / w - height / width) > 0.01:
        fitting = max(multiple, round(h / multiple) * multiple), max(multiple, round(w / multiple) * multiple)
        size = (
            f", or make the video {fitting[1]}x{fitting[0]} (height {fitting[0]}, width {fitting[1]})"
            if abs(fitting[0] / fitting[1] - h / w) <= 0.01
            else ""
        )
        raise ValueError(
            f"`{name}` frames are {w}x{h} but the video is {width}x{height} (another aspect ratio): crop them to"
            f" {width}x{height}{size}."
        )
    return F.interpolate(frames, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
