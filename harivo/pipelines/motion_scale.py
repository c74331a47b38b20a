"""`motion_scale`: how much the temporal layers move things, as AnimateDiff users set a motion strength.

Each temporal layer adds a residual to the frames it reads; `motion_scale` multiplies that residual: 1 is the trained
model, 0 the frozen image model frame by frame (with the adapter's noise: then the frame tokens and the motion-path
projection are off too, and the temporal layers are not run at all), values between weaken the motion and values
above 1 exaggerate it. A value is a float, a list with one float per frame, or a dict per U-Net block (`"down"`,
`"mid"`, `"up"`, or one block: `"down_blocks.1"`, `"mid_block"`, `"up_blocks.2"`; a block not named keeps 1); a
callable `(step, num_steps) -> value` schedules it over the denoising steps.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .checks import is_finite

MAX_MOTION_SCALE = 10.0
BLOCK_GROUPS = ("down", "mid", "up")


@dataclass(frozen=True)
class MotionScale:
    """One step's motion scale, checked: `per_frame` `(F,)` or `None`, `per_block` factors, and `value` (a float)."""

    value: float = 1.0
    per_frame: tuple[float, ...] | None = None
    per_block: tuple[tuple[str, float], ...] = ()

    @property
    def is_zero(self) -> bool:
        if self.per_frame is not None:
            return all(s == 0 for s in self.per_frame)
        if self.per_block:
            return all(s == 0 for _, s in self.per_block) and {g for g, _ in self.per_block} >= set(BLOCK_GROUPS)
        return self.value == 0

    @property
    def is_one(self) -> bool:
        return self.per_frame is None and not self.per_block and self.value == 1

    @property
    def mean(self) -> float:
        """The average factor: what scales the motion-path projection."""
        if self.per_frame is not None:
            return sum(self.per_frame) / len(self.per_frame)
        if self.per_block:
            return sum(s for _, s in self.per_block) / len(self.per_block)
        return self.value

    def of_block(self, name: str) -> float:
        """The factor of block `name` (`down_blocks.1`, `mid_block`, `up_blocks.0`)."""
        factor = 1.0
        for key, scale in self.per_block:  # a group, then the block itself, overrides
            if key == name.split("_")[0] or key == name:
                factor = scale
        return factor


def _check_factor(value, where: str) -> float:
    if not is_finite(value) or not 0 <= value <= MAX_MOTION_SCALE:
        raise ValueError(f"{where} must be a number from 0 to {MAX_MOTION_SCALE:g}, got {value!r}.")
    return float(value)


def check_motion_scale(value, num_frames: int, block_names: list[str]) -> MotionScale:
    """A `MotionScale` from a float, a per-frame list or a per-block dict; a one-line `ValueError` otherwise."""
    if isinstance(value, MotionScale):
        return value
    if isinstance(value, dict):
        allowed = [*BLOCK_GROUPS, *block_names]
        unknown = [key for key in value if key not in allowed]
        if unknown:
            raise ValueError(f"`motion_scale` has no block {unknown[0]!r}; name one of: {', '.join(allowed)}.")
        items = tuple((key, _check_factor(scale, f"`motion_scale[{key!r}]`")) for key, scale in value.items())
        return MotionScale(per_block=items)
    if isinstance(value, list | tuple | torch.Tensor):
        factors = [float(v) for v in value] if not isinstance(value, torch.Tensor) else value.flatten().tolist()
        if len(factors) != num_frames:
            raise ValueError(
                f"`motion_scale` per frame needs {num_frames} values (one per frame), got {len(factors)}."
            )
        return MotionScale(per_frame=tuple(_check_factor(f, "every `motion_scale` value") for f in factors))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"`motion_scale` must be a number, a list with one per frame, a dict per U-Net block or a callable"
            f" (step, num_steps), got {type(value).__name__}."
        )
    return MotionScale(value=_check_factor(value, "`motion_scale`"))


def motion_scale_at(
    value: float | list | dict | Callable, step: int, num_steps: int, num_frames: int, block_names: list[str]
) -> MotionScale:
    """The motion scale of step `step` (a callable is called with `(step, num_steps)`)."""
    if callable(value) and not isinstance(value, MotionScale):
        value = value(step, num_steps)
    return check_motion_scale(value, num_frames, block_names)


class MotionScaling:
    """Forward hooks on the temporal layers that scale their residual; they exist only inside `apply`."""

    def __init__(self):
        self.scale: MotionScale | None = None
        self.frames: range | list[int] | None = None  # the frames of the current call (a long video's window)

    def factor(self, block: str, batch_frames: int, reference: torch.Tensor) -> torch.Tensor | float:
        scale = self.scale
        block_factor = scale.of_block(block)
        if scale.per_frame is None:
            return block_factor * scale.value
        frames = torch.tensor(scale.per_frame, dtype=reference.dtype, device=reference.device)
        if self.frames is not None:
            frames = frames[list(self.frames)]
        repeats = batch_frames // len(frames)
        return block_factor * frames.repeat(repeats).view(-1, *([1] * (reference.ndim - 1)))

    def hook(self, block: str):
        def scaled(module, args, output):
            if self.scale is None or self.scale.is_one:
                return output
            hidden = args[0]
            return hidden + self.factor(block, hidden.shape[0], hidden) * (output - hidden)

        return scaled


def block_names(unet) -> list[str]:
    names = [f"down_blocks.{i}" for i in range(len(unet.down_blocks))]
    names += ["mid_block"] if unet.mid_block is not None else []
    return names + [f"up_blocks.{i}" for i in range(len(unet.up_blocks))]


def install(unet, scaling: MotionScaling) -> list:
    """Hook every temporal layer of `unet`'s blocks; returns the handles to remove."""
    handles = []
    for name in block_names(unet):
        block = unet.get_submodule(name)
        for module in getattr(block, "motion_modules", None) or []:
            handles.append(module.register_forward_hook(scaling.hook(name)))
    return handles


def is_default(value) -> bool:
    return not callable(value) and isinstance(value, int | float) and not isinstance(value, bool) and value == 1
