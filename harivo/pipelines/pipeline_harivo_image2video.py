"""`HarivoImageToVideoPipeline`: animate a given first frame as the prompt says."""

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.pipelines.animatediff.pipeline_output import AnimateDiffPipelineOutput

from .frames import fit_frames, frames_of
from .pipeline_harivo import HarivoPipeline


@dataclass
class _ImageInput:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    latents: torch.Tensor | None = None  # (B, C, 1, h, w), the image's VAE latents
    noise: torch.Tensor | None = None  # (B, C, 1, h, w), the first frame's mapped noise


class HarivoImageToVideoPipeline(HarivoPipeline):
    r"""
    [`HarivoPipeline`] whose first frame is a given image, the rest made by the video model around it [ours].

    The method is the one image inpainting uses, in time instead of space: at every step the first frame's latents
    are replaced by the image's latents noised to that step (with the first frame's own mapped noise), and after the
    last step by the image's latents themselves. The other frames are denoised by the video model, whose temporal
    layers read the first frame at every step and so carry its content (shape, colour, background, style) to the
    rest; the prompt, with the motion path the adapter predicts from it, says how it moves. No training is needed,
    and the base model's own knowledge of the image's content is what keeps its identity.
    """

    _image: _ImageInput | None = None

    def _pinned(self, timestep: torch.Tensor | None) -> torch.Tensor:
        """The first frame's latents at `timestep` (the clean image latents when `None`)."""
        image = self._image
        if timestep is None:
            return image.latents
        batch = image.latents.shape[0]
        return self.scheduler.add_noise(image.latents, image.noise, timestep.reshape(1).repeat(batch))

    def _initial_latents(self, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self._image is None:
            return latents
        height, width = (n * self.vae_scale_factor for n in latents.shape[-2:])
        image = self.encode_frames(fit_frames(self._image.image, height, width, "image"))[None]  # (1, C, 1, h, w)
        self._image.latents = image.to(latents.device, latents.dtype).expand_as(latents[:, :, :1])
        self._image.noise = latents[:, :, :1] / self.scheduler.init_noise_sigma
        latents = latents.clone()
        latents[:, :, :1] = self._pinned(timesteps[0])
        return latents

    def _after_step(self, latents: torch.Tensor, step: int, timesteps: torch.Tensor) -> torch.Tensor:
        if self._image is None:
            return latents
        latents = latents.clone()
        latents[:, :, :1] = self._pinned(timesteps[step + 1] if step + 1 < len(timesteps) else None)
        return latents

    @torch.no_grad()
    def __call__(self, *args: Any, image: Any = None, **kwargs: Any) -> AnimateDiffPipelineOutput | tuple:
        r"""
        Animate `image`. Every argument of [`HarivoPipeline.__call__`] works the same; this one is added:

        Args:
            image: The first frame: a PIL image, an array `(H, W, 3)` or a tensor `(3, H, W)` in [0, 1]. An image of
                the video's aspect ratio but another size is resized; another aspect ratio is refused (crop it, or
                pass `height` / `width`).
        """
        if image is None:
            raise ValueError("Pass `image`: the first frame to animate (a PIL image, an array or a tensor).")
        frames = frames_of(image, "image")
        if len(frames) != 1:
            raise ValueError(
                f"`image` must be one image, got {len(frames)}; for a video use the video-to-video pipeline."
            )
        bound = inspect.signature(HarivoPipeline.__call__).bind(self, *args, **kwargs)
        self._image = _ImageInput(frames)
        try:
            return super().__call__(*bound.args[1:], **bound.kwargs)
        finally:
            self._image = None
