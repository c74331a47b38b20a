"""`HarivoImageToVideoPipeline`: animate a given first frame as the prompt says."""

import inspect
from typing import Any

import torch
from diffusers.pipelines.animatediff.pipeline_output import AnimateDiffPipelineOutput

from .frames import frames_of
from .pipeline_harivo import HarivoPipeline, extends_call
from .pipeline_harivo_video2video import HarivoVideoToVideoPipeline, VideoInput, check_strength


class HarivoImageToVideoPipeline(HarivoVideoToVideoPipeline):
    r"""
    [`HarivoPipeline`] whose first frame is a given image, the rest made by the video model around it [ours].

    Two parts, both training-free. The clip starts as the still video of the image, noised `strength` of the way into
    the schedule (video-to-video of a still: the image's layout and colours are where every frame starts), and at
    every step the first frame's latents are replaced by the image's latents noised to that step (with the first
    frame's own mapped noise), after the last step by the image's latents themselves: inpainting, in time instead of
    space. The temporal layers read the first frame at every step and carry its content to the rest; the prompt, with
    the motion path the adapter predicts from it, says how it moves.
    """

    _first: torch.Tensor | None = None  # (B, C, 1, h, w), the first frame's mapped noise, during a call

    def _reads_predicted_path(self) -> bool:
        return True

    def _pinned(self, timestep: torch.Tensor | None) -> torch.Tensor:
        """The first frame's latents at `timestep` (the clean image latents when `None`)."""
        image = self._video.latents[:, :, :1]
        if timestep is None:
            return image
        return self.scheduler.add_noise(image, self._first, timestep.reshape(1).repeat(image.shape[0]))

    def _initial_latents(self, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self._video is None:
            return latents
        self._first = latents[:, :, :1] / self.scheduler.init_noise_sigma
        latents = super()._initial_latents(latents, timesteps).clone()  # the still video, noised
        latents[:, :, :1] = self._pinned(timesteps[0])
        return latents

    def _after_step(self, latents: torch.Tensor, step: int, timesteps: torch.Tensor) -> torch.Tensor:
        if self._video is None:
            return latents
        latents = latents.clone()
        latents[:, :, :1] = self._pinned(timesteps[step + 1] if step + 1 < len(timesteps) else None)
        return latents

    @extends_call(HarivoPipeline.__call__)
    @torch.no_grad()
    def __call__(
        self, *args: Any, image: Any = None, strength: float = 0.8, **kwargs: Any
    ) -> AnimateDiffPipelineOutput | tuple:
        r"""
        Animate `image`. Every argument of [`HarivoPipeline.__call__`] works the same; these are added:

        Args:
            image: The first frame: a PIL image, an array `(H, W, 3)` or a tensor `(3, H, W)` in [0, 1]. An image of
                the video's aspect ratio but another size is resized; another aspect ratio is refused (crop it, or
                pass `height` / `width`).
            strength (`float`, defaults to 0.8): How far into the schedule the still video of the image is noised,
                in (0, 1]: lower keeps more of the image in every frame, `1` starts the other frames from noise.
        """
        if image is None:
            raise ValueError("Pass `image`: the first frame to animate (a PIL image, an array or a tensor).")
        frames = frames_of(image, "image")
        if len(frames) != 1:
            raise ValueError(
                f"`image` must be one image, got {len(frames)}; for a video use `HarivoVideoToVideoPipeline`."
            )
        bound = inspect.signature(HarivoPipeline.__call__).bind(self, *args, **kwargs)
        bound.apply_defaults()
        check_strength(strength, bound.arguments["num_inference_steps"])
        if self.free_init_enabled and self._free_init.use_fast_sampling:
            raise ValueError(
                "FreeInit's fast sampling changes the number of steps, and with them where an input image starts:"
                " call `pipe.enable_free_init(..., use_fast_sampling=False)`."
            )
        self._video = VideoInput([frames], float(strength), bound.arguments["num_inference_steps"])
        try:
            return HarivoPipeline.__call__(self, *bound.args[1:], **bound.kwargs)
        finally:
            self._video, self._first = None, None
