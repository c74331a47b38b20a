"""Long videos: the video U-Net in overlapping context windows, with FreeNoise's noise rescheduling.

FreeNoise (Qiu et al., ICLR 2024) makes videos longer than a video model's context by running it on overlapping
windows of frames and blending the outputs, and by starting every frame past the first window from a shuffled copy
of the noise of frames before it, so that the windows agree on what they show. diffusers' `AnimateDiffFreeNoiseMixin`
does the windowing inside the temporal layers; here the whole video U-Net runs per window [ours], so everything
HARIVO adds per clip (frame tokens, motion conditioner, at most `max_frames` positions each) sees a clip it knows.
The names and options are diffusers'.
"""

import math
from dataclasses import dataclass

import torch

from .checks import is_int

WEIGHTING_SCHEMES = ("flat", "pyramid", "overlap-linear", "gaussian")
NOISE_TYPES = ("shuffle_context", "repeat_context", "random")


@dataclass(frozen=True)
class FreeNoiseSettings:
    context_length: int
    context_stride: int
    weighting_scheme: str
    noise_type: str
    closed_loop: bool = False

    def windows(self, num_frames: int) -> list[range | list[int]]:
        """Overlapping windows of `context_length` frames, `context_stride` apart, the last one ending at the last
        frame (diffusers' order); one window when the clip fits. In a closed loop the windows start every
        `context_stride` frames all the way round and wrap past the last frame to the first, so the seam between
        them is denoised like any other pair of neighbours."""
        if self.loops(num_frames):
            return [
                [(start + k) % num_frames for k in range(self.context_length)]
                for start in range(0, num_frames, self.context_stride)
            ]
        if num_frames <= self.context_length:
            return [range(num_frames)]
        starts = list(range(0, num_frames - self.context_length + 1, self.context_stride))
        if starts[-1] + self.context_length < num_frames:
            starts.append(num_frames - self.context_length)
        return [range(start, start + self.context_length) for start in starts]

    def loops(self, num_frames: int) -> bool:
        """Whether a clip of `num_frames` is made as a closed loop."""
        return self.closed_loop and num_frames > self.context_length

    def weights(self, length: int) -> torch.Tensor:
        """Blending weights `(length,)` of a window's frames: equal (`flat`), highest in the middle (`pyramid`, and
        `gaussian`: a bell with a standard deviation of a quarter window), or equal but for linear ramps over the
        frames a window shares with its neighbours (`overlap-linear`)."""
        if self.weighting_scheme == "flat":
            return torch.ones(length)
        position = torch.arange(length, dtype=torch.float32)
        if self.weighting_scheme == "gaussian":
            return torch.exp(-0.5 * ((position - (length - 1) / 2) / max(length / 4, 1e-6)) ** 2)
        if self.weighting_scheme == "overlap-linear":
            overlap = max(length - self.context_stride, 0)
            ramp = torch.minimum(position + 1, length - position) / (overlap + 1)
            return ramp.clamp(max=1.0)
        half = torch.arange(1, (length + 1) // 2 + 1, dtype=torch.float32)
        return torch.cat([half, half.flip(0)[length % 2 :]])


def loop_path(path: torch.Tensor) -> torch.Tensor:
    """
    A motion path `(B, F, 2)` (offsets from the first frame) made periodic for a seamless loop [ours]: the content goes
    out along the path's mean direction and comes back, `offset(t) = a (1 - cos(2 pi t / F)) / 2`, with the amplitude
    `a = v F / pi` that keeps the path's mean speed `v` as the loop's top speed; frame `F` would be frame 0 again.
    """
    num_frames = path.shape[1]
    if num_frames < 2:
        return path
    velocity = (path[:, -1] - path[:, 0]) / (num_frames - 1)  # (B, 2)
    phase = torch.arange(num_frames, device=path.device, dtype=torch.float32) / num_frames
    shape = (1 - torch.cos(2 * math.pi * phase)) / 2  # (F,), 0 at both ends of the loop
    return (velocity * num_frames / math.pi)[:, None, :].to(path.dtype) * shape[None, :, None].to(path.dtype)


class HarivoFreeNoiseMixin:
    """`enable_free_noise` / `disable_free_noise` for [`HarivoPipeline`]: any `num_frames`, in windows."""

    _free_noise: FreeNoiseSettings | None = None

    @property
    def free_noise_enabled(self) -> bool:
        return self._free_noise is not None

    def _loop_path(self, path: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The call's motion path `(B, F, 2)`, made to go out and back when the clip is a closed loop."""
        return loop_path(path) if self._free_noise is not None and self._free_noise.loops(num_frames) else path

    @property
    def free_noise_settings(self) -> FreeNoiseSettings | None:
        """The windows' settings (`context_length`, `context_stride`, ..., and `windows(num_frames)`), if enabled."""
        return self._free_noise

    def enable_free_noise(
        self,
        context_length: int | None = 16,
        context_stride: int = 4,
        weighting_scheme: str = "pyramid",
        noise_type: str = "shuffle_context",
        closed_loop: bool = False,
    ) -> None:
        r"""
        Generate videos of any length in overlapping windows (FreeNoise), with diffusers' options.

        Args:
            context_length (`int`, defaults to 16): Frames per window, at most the adapter's `max_frames` (`None`:
                `max_frames`). The length the temporal layers were trained on works best.
            context_stride (`int`, defaults to 4): Frames between window starts, from 1 to `context_length`; each
                frame is denoised in about `context_length / context_stride` windows (the cost per frame).
            weighting_scheme (`str`, defaults to `"pyramid"`): How overlapping windows blend: `"flat"`, `"pyramid"`
                (a window's middle frames weigh most), `"gaussian"` (a bell over the window) or `"overlap-linear"`
                (equal, but for linear ramps over the frames shared with the neighbouring windows).
            noise_type (`str`, defaults to `"shuffle_context"`): The initial noise past the first window:
                `"shuffle_context"` (the noise of the frames `context_length` before, shuffled in blocks of
                `context_stride`, FreeNoise's), `"repeat_context"` (the same, unshuffled) or `"random"`. Noise an
                adapter warps along the motion path is already correlated along the clip and is kept as it is.
            closed_loop (`bool`, defaults to `False`): A seamless loop: the windows wrap around past the last frame
                to the first, so the last frame flows into the first (needs more frames than `context_length`), and
                the motion path goes out along its direction and back (`loop_path`): content that only travelled
                one way could not return to where the first frame has it.
        """
        max_frames = self.adapter.max_frames if getattr(self, "adapter", None) is not None else None
        if context_length is None:
            context_length = max_frames or 16
        if not is_int(context_length) or not 1 <= context_length <= (max_frames or context_length):
            raise ValueError(
                f"`context_length` must be an integer from 1 to {max_frames} (the adapter's `max_frames`), got"
                f" {context_length!r}."
            )
        if not is_int(context_stride) or not 1 <= context_stride <= context_length:
            raise ValueError(
                f"`context_stride` must be an integer from 1 to `context_length` ({context_length}), got"
                f" {context_stride!r}."
            )
        if weighting_scheme not in WEIGHTING_SCHEMES:
            raise ValueError(f"`weighting_scheme` must be one of {WEIGHTING_SCHEMES}, got {weighting_scheme!r}.")
        if noise_type not in NOISE_TYPES:
            raise ValueError(f"`noise_type` must be one of {NOISE_TYPES}, got {noise_type!r}.")
        self._free_noise = FreeNoiseSettings(
            context_length, context_stride, weighting_scheme, noise_type, bool(closed_loop)
        )

    def disable_free_noise(self) -> None:
        self._free_noise = None

    def _reschedule_noise(self, noise: torch.Tensor, generator: torch.Generator | list | None) -> torch.Tensor:
        """FreeNoise's initial noise `(B, C, F, h, w)`: each block of `context_stride` frames past the first window
        repeats (shuffled, for `shuffle_context`) the noise of the block `context_length` frames before it."""
        settings, num_frames = self._free_noise, noise.shape[2]
        if settings is None or settings.noise_type == "random" or num_frames <= settings.context_length:
            return noise
        if isinstance(generator, list):
            generator = generator[0]
        shuffler = generator if isinstance(generator, torch.Generator) and generator.device.type == "cpu" else None
        noise = noise.clone()
        for start in range(settings.context_length, num_frames, settings.context_stride):
            count = min(settings.context_stride, num_frames - start)
            source = torch.arange(start - settings.context_length, start - settings.context_length + count)
            if settings.noise_type == "shuffle_context":
                source = source[torch.randperm(count, generator=shuffler)]
            noise[:, :, start : start + count] = noise[:, :, source.to(noise.device)]
        return noise

    def _windowed(self, model_input, run, capture=None) -> torch.Tensor:
        """`run(window_input, frames)` over the context windows of `model_input` `(N, C, F, h, w)`, blended; the
        token attention a `capture` records in each window is blended into the whole clip's too."""
        num_frames = model_input.shape[2]
        windows = self._free_noise.windows(num_frames)
        output, total = None, model_input.new_zeros(num_frames, dtype=torch.float32)
        attention: dict[str, torch.Tensor] = {}
        for frames in windows:
            index = list(frames)
            result = run(model_input[:, :, index], frames).float()
            weight = self._free_noise.weights(len(index)).to(result.device)
            if output is None:
                output = result.new_zeros(*result.shape[:2], num_frames, *result.shape[3:])
            output[:, :, index] += result * weight[:, None, None]
            total[index] += weight.to(total.device)
            if capture is not None:
                for name, maps in capture.token_attention.items():  # (N * window, h_l, w_l)
                    maps = maps.unflatten(0, (-1, len(index))).float() * weight.to(maps.device)[:, None, None]
                    if name not in attention:
                        attention[name] = maps.new_zeros(maps.shape[0], num_frames, *maps.shape[2:])
                    attention[name][:, index] += maps
        if capture is not None:
            norm = total.to(output.device)[:, None, None]
            capture.token_attention = {name: (maps / norm).flatten(0, 1) for name, maps in attention.items()}
        return (output / total.to(output.device)[:, None, None]).to(model_input.dtype)
