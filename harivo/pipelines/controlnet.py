"""ControlNet conditioning of HARIVO's video U-Net: the checked inputs of one call and the residuals of one step.

Kept apart from `HarivoControlNetPipeline` so that the pipeline file reads in one sitting. A ControlNet is an image
model (a copy of the frozen U-Net's encoder): it runs frame by frame on the controlled frames only, reads the plain
prompt (not HARIVO's frame tokens), and its residuals enter the frozen spatial layers of those frames; the other
frames get none and follow from the temporal layers.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from diffusers import ControlNetModel, SparseControlNetModel
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

from ..errors import IncompatibleControlNetError
from .frames import fit_frames, videos_of


@dataclass
class ControlInputs:
    """One call's controls, checked: per net its condition images `(clips, frames controlled, 3, H, W)` in [0, 1],
    one clip for every video or one per prompt, the controlled frame indices (of `num_frames`), per net its scale
    and the `[start, end]` fraction of the schedule it acts in, and the videos made per prompt."""

    images: list[torch.Tensor]
    frame_indices: list[int]
    num_frames: int
    scales: list[float]
    starts: list[float]
    ends: list[float]
    guess_mode: bool
    videos_per_prompt: int = 1

    def per_video(self, images: torch.Tensor, videos: int) -> torch.Tensor:
        """`images` `(clips, ...)` for each of `videos` videos of the U-Net's batch, which is ordered (guidance half,
        prompt, video of the prompt): one clip serves every video, one per prompt serves that prompt's."""
        if images.shape[0] == 1:
            return images.expand(videos, *images.shape[1:])
        per_half = images.repeat_interleave(self.videos_per_prompt, 0)
        return per_half.repeat(videos // per_half.shape[0], *([1] * (images.ndim - 1)))


def in_window(control: ControlInputs, frames: Sequence[int]) -> ControlInputs | None:
    """
    The controls of one long-video window `frames` (the clip's frame numbers, in the window's order; a loop's window
    wraps past the last frame): the controlled frames inside it, numbered by their place in the window, so each
    window's nets see the conditions of its own frames [ours]. `None` where the window holds no controlled frame
    (it gets no residual, as an uncontrolled frame of a short clip gets none from an image ControlNet).
    """
    place = {frame: position for position, frame in enumerate(frames)}
    kept = sorted(
        (k for k, frame in enumerate(control.frame_indices) if frame in place),
        key=lambda k: place[control.frame_indices[k]],
    )
    if not kept:
        return None
    return replace(
        control, images=[images[:, kept] for images in control.images],
        frame_indices=[place[control.frame_indices[k]] for k in kept], num_frames=len(place),
    )  # fmt: skip


def as_multi(controlnet: Any) -> MultiControlNetModel | ControlNetModel:
    """A list or tuple of ControlNets becomes a `MultiControlNetModel`, as in diffusers' ControlNet pipelines."""
    if isinstance(controlnet, list | tuple):
        return MultiControlNetModel(list(controlnet))
    return controlnet


def nets_of(controlnet: Any) -> list[ControlNetModel]:
    """The ControlNets of a `ControlNetModel` or `MultiControlNetModel` (also `torch.compile`d)."""
    base = getattr(controlnet, "_orig_mod", controlnet)
    return list(base.nets) if isinstance(base, MultiControlNetModel) else [controlnet]


def check_controlnet(controlnet: Any, unet_config: Any) -> None:
    """One-line `IncompatibleControlNetError` (a `ValueError`) when a ControlNet was built for another base model than
    the pipeline's U-Net."""
    nets = nets_of(controlnet)
    for index, net in enumerate(nets):
        config = getattr(getattr(net, "_orig_mod", net), "config", None)
        which = "The ControlNet" if len(nets) == 1 else f"ControlNet {index}"
        if config is None or not hasattr(config, "conditioning_embedding_out_channels"):
            raise ValueError(f"{which} is a {type(net).__name__}, not a diffusers ControlNetModel.")
        for key in ("cross_attention_dim", "block_out_channels", "in_channels"):
            theirs, ours = config.get(key), unet_config.get(key)
            if key == "block_out_channels":
                theirs, ours = tuple(theirs), tuple(ours)
            if theirs != ours:
                raise IncompatibleControlNetError(
                    f"{which} was built for another base model: its {key} is {theirs}, this U-Net's is {ours}. Use a"
                    " ControlNet trained for this base model (same architecture, e.g. SD 1.5 for SD 1.5)."
                )


def _per_net(value: Any, count: int, name: str) -> list:
    values = list(value) if isinstance(value, list | tuple) else [value] * count
    if len(values) != count:
        raise ValueError(f"`{name}` has {len(values)} entries for {count} ControlNets; give one per ControlNet.")
    return values


def prepare_control(
    controlnet: Any,
    conditioning_frames: Any,
    controlnet_frame_indices: Sequence[int] | None,
    controlnet_conditioning_scale: float | Sequence[float],
    control_guidance_start: float | Sequence[float],
    control_guidance_end: float | Sequence[float],
    guess_mode: bool,
    num_frames: int,
    height: int,
    width: int,
    multiple: int = 8,
    prompts: int = 1,
    videos_per_prompt: int = 1,
) -> ControlInputs:
    """
    Check one call's control inputs and bring the condition images to the video's size.

    `conditioning_frames` holds, per ControlNet (a list of such for several), one image per frame or one per index
    of `controlnet_frame_indices`: one clip for every video, or a list of clips, one per prompt (of `prompts`), as
    diffusers takes them. Frames of another size with the video's aspect ratio are resized (bilinear);
    another aspect ratio is refused. Every mistake is a one-line `ValueError` that says what to change.
    """
    nets = nets_of(controlnet)
    if conditioning_frames is None:
        raise ValueError(
            "Pass `conditioning_frames`: the condition images of the controlled frames (e.g. silhouettes, depth maps)."
        )
    if len(nets) > 1:
        if not isinstance(conditioning_frames, list | tuple) or len(conditioning_frames) != len(nets):
            raise ValueError(
                f"With {len(nets)} ControlNets, `conditioning_frames` must be a list of {len(nets)} entries, the frames"
                " of each net."
            )
        per_net = list(conditioning_frames)
    else:
        per_net = [conditioning_frames]
    if controlnet_frame_indices is None:
        indices = list(range(num_frames))
    else:
        if not isinstance(controlnet_frame_indices, list | tuple | range | np.ndarray | torch.Tensor):
            raise ValueError(
                f"`controlnet_frame_indices` must be a list of frame numbers (e.g. [0, 15]), got {controlnet_frame_indices!r}."
            )
        indices = [i.item() if isinstance(i, torch.Tensor | np.generic) else i for i in controlnet_frame_indices]
        if not indices or not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in indices):
            raise ValueError(
                f"`controlnet_frame_indices` must be a non-empty list of frame numbers, got {controlnet_frame_indices!r}."
            )
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < num_frames]
        if bad:
            raise ValueError(f"`controlnet_frame_indices` {bad} are outside the video's frames 0 to {num_frames - 1}.")
        if len(set(indices)) != len(indices):
            repeated = sorted({i for i in indices if indices.count(i) > 1})
            raise ValueError(f"`controlnet_frame_indices` repeats frames {repeated}; give each frame once.")
    images = []
    for number, frames in enumerate(per_net):
        name = "conditioning_frames" if len(nets) == 1 else f"conditioning_frames[{number}]"
        clips = videos_of(frames, name)
        if len(clips) not in (1, prompts):
            raise ValueError(f"`{name}` holds {len(clips)} clips for {prompts} prompts: pass one, or one per prompt.")
        for tensor in clips:
            if len(tensor) != len(indices):
                wanted = (
                    f"`num_frames` ({num_frames}), one per frame"
                    if controlnet_frame_indices is None
                    else f"`controlnet_frame_indices` ({len(indices)}), one per controlled frame"
                )
                raise ValueError(f"`{name}` has {len(tensor)} images; it needs as many as {wanted}.")
        images.append(torch.stack([fit_frames(tensor, height, width, name, multiple) for tensor in clips]))
    scales = [float(s) for s in _per_net(controlnet_conditioning_scale, len(nets), "controlnet_conditioning_scale")]
    starts = [float(s) for s in _per_net(control_guidance_start, len(nets), "control_guidance_start")]
    ends = [float(e) for e in _per_net(control_guidance_end, len(nets), "control_guidance_end")]
    for scale in scales:
        if not np.isfinite(scale) or scale < 0:
            raise ValueError(f"`controlnet_conditioning_scale` must be finite and >= 0, got {scale}.")
    for start, end in zip(starts, ends):
        if not 0 <= start < end <= 1:
            raise ValueError(
                f"`control_guidance_start` ({start}) must be below `control_guidance_end` ({end}), both in [0, 1]."
            )
    # A net trained without the prompt (global pooling of its condition) always runs in guess mode, as in diffusers
    guess_mode = bool(guess_mode) or any(n.config.get("global_pool_conditions", False) for n in nets)
    return ControlInputs(images, indices, num_frames, scales, starts, ends, guess_mode, videos_per_prompt)


def control_residuals(
    controlnet: Any,
    control: ControlInputs,
    model_input: torch.Tensor,
    t: torch.Tensor,
    prompt_embeds: torch.Tensor,
    step: int,
    num_steps: int,
    classifier_free: bool,
) -> dict[str, Any]:
    """
    The U-Net's ControlNet residuals at one step, summed over the nets: an image ControlNet's on the controlled
    frames and zeros on every other frame; a SparseCtrl net's on every frame (it spreads the controlled frames'
    conditions itself); zeros for the negative prompt's half of the batch in guess mode with classifier-free
    guidance.

    Args:
        model_input (`torch.Tensor`): The U-Net's input `(N, C, F, h, w)` (scheduler-scaled).
        prompt_embeds (`torch.Tensor`): `(N, L, D)` or per frame `(N, F, L, D)`, the negative prompts first under
            classifier-free guidance.

    Returns:
        `dict`: `down_block_additional_residuals` and `mid_block_additional_residual`, frames in the batch
        `(N*F, ...)`; empty when every net is outside its guidance window or at scale 0.
    """
    keep = [
        1.0 - float(step / num_steps < s or (step + 1) / num_steps > e) for s, e in zip(control.starts, control.ends)
    ]
    scales = [scale * k for scale, k in zip(control.scales, keep)]
    if not any(scales):
        return {}
    batch, _, num_frames = model_input.shape[:3]
    sample, embeds, offset = model_input, prompt_embeds, 0
    if control.guess_mode and classifier_free:  # the nets see only the prompt's half, as in diffusers
        offset = batch // 2
        sample, embeds = model_input[offset:], prompt_embeds[offset:]
    videos = sample.shape[0]
    index = torch.tensor(control.frame_indices, device=sample.device)
    down, mid = None, None
    for net, images, scale in zip(nets_of(controlnet), control.images, scales):
        if scale == 0:
            continue
        images = control.per_video(images, videos)  # (videos, controlled, ...)
        if _is_sparse(net):
            net_down, net_mid = _sparse_residuals(net, images, index, sample, t, embeds, scale, control.guess_mode)
        else:
            net_down, net_mid = _image_residuals(net, images, index, sample, t, embeds, scale, control.guess_mode)
        down = list(net_down) if down is None else [a + b for a, b in zip(down, net_down)]
        mid = net_mid if mid is None else mid + net_mid

    def widen(residual: torch.Tensor) -> torch.Tensor:  # (videos*frames, ...) -> (batch*frames, ...)
        if offset == 0:
            return residual
        full = residual.new_zeros(batch, num_frames, *residual.shape[1:])
        full[offset:] = residual.unflatten(0, (videos, num_frames))
        return full.flatten(0, 1)  # frames in (video, frame) order

    return {
        "down_block_additional_residuals": tuple(widen(r) for r in down),
        "mid_block_additional_residual": widen(mid),
    }


def _frame_text(embeds: torch.Tensor, index: torch.Tensor | None, num_frames: int) -> torch.Tensor:
    """The text of each (controlled) frame, `(videos * frames, L, D)`, from `(videos, L, D)` or per-frame
    `(videos, F, L, D)` text (prompt travel); `index` picks frames (`None`: all)."""
    if embeds.ndim == 3:
        embeds = embeds[:, None].expand(-1, num_frames, -1, -1)
    return (embeds if index is None else embeds.index_select(1, index)).flatten(0, 1)


def _is_sparse(net: Any) -> bool:
    return isinstance(getattr(net, "_orig_mod", net), SparseControlNetModel)


def reads_latents(net: Any) -> bool:
    """Whether a net reads its conditions as VAE latents (SparseCtrl's RGB nets) rather than as images."""
    return _is_sparse(net) and bool(net.config.get("use_simplified_condition_embedding", False))


def _image_residuals(net, images, index, sample, t, embeds, scale, guess_mode):
    """An image ControlNet on the controlled frames alone; zeros for the others: `(videos*frames, ...)` each."""
    videos, num_frames, controlled = sample.shape[0], sample.shape[2], len(index)
    frames = sample.index_select(2, index).transpose(1, 2).flatten(0, 1)  # (videos*controlled, C, h, w)
    condition = images.flatten(0, 1).to(sample.device, net.dtype)  # (videos*controlled, 3, H, W)
    down, mid = net(
        frames.to(net.dtype), t, encoder_hidden_states=_frame_text(embeds, index, num_frames).to(net.dtype),
        controlnet_cond=condition, conditioning_scale=scale, guess_mode=guess_mode, return_dict=False,
    )  # fmt: skip

    def scatter(residual: torch.Tensor) -> torch.Tensor:
        full = residual.new_zeros(videos, num_frames, *residual.shape[1:])
        full[:, index] = residual.unflatten(0, (videos, controlled))
        return full.flatten(0, 1)

    return [scatter(r) for r in down], scatter(mid)


def _sparse_residuals(net, images, index, sample, t, embeds, scale, guess_mode):
    """diffusers' `SparseControlNetModel` (SparseCtrl): it reads the whole clip, the controlled frames' conditions and
    a mask of them, and its own temporal layers spread the control to every frame."""
    videos, num_frames = sample.shape[0], sample.shape[2]
    condition = images.new_zeros(videos, images.shape[2], num_frames, *images.shape[-2:])
    condition[:, :, index.cpu()] = images.transpose(1, 2)
    mask = images.new_zeros(videos, 1, num_frames, *images.shape[-2:])
    mask[:, :, index.cpu()] = 1
    down, mid = net(
        sample.to(net.dtype), t, encoder_hidden_states=_frame_text(embeds, None, num_frames).to(net.dtype),
        controlnet_cond=condition.to(sample.device, net.dtype), conditioning_mask=mask.to(sample.device, net.dtype),
        conditioning_scale=scale, guess_mode=guess_mode, return_dict=False,
    )  # fmt: skip
    return list(down), mid


def path_from_conditions(
    images: torch.Tensor, frame_indices: Sequence[int], num_frames: int, vae_scale_factor: int
) -> torch.Tensor:
    """
    A motion path read from silhouette-like conditions: the brightness-weighted centre of each controlled frame's
    image, linearly interpolated between controlled frames (held before the first and after the last), as offsets
    from frame 0 in latent pixels `(num_frames, 2)`. With keyframes only, the motion-path projection then moves the
    prompt's subject along it between the keyframes [ours].
    """
    weights = images.float().mean(1)  # (controlled, H, W)
    mass = weights.sum((1, 2))
    if (mass <= 0).any():
        empty = [frame_indices[i] for i in torch.nonzero(mass <= 0).flatten().tolist()]
        raise ValueError(
            f"The condition images of frames {empty} are black: `motion_path='control'` reads the path from the"
            " bright part of each condition (a silhouette); pass `motion_path` yourself instead."
        )
    ys = torch.arange(weights.shape[1], dtype=torch.float32)
    xs = torch.arange(weights.shape[2], dtype=torch.float32)
    centre_x = (weights.sum(1) * xs).sum(1) / mass
    centre_y = (weights.sum(2) * ys).sum(1) / mass
    order = np.argsort(frame_indices)
    known = np.asarray(frame_indices, dtype=np.float64)[order]
    frames = np.arange(num_frames, dtype=np.float64)
    path = np.stack(
        [np.interp(frames, known, centre.numpy()[order]) for centre in (centre_x, centre_y)], axis=-1
    )  # (F, 2) in pixels
    return torch.from_numpy((path - path[0]) / vae_scale_factor).float()
