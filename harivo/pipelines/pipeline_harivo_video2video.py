"""`HarivoVideoToVideoPipeline`: re-generate a given video with a new prompt, keeping its motion and layout."""

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.pipelines.animatediff.pipeline_output import AnimateDiffPipelineOutput

from ..models.motion_path import estimate_displacements
from .frames import fit_frames, num_prompts, paths_per_video, videos_of, videos_per_prompt
from .pipeline_harivo import HarivoPipeline, extends_call


@dataclass
class VideoInput:
    """The input video(s) of one video-to-video (or image-to-video) call, and how much of them is re-generated."""

    frames: list[torch.Tensor]  # one video, or one per prompt: (F, 3, H, W) in [0, 1]; one frame is a still video
    strength: float
    num_inference_steps: int
    latents: torch.Tensor | None = None  # (B, C, F, h, w), the frames' VAE latents, once encoded


class HarivoVideoToVideoPipeline(HarivoPipeline):
    r"""
    [`HarivoPipeline`] that starts from a given video instead of pure noise (SDEdit on the whole clip), with the names
    of diffusers' `AnimateDiffVideoToVideoPipeline`: the video's latents are noised to the step `strength` of the way
    into the schedule and denoised from there with the prompt. The noise goes through the adapter's mapping network,
    as it does for text-to-video. Low `strength` keeps the input closely, `1` keeps only what survives full noise.

    The input video says where things are and how they move, so the path the adapter predicts from the prompt is
    not used: pass `motion_path="video"` to keep its content travelling rigidly along the path it takes in the
    input (estimated from the frames, `video_motion_path`), a tensor for another path, or nothing for no path.
    """

    _video: VideoInput | None = None

    def _reads_predicted_path(self) -> bool:
        return self._video is None

    def _restart_step(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        return None if self._video is None else timesteps[:1]

    def _timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        if self._video is None:
            return timesteps
        steps = self._video.num_inference_steps
        skipped = (steps - min(int(steps * self._video.strength), steps)) * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(skipped)
        return timesteps[skipped:]

    def _initial_latents(self, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self._video is None:
            return latents
        num_frames, height, width = latents.shape[2], *(n * self.vae_scale_factor for n in latents.shape[-2:])
        videos = self._video.frames
        encoded = torch.stack(
            [
                self.encode_frames(fit_frames(f[:num_frames], height, width, "video", self.vae_scale_factor))
                for f in videos
            ]
        )
        video = encoded.to(latents.device, latents.dtype).repeat_interleave(latents.shape[0] // len(videos), 0)
        video = video.expand_as(latents)  # a still image's one frame stands for every frame
        self._video.latents = video
        noise = latents / self.scheduler.init_noise_sigma  # the mapped noise m(eps)
        return self.scheduler.add_noise(video, noise, timesteps[:1].repeat(latents.shape[0]))

    @extends_call(HarivoPipeline.__call__)
    @torch.no_grad()
    def __call__(
        self, *args: Any, video: Any = None, strength: float = 0.8, **kwargs: Any
    ) -> AnimateDiffPipelineOutput | tuple:
        r"""
        Re-generate `video` with the prompt. Every argument of [`HarivoPipeline.__call__`] works the same; these
        are added:

        Args:
            video: The input video: a list of PIL images, an array `(frames, H, W, 3)` or a tensor
                `(frames, 3, H, W)` in [0, 1]; or one per prompt (a list of such videos, or an array / tensor with a
                batch dimension first), as diffusers takes them. Frames of the output size's aspect ratio but
                another size are resized; another aspect ratio is refused. `num_frames` defaults to its length (the
                shortest's); a shorter `num_frames` uses its first frames.
            latents (`torch.Tensor`, *optional*): As in [`HarivoPipeline.__call__`]: the initial noise, which the
                input is noised with (through the mapping network). Unlike diffusers' video-to-video, not a noisy
                starting point that replaces `video`: `video` is always needed.
            strength (`float`, defaults to 0.8): How far into the schedule the input is noised, in (0, 1]: the last
                `int(num_inference_steps * strength)` steps run.
            motion_path (`torch.Tensor` or `"video"`, *optional*): As in [`HarivoPipeline.__call__`], or `"video"`:
                the path the input's moving content takes (`video_motion_path`), in latent pixels.
        """
        bound = inspect.signature(HarivoPipeline.__call__).bind(self, *args, **kwargs)
        num_frames = bound.arguments.get("num_frames")
        bound.apply_defaults()
        call = bound.arguments
        if video is None:
            latents = " (`latents` here is the initial noise, as in text-to-video, not a noisy starting point)"
            raise ValueError(
                "Pass `video`: the input video to re-generate (frames as PIL images, an array or a tensor)"
                f"{latents if call['latents'] is not None else ''}."
            )
        videos = videos_of(video, "video")
        prompts = num_prompts(call["prompt"], call["prompt_embeds"])
        if len(videos) not in (1, prompts):
            raise ValueError(f"`video` holds {len(videos)} videos for {prompts} prompts: pass one, or one per prompt.")
        shortest = min(len(frames) for frames in videos)
        if num_frames is None:
            num_frames = call["num_frames"] = shortest
        elif isinstance(num_frames, int) and num_frames > shortest:
            raise ValueError(
                f"`video` has {shortest} frames but `num_frames` is {num_frames}: pass a longer video or"
                f" num_frames <= {shortest}."
            )
        steps = call["num_inference_steps"]
        check_strength(strength, steps)
        if self.free_init_enabled and self._free_init.use_fast_sampling:
            raise ValueError(
                "FreeInit's fast sampling changes the number of steps, and with them where an input video starts:"
                " call `pipe.enable_free_init(..., use_fast_sampling=False)`."
            )
        if isinstance(call["motion_path"], str):
            if call["motion_path"] != "video":
                raise ValueError(f"`motion_path` must be a tensor or 'video', got {call['motion_path']!r}.")
            count = num_frames if isinstance(num_frames, int) and num_frames >= 1 else shortest
            paths = torch.stack([video_motion_path(frames[:count]) for frames in videos]) / self.vae_scale_factor
            call["motion_path"] = paths_per_video(paths, videos_per_prompt(call))
        self._video = VideoInput(videos, float(strength), steps)
        try:
            return super().__call__(*bound.args[1:], **bound.kwargs)
        finally:
            self._video = None


def video_motion_path(frames: torch.Tensor) -> torch.Tensor:
    """
    The path `(F, 2)` `(x, y)`, in pixels from the first frame, that what moves in `frames` `(F, 3, H, W)` takes: the
    frames' global translation (phase correlation, `estimate_displacements`) after removing what stands still
    (each pixel's median over the clip), so that a moving object on a still background, textured or not, is what
    is followed; for a camera pan the whole frame is. Content that moves less than its own size over the clip
    covers some pixels in most frames, which the median then counts as still: such a path comes out too short.
    """
    moving = frames - frames.median(dim=0, keepdim=True).values
    return estimate_displacements(moving[None])[0]


def check_strength(strength: Any, num_inference_steps: Any) -> None:
    """Raise a one-line `ValueError` for a `strength` outside (0, 1] or one that runs no step."""
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 < strength <= 1:
        raise ValueError(f"`strength` must be in (0, 1] (how much of the input is re-generated), got {strength!r}.")
    steps = num_inference_steps
    if isinstance(steps, int) and steps > 0 and int(steps * strength) < 1:
        raise ValueError(
            f"`strength` {strength} of {steps} steps runs no step: raise `strength` to at least {1 / steps:.3g}"
            " or `num_inference_steps`."
        )
