"""`HarivoPipeline`: text-to-video with a frozen Stable-Diffusion-class model and a HARIVO adapter."""

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from diffusers import AnimateDiffPipeline, AutoencoderKL, UNet2DConditionModel, UNetMotionModel
from diffusers.loaders import (
    FromSingleFileMixin,
    IPAdapterMixin,
    StableDiffusionLoraLoaderMixin,
    TextualInversionLoaderMixin,
)
from diffusers.pipelines.animatediff.pipeline_output import AnimateDiffPipelineOutput
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, StableDiffusionMixin
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..errors import SamplingDivergedError
from ..models.adapter import HarivoAdapter
from ..models.motion_path import batched_path
from ..models.video_unet import HarivoUNet
from ..schedulers import RENOISING, adds_step_noise, renoised_step
from . import checks, mg_sampling, prompt_travel
from . import motion_scale as motion_scale_lib
from .deep_cache import HarivoDeepCacheMixin
from .free_init import HarivoFreeInitMixin
from .free_noise import HarivoFreeNoiseMixin
from .loading import HarivoLoadingMixin
from .mg_sampling import MGGuidanceMixin
from .pag import HarivoPAGMixin
from .prompts import HarivoPromptMixin

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from harivo.pipelines import HarivoPipeline
        >>> from harivo.video_io import save_video

        >>> pipe = HarivoPipeline.from_pretrained("path/to/stable-diffusion-v1-5", adapter="path/to/harivo-adapter")
        >>> video = pipe("a corgi running on the beach", num_frames=16, mg_scale=40.0).frames[0]
        >>> save_video(video, "corgi.mp4", fps=8)
        ```
"""


class HarivoPipeline(
    HarivoLoadingMixin,
    MGGuidanceMixin,
    HarivoPromptMixin,
    HarivoFreeInitMixin,
    HarivoFreeNoiseMixin,
    HarivoDeepCacheMixin,
    HarivoPAGMixin,
    DiffusionPipeline,
    StableDiffusionMixin,
    TextualInversionLoaderMixin,
    StableDiffusionLoraLoaderMixin,
    FromSingleFileMixin,
    IPAdapterMixin,
):
    r"""
    Text-to-video generation with HARIVO: a frozen text-to-image model plus a [`HarivoAdapter`] (temporal layers,
    noise mapping network, frame-wise tokens), sampled with optional mitigating-gradient (MG) guidance.

    Args:
        vae ([`~diffusers.AutoencoderKL`]): The base model's VAE.
        text_encoder ([`~transformers.CLIPTextModel`]): The base model's text encoder.
        tokenizer ([`~transformers.CLIPTokenizer`]): The base model's tokenizer.
        unet ([`~diffusers.UNet2DConditionModel`] or [`~diffusers.UNetMotionModel`]): The frozen base U-Net.
        adapter ([`HarivoAdapter`]): The HARIVO parts; its temporal layers are shared with the U-Net.
        scheduler ([`~diffusers.SchedulerMixin`]): Any diffusers scheduler.
        feature_extractor, image_encoder (*optional*): An IP-Adapter's image processor and image encoder, set by
            `load_ip_adapter` (diffusers' `IPAdapterMixin`).
    """

    _optional_components = ["feature_extractor", "image_encoder"]

    model_cpu_offload_seq = "text_encoder->unet->vae"
    # The adapter is never called as a whole (its parts are), so offload hooks cannot move it: keep it on the
    # device. Its temporal layers are the U-Net's own modules and move with the U-Net's hook.
    _exclude_from_cpu_offload = ["adapter"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    # Refuse calls whose estimated memory need exceeds what is free (`check_memory`); set False to try anyway.
    memory_check = True

    def __init__(
        self,
        vae: AutoencoderKL | None,
        text_encoder: CLIPTextModel | None,
        tokenizer: CLIPTokenizer | None,
        unet: UNet2DConditionModel | UNetMotionModel | None,
        adapter: HarivoAdapter | None,
        scheduler: SchedulerMixin,
        feature_extractor: CLIPImageProcessor | None = None,
        image_encoder: CLIPVisionModelWithProjection | None = None,
    ):
        super().__init__()
        if isinstance(unet, UNet2DConditionModel) and adapter is not None:
            adapter.check_compatible(unet.config)
            unet = UNetMotionModel.from_unet2d(unet, adapter.motion_adapter)
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, adapter=adapter, scheduler=scheduler,
            feature_extractor=feature_extractor, image_encoder=image_encoder,
        )  # fmt: skip
        self._video_unet: HarivoUNet | None = None
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if vae is not None else 8
        self.video_processor = VideoProcessor(do_resize=False, vae_scale_factor=self.vae_scale_factor)

    @property
    def video_unet(self) -> HarivoUNet:
        """The video denoiser made of the pipeline's current `unet` and `adapter`: replacing either (e.g.
        `pipe.unet = torch.compile(pipe.unet)`) takes effect at the next call."""
        missing = [name for name in ("unet", "adapter") if getattr(self, name, None) is None]
        if missing:
            raise ValueError(
                f"This pipeline has no {' and no '.join(missing)}; set `pipe.{missing[0]} = ...` (or load it with"
                " `HarivoPipeline.from_pretrained(base_model, adapter=...)`) before generating videos."
            )
        unet, adapter = self.unet, self.adapter
        if isinstance(getattr(unet, "_orig_mod", unet), UNet2DConditionModel):  # a text-to-image U-Net was set
            adapter.check_compatible(unet.config)
            unet = UNetMotionModel.from_unet2d(getattr(unet, "_orig_mod", unet), adapter.motion_adapter)
            self.unet = unet
        cached = self._video_unet
        if cached is None or cached.unet is not unet or cached.adapter is not adapter:
            self._video_unet = HarivoUNet(unet, adapter)
        return self._video_unet

    # Prompt and IP-Adapter image encoding, decoding and scheduler kwargs are AnimateDiff's, unchanged.
    encode_prompt = AnimateDiffPipeline.encode_prompt
    encode_image = AnimateDiffPipeline.encode_image
    prepare_ip_adapter_image_embeds = AnimateDiffPipeline.prepare_ip_adapter_image_embeds
    decode_latents = AnimateDiffPipeline.decode_latents
    prepare_extra_step_kwargs = AnimateDiffPipeline.prepare_extra_step_kwargs

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def guidance_rescale(self) -> float:
        return self._guidance_rescale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1

    @property
    def clip_skip(self) -> int | None:
        return self._clip_skip

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    def check_inputs(self, *args: Any, **kwargs: Any) -> None:
        """Raise a `ValueError` that says what to change for any input the pipeline cannot run (`checks.check_inputs`:
        diffusers' positional order, then `num_videos_per_prompt`, `guidance_rescale`, `eta`, the motion-path and
        decoding settings)."""
        checks.check_inputs(self, *args, **kwargs)

    def estimate_memory(self, *args: Any, **kwargs: Any) -> int:
        """Rough peak memory of one call, in bytes (`checks.estimate_memory`)."""
        return checks.estimate_memory(self, *args, **kwargs)

    def check_memory(self, *args: Any, **kwargs: Any) -> None:
        """Raise a `MemoryError` that says what to lower when the estimated need exceeds the free memory
        (`checks.check_memory`). `__call__` runs it first unless `pipe.memory_check` is `False`."""
        checks.check_memory(self, *args, **kwargs)

    def encode_frames(self, frames: torch.Tensor, chunk_size: int = 16) -> torch.Tensor:
        """VAE latents `(C, F, h, w)` (scaled, the posterior's mode) of frames `(F, 3, H, W)` in [0, 1]."""
        pixels = frames.to(self.vae.device, self.vae.dtype) * 2 - 1
        latents = torch.cat([self.vae.encode(chunk).latent_dist.mode() for chunk in pixels.split(chunk_size)])
        return (latents * self.vae.config.scaling_factor).transpose(0, 1)

    def prepare_latents(
        self,
        batch_size: int,
        num_channels_latents: int,
        num_frames: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
        motion_path: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial latents `z_T = m(eps) * init_noise_sigma`; `latents`, if given, is the noise `eps`; otherwise `eps`
        is IID, or warped along `motion_path` `(B, F, 2)` when the adapter's path predictor warps its noise."""
        shape = (
            batch_size,
            num_channels_latents,
            num_frames,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got {len(generator)} generators for a batch of {batch_size} videos; pass one per video."
            )
        if latents is None and motion_path is not None:
            noise = self.adapter.path_predictor.noise(shape, motion_path, generator, device=device, dtype=dtype)
        elif latents is None:  # (FreeNoise, when enabled, repeats the first window's noise further on)
            noise = self._reschedule_noise(
                randn_tensor(shape, generator=generator, device=device, dtype=dtype), generator
            )
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}.")
        else:
            noise = latents.to(device=device, dtype=dtype)
        return self.adapter.mapping_network(noise) * self.scheduler.init_noise_sigma  # (B, C, F, h, w)

    def _predict_noise(self, latents, t, prompt_embeds, cross_attention_kwargs) -> torch.Tensor:
        """The (classifier-free and perturbed-attention guided) model output for latents `(B, C, F, h, w)`."""
        if self.do_perturbed_attention_guidance:
            return self._pag_guided(latents, t, prompt_embeds, cross_attention_kwargs)
        model_input = torch.cat([latents] * 2) if self.do_classifier_free_guidance else latents
        model_input = self.scheduler.scale_model_input(model_input, t)
        output = self._denoise(model_input, t, prompt_embeds, cross_attention_kwargs)
        if self.do_classifier_free_guidance:
            uncond, text = output.chunk(2)
            output = uncond + self.guidance_scale * (text - uncond)
            if self.guidance_rescale > 0:  # keep the guided output's scale at the text output's (Lin et al. 2024)
                output = rescale_noise_cfg(output, text, self.guidance_rescale)
        return output

    def _pag_guided(self, latents, t, prompt_embeds, cross_attention_kwargs) -> torch.Tensor:
        """`_predict_noise` with PAG's perturbed branch in the same batch (diffusers' `AnimateDiffPAGPipeline`)."""
        model_input, embeds = self._pag_inputs(latents, prompt_embeds)
        output = self._denoise(self.scheduler.scale_model_input(model_input, t), t, embeds, cross_attention_kwargs)
        if self.do_classifier_free_guidance:
            uncond, text, perturbed = output.chunk(3)
            guided = uncond + self.guidance_scale * (text - uncond)
        else:
            text, perturbed = output.chunk(2)
            guided = text
        guided = guided + self._pag_scale_at(t) * (text - perturbed)
        if self.do_classifier_free_guidance and self.guidance_rescale > 0:
            guided = rescale_noise_cfg(guided, text, self.guidance_rescale)
        return guided

    def _denoise(self, model_input, t, prompt_embeds, cross_attention_kwargs) -> torch.Tensor:
        """The video U-Net's output for `model_input` `(N, C, F, h, w)`: in one pass, or with FreeNoise on and more
        frames than its context, in overlapping windows (each with its frames' text) blended."""

        def run(sample: torch.Tensor, frames: range | None = None) -> torch.Tensor:
            text = prompt_embeds
            if self._motion_scaling is not None:
                self._motion_scaling.frames = frames  # a per-frame scale reads this window's frames
            if frames is not None and text.ndim == 4:
                text = text[:, list(frames)]  # a loop's window may wrap past the last frame
            residuals = self._unet_residuals(sample, t, text, frames)
            return self.video_unet(
                sample, t, text, cross_attention_kwargs=cross_attention_kwargs,
                added_cond_kwargs=self._added_cond_kwargs, **residuals,
            )  # fmt: skip

        if not self.free_noise_enabled or model_input.shape[2] <= self._free_noise.context_length:
            return run(model_input)
        return self._windowed(model_input, run, self._token_capture)

    @contextlib.contextmanager
    def _motion_scaling_during_call(self, motion_scale):
        """The temporal layers' residual scaling for this call only (no hooks unless `motion_scale` is not 1)."""
        if motion_scale_lib.is_default(motion_scale):
            yield None
            return
        scaling = motion_scale_lib.MotionScaling()
        handles = motion_scale_lib.install(self.video_unet.base_unet, scaling)
        self._motion_scaling = scaling
        try:
            yield scaling
        finally:
            for handle in handles:
                handle.remove()
            self._motion_scaling = None

    _motion_scaling = None

    def _video_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        """`(height, width)` in pixels, each defaulting to the U-Net's `sample_size * vae_scale_factor`."""
        default_size = self.video_unet.config.sample_size * self.vae_scale_factor
        return (default_size if height is None else height, default_size if width is None else width)

    # The extension points of the denoising loop; the ControlNet, video-to-video and image-to-video pipelines fill
    # them in for one call.
    def _unet_residuals(self, model_input, t, prompt_embeds, frames=None) -> dict[str, Any]:
        """Extra inputs of the video U-Net for `model_input` `(B, C, F, h, w)` at the current step
        (`self._step_index`), e.g. ControlNet residuals; none in plain text-to-video. `frames`: the clip's frames
        `model_input` holds in a long video's window (`None`: the whole clip)."""
        return {}

    def _restart_step(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        """The step FreeInit diffuses a result back to before sampling again: `None`, the last training step (text
        to video); an input video's or image's start step (`timesteps[0]`) in the pipelines that start there."""
        return None

    def _reads_predicted_path(self) -> bool:
        """Whether this call may use the path the adapter predicts from the prompt (not when a control or an input
        video already says where things are)."""
        return True

    def _timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The timesteps this call runs, from the scheduler's whole schedule (video-to-video starts later)."""
        return timesteps

    def _initial_latents(self, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The latents the loop starts from, given the mapped noise `z_T` (video-to-video noises its input's)."""
        return latents

    def _after_step(self, latents: torch.Tensor, step: int, timesteps: torch.Tensor) -> torch.Tensor:
        """The latents after step `step` of `timesteps` (image-to-video puts its image back into the first frame)."""
        return latents

    _token_capture = None  # the subject's cross-attention being recorded, during a call
    _added_cond_kwargs = None  # the IP-Adapter's image embeddings, during a call

    @contextlib.contextmanager
    def _during_call(self, capture, added_cond_kwargs=None):
        """Hold the call's token capture and IP-Adapter image embeddings for `_denoise`; nothing outlives the call."""
        self._token_capture, self._added_cond_kwargs = capture, added_cond_kwargs
        try:
            yield
        finally:
            self._token_capture, self._added_cond_kwargs = None, None

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | dict[int, str] | None = None,
        num_frames: int = 16,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_videos_per_prompt: int = 1,
        guidance_rescale: float = 0.0,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        ip_adapter_image: Any = None,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        motion_path: torch.Tensor | None = None,
        motion_path_projection: float | None = None,
        motion_path_window: tuple[float, float] | None = None,
        motion_path_mask: str | None = None,
        motion_subject: str | list[str] | None = None,
        motion_scene: str | list[str] | None = None,
        motion_path_core_window: tuple[float, float] | None = None,
        temporal_window: tuple[float, float] | None = None,
        motion_scale: float | list[float] | dict[str, float] | Callable = 1.0,
        prompt_travel_window: tuple[float, float] = (0.5, 1.0),
        mg_scale: float = 0.0,
        mg_window: tuple[float, float] = (0.0, 0.5),
        mg_energy: str = "frame_difference",
        mg_gradient: str | None = None,
        pag_scale: float = 0.0,
        pag_adaptive_scale: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[["HarivoPipeline", int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' signature)
        decode_chunk_size: int = 16,
    ) -> AnimateDiffPipelineOutput | tuple:
        r"""
        Generate videos from text.

        Args:
            prompt (`str`, `list[str]` or `dict[int, str]`, *optional*): The prompt(s); or pass `prompt_embeds`. A
                dict of keyframe prompts (`{0: "a red ball", 8: "a blue ball"}`, diffusers' form) makes one video
                whose text travels: each keyframe's embedding, linearly interpolated in between, held before the first
                and after the last; the motion path turns where the keyframes' motion words do.
            num_frames (`int`, defaults to 16): Frames per video (at most the adapter's `max_frames`).
            height, width (`int`, *optional*): Size in pixels, multiples of the VAE factor; default to the U-Net's
                `sample_size * vae_scale_factor`.
            num_inference_steps (`int`, defaults to 50): Denoising steps.
            guidance_scale (`float`, defaults to 7.5): Classifier-free guidance; `<= 1` is off.
            negative_prompt (`str` or `list[str]`, *optional*): What not to generate.
            num_videos_per_prompt (`int`, defaults to 1): Videos per prompt.
            guidance_rescale (`float`, defaults to 0.0): Rescales the guided output towards the text output's standard
                deviation (section 3.4 of "Common Diffusion Noise Schedules and Sample Steps are Flawed"); 0.7 is
                the paper's value for zero-terminal-SNR models, which over-expose under strong guidance without it.
            eta (`float`, defaults to 0.0): DDIM's eta, TCD's gamma (the share of each step noised again); ignored
                by other schedulers.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): For reproducible sampling.
            latents (`torch.Tensor`, *optional*): IID Gaussian noise `(B, C, F, h, w)` to start from; it goes
                through the mapping network like sampled noise does.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): Pre-computed text tokens `(B, L, D)`,
                or per frame `(B, F, L, D)`.
            ip_adapter_image, ip_adapter_image_embeds (*optional*): An image (or one per loaded IP-Adapter) the video
                should look like, or its precomputed embeddings, as in diffusers; needs `load_ip_adapter` first.
            motion_path (`torch.Tensor`, *optional*): The path the content should travel, `(num_frames, 2)` or
                `(batch, num_frames, 2)` `(x, y)` offsets from the first frame in latent pixels (x to the right, y
                down), instead of the path an adapter's path predictor predicts from the prompt. It warps the initial
                noise (adapters whose path predictor warps) and is the path of `motion_path_projection` and
                `mg_energy="motion_path"`.
            motion_path_projection (`float`, *optional*): How strongly the early clean-latent predictions are pulled
                onto content that travels rigidly along the motion path (`0` off, `1` fully rigid; see
                `mg_sampling.project_onto_path`) [ours]. Defaults to 1 when there is a path (an adapter with a motion
                path predictor, or `motion_path`), else 0. Costs no extra model call.
            motion_path_window (`tuple[float, float]`, *optional*): Fraction of the schedule, `[start, end)`, in
                which the projection runs: the early steps, where the layout is decided. Defaults to the adapter's
                `sampling_defaults`, else `(0.0, 0.5)`.
            motion_path_mask (`str`, *optional*): What the projection moves [ours]: `"subject"` (what the prompt's
                subject words attend to in the frozen model's cross-attention; the rest of the frame stands still)
                or `"frame"` (the whole frame, like a camera pan). Defaults to `"subject"` when `prompt` is given,
                else `"frame"`.
            motion_subject (`str` or `list[str]`, *optional*): The words of the prompt that name what moves, one
                string for every prompt or one per prompt (e.g. `"red circle"`). Defaults to the words before the
                prompt's first verb or preposition (`harivo.utils.text.subject_words`).
            motion_scene (`str` or `list[str]`, *optional*): The words of the prompt that name what stands still,
                one string for every prompt or one per prompt (e.g. `"striped background"`; `""` for none): where
                they are attended to counts against the subject's mask, so a textured background that the subject's
                words also attend to stays still [ours]. Defaults to the words after the first place preposition
                (`harivo.utils.text.scene_words`).
            motion_path_core_window (`tuple[float, float]`, *optional*): Fraction of the schedule, `[start, end)`,
                in which the subject projection moves only what is near the subject's core, where at least three
                quarters of the frames, aligned along the path, show the subject [ours]: a texture the subject's
                mask also covers stands still instead of travelling with the subject. Defaults to the adapter's
                `sampling_defaults` (the embedded adapter's: `(0.4, 1.0)`, measured in the model card), else off.
            temporal_window (`tuple[float, float]`, *optional*): Fraction of the schedule, `[start, end)`, in which
                the temporal layers (with the frame tokens and the motion conditioner) run [ours]; outside it each
                frame is denoised by the frozen image model alone, which keeps the image model's fine detail
                (textures the video data never showed) in the last steps. Costs nothing. Defaults to the adapter's
                `sampling_defaults`, else `(0.0, 1.0)` (always on).
            pag_scale (`float`, defaults to 0.0): Perturbed-attention guidance's strength (0: off): a third branch
                with the `pag_applied_layers` (`set_pag_applied_layers`, default `"mid"`) self-attention replaced by
                the identity, and the output moved away from it (diffusers' `AnimateDiffPAGPipeline` names).
            pag_adaptive_scale (`float`, defaults to 0.0): Lowers `pag_scale` by this times `1000 - t` (at least 0).
            motion_scale (`float`, `list[float]`, `dict[str, float]` or callable, defaults to 1.0): How much the
                temporal layers move things: their residual times this (1 the trained model, 0 the image model frame by
                frame with the adapter's noise, up to 10); a list gives one per frame, a dict one per U-Net block
                (`"down"`, `"mid"`, `"up"` or e.g. `"up_blocks.1"`), a callable `(step, num_steps)` returns one per
                step. The motion-path projection is scaled by its mean (`harivo.pipelines.motion_scale`).
            prompt_travel_window (`tuple[float, float]`, defaults to `(0.5, 1.0)`): With keyframe prompts, the
                fraction of the schedule, `[start, end)`, in which each frame reads its own text [ours]; outside it
                every frame reads the clip's mean text, so the layout (where the object is, decided in the early
                steps) is shared and only what the keyframes change is redrawn, without the object jumping between
                keyframes. `(0.0, 1.0)` gives each frame its own text throughout: better when the keyframes change
                the layout itself (a background or scene), see `docs/workflows.md`.
            mg_scale (`float`, defaults to 0.0): Mitigating-gradient guidance scale (alpha in the paper); 0 is off
                and costs nothing; the paper's default is 40.
            mg_window (`tuple[float, float]`, defaults to `(0.0, 0.5)`): Fraction of the schedule, `[start, end)`,
                in which MG guidance runs (each guided step costs one backward through the U-Net).
            mg_energy (`str`, defaults to `"frame_difference"`): `"frame_difference"` (adjacent-frame difference of
                the predicted clean latents), `"attention"` (the `L_trsa` distance of self-attention maps) or
                `"motion_path"` (the adjacent-frame difference after moving each frame along the motion path: MG
                that keeps content consistent *while it travels* the prompt's path; needs a path) [ours].
            mg_gradient (`str`, *optional*): How the energy's gradient is taken. `"full"` (the paper's): through
                the U-Net, a forward with gradients and a backward per guided step (about 3 plain steps). `"x0"`
                [ours]: with the model output held constant, `x0_hat` is linear in `z_t`, so the gradient is the
                energy's gradient at `x0_hat` (scaled, which the normalisation removes): no backward, a guided step
                costs a plain one; measured as steady as `"full"` (README). Defaults to `"x0"`, and to `"full"` for
                `mg_energy="attention"` (whose maps come from inside the U-Net).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"latent"`.
            return_dict (`bool`, defaults to `True`): Return an `AnimateDiffPipelineOutput` rather than a tuple.
            cross_attention_kwargs (`dict`, *optional*): Passed to the attention processors (e.g. LoRA `scale`).
            clip_skip (`int`, *optional*): CLIP layers to skip when encoding the prompt.
            callback_on_step_end (`Callable`, *optional*): Called as `fn(pipe, step, timestep, tensors)` after each
                step; may return replacements for the tensors named in `callback_on_step_end_tensor_inputs`.
            decode_chunk_size (`int`, defaults to 16): Frames decoded by the VAE at a time.

        Returns:
            `AnimateDiffPipelineOutput` with `frames`: a list of lists of PIL images, or an array / tensor of shape
            `(batch, frames, height, width, 3)` (`"np"`) / `(batch, frames, 3, height, width)` (`"pt"`), or the
            latents (`"latent"`).
        """
        # 0. Default height and width to the U-Net's sample size
        height, width = self._video_size(height, width)

        # The adapter's recommended sampling where the call leaves it unset
        if temporal_window is None:
            temporal_window = self.adapter.sampling_defaults.get("temporal_window", (0.0, 1.0))
        if motion_path_window is None:
            motion_path_window = self.adapter.sampling_defaults.get("motion_path_window", (0.0, 0.5))
        if motion_path_core_window is None:
            motion_path_core_window = self.adapter.sampling_defaults.get("motion_path_core_window", (1.0, 1.0))

        # 1. Check inputs
        self.check_inputs(
            prompt, num_frames, height, width, num_inference_steps, guidance_scale, negative_prompt, prompt_embeds,
            negative_prompt_embeds, mg_scale, mg_window, mg_energy, output_type, callback_on_step_end_tensor_inputs,
            num_videos_per_prompt, guidance_rescale, eta, motion_path_projection, motion_path_window, latents,
            decode_chunk_size, clip_skip,
        )  # fmt: skip
        self._check_pag(pag_scale, pag_adaptive_scale)
        names = motion_scale_lib.block_names(self.video_unet.base_unet)
        if not callable(motion_scale):  # a callable is checked at each step, with what it returns
            motion_scale_lib.check_motion_scale(motion_scale, num_frames, names)
        self._guidance_scale = guidance_scale
        self._guidance_rescale = guidance_rescale
        self._clip_skip = clip_skip
        self._step_index = None

        # 2. Define call parameters
        if prompt is not None:
            batch_size = 1 if isinstance(prompt, str | dict) else len(prompt)
        else:
            batch_size = prompt_embeds.shape[0]
        device = self._execution_device
        num_videos = batch_size * num_videos_per_prompt
        if self.memory_check:  # refuse what cannot fit before any work
            self.check_memory(num_frames, height, width, num_videos, guidance_scale, decode_chunk_size, device=device)

        # 3. Encode input prompt; classifier-free guidance batches [negative; positive]
        prompt_embeds, negative_prompt_embeds = self._encode_call_prompt(
            prompt, num_frames, device, num_videos_per_prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
            cross_attention_kwargs, clip_skip,
        )  # fmt: skip
        added_cond_kwargs = None
        if ip_adapter_image is not None or ip_adapter_image_embeds is not None:
            if not getattr(self.video_unet.base_unet, "encoder_hid_proj", None):
                raise ValueError("`ip_adapter_image` needs an IP-Adapter: call `pipe.load_ip_adapter(...)` first.")
            image_embeds = self.prepare_ip_adapter_image_embeds(
                ip_adapter_image, ip_adapter_image_embeds, device, num_videos, self.do_classifier_free_guidance
            )
            added_cond_kwargs = {"image_embeds": image_embeds}

        # 4. Prepare timesteps (a subclass may start later in the schedule); the windows are fractions of the whole
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self._timesteps(self.scheduler.timesteps)
        skipped, total = len(self.scheduler.timesteps) - len(timesteps), len(self.scheduler.timesteps)
        self._num_timesteps = len(timesteps)

        # 5. The motion path (given, or predicted from the positive prompt) and the initial latents z_T = m(eps),
        # eps warped along the path when the adapter warps its noise
        predictor = self.adapter.path_predictor if self._reads_predicted_path() else None
        warp_noise = predictor is not None and predictor.config.warp_noise and latents is None
        path_energy = mg_energy == "motion_path" and mg_scale > 0
        if motion_path_projection is None:  # on wherever there is a path
            motion_path_projection = 1.0 if predictor is not None or motion_path is not None else 0.0
        uses_path = warp_noise or path_energy or motion_path_projection > 0
        if motion_path is None and predictor is not None and uses_path:
            motion_path = prompt_travel.predicted_path(
                predictor, prompt_embeds[-num_videos:].to(predictor.dtype), num_frames
            ).float()
        if mg_gradient is None:
            mg_gradient = "full" if mg_energy == "attention" else "x0"
        mg_sampling.check_gradient(mg_gradient, mg_energy)
        mg_sampling.check_window("temporal_window", temporal_window)
        mg_sampling.check_window("motion_path_core_window", motion_path_core_window)
        mg_sampling.check_window("prompt_travel_window", prompt_travel_window)
        if motion_path_mask not in (None, "subject", "frame"):  # also refused where no projection runs
            raise ValueError(f"`motion_path_mask` must be 'subject' or 'frame', got {motion_path_mask!r}.")
        token_weights = None
        if motion_path_projection > 0 and motion_path_window[0] < motion_path_window[1]:
            token_weights = self._subject_token_weights(
                prompt, motion_path_mask, motion_subject, motion_scene, num_videos_per_prompt, device, num_frames
            )
        if motion_path is not None:
            if not uses_path:
                raise ValueError(
                    "`motion_path` would not be used: set `motion_path_projection` > 0 or `mg_energy='motion_path'`"
                    " (or use an adapter whose path predictor warps the noise)."
                )
            motion_path = self._loop_path(batched_path(motion_path, num_videos, num_frames), num_frames).to(device)
        elif uses_path:
            raise ValueError(
                "`motion_path_projection` and `mg_energy='motion_path'` need a path: pass `motion_path`, or use an"
                " adapter with a motion path predictor."
            )
        latents = self.prepare_latents(
            num_videos, self.video_unet.config.in_channels, num_frames, height, width, prompt_embeds.dtype, device,
            generator, latents, motion_path if warp_noise else None,
        )  # fmt: skip
        first_noise = latents  # z_T = m(eps): FreeInit's restarts keep its low frequencies
        latents = self._initial_latents(latents, timesteps)

        # 6. Prepare extra step kwargs; a sampler's per-step noise goes through the mapping network like z_T's
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        map_step_noise = adds_step_noise(self.scheduler, eta) and not self.adapter.mapping_network.is_identity
        renoising = isinstance(self.scheduler, RENOISING)  # its noise is drawn here and mapped, always
        if map_step_noise:
            extra_step_kwargs.pop("generator", None)  # the noise is drawn here instead
        use_mg = mg_scale > 0 and num_frames > 1

        # 7. Denoising loop; MG guidance inside the window; the subject's cross-attention recorded for the projection
        for iteration in range(self._free_init_iterations()):  # one, unless FreeInit samples again
            if self.free_init_enabled:
                self.scheduler.set_timesteps(self._free_init.steps(iteration, num_inference_steps), device=device)
                timesteps = self._timesteps(self.scheduler.timesteps)  # an input's part of the schedule
                total = len(self.scheduler.timesteps)
                skipped, self._num_timesteps = total - len(timesteps), len(timesteps)
                if iteration > 0:  # restart from the last result's low frequencies and fresh high ones
                    latents = self._free_init_restart(latents, first_noise, generator, self._restart_step(timesteps))
            capture = (
                self.video_unet.capture(token_weights=token_weights, latent_size=tuple(latents.shape[-2:]))
                if token_weights is not None
                else contextlib.nullcontext()
            )
            with (
                self.progress_bar(total=len(timesteps)) as progress_bar,
                capture as captured,
                self._during_call(captured, added_cond_kwargs),
                self._deep_cache_during_call(),
                self._motion_scaling_during_call(motion_scale) as scaling,
                self._pag_during_call(pag_scale, pag_adaptive_scale, added_cond_kwargs),
            ):
                for i, t in enumerate(timesteps):
                    self._step_index = i
                    step = skipped + i  # in the whole schedule
                    frozen = not mg_sampling.in_window(step, total, temporal_window)  # the image model alone
                    if scaling is not None:  # this step's motion scale; all zero: the image model alone too
                        scaling.scale = motion_scale_lib.motion_scale_at(
                            motion_scale, i, len(timesteps), num_frames, names
                        )
                        frozen = frozen or scaling.scale.is_zero
                    text = prompt_embeds
                    if text.ndim == 4 and not mg_sampling.in_window(step, total, prompt_travel_window):
                        text = text.mean(dim=1, keepdim=True).expand_as(text)  # per-frame text: the shared layout
                    guided = use_mg and mg_sampling.in_window(step, total, mg_window)
                    guided = guided and not (scaling is not None and scaling.scale.is_zero)
                    self._deep_cache_step(i, (frozen, tuple(latents.shape)), full=guided)
                    with self.video_unet.temporal_layers_disabled() if frozen else contextlib.nullcontext():
                        if guided:
                            noise_pred = self._mg_guided_noise(
                                latents, t, text, mg_scale, mg_energy, cross_attention_kwargs, motion_path,
                                mg_gradient,
                            )  # fmt: skip
                        else:
                            noise_pred = self._predict_noise(latents, t, text, cross_attention_kwargs)
                    strength = motion_path_projection * (scaling.scale.mean if scaling is not None else 1.0)
                    if strength > 0 and mg_sampling.in_window(step, total, motion_path_window):
                        mask = None
                        if captured is not None:
                            mask = mg_sampling.subject_mask(
                                captured.token_attention, num_videos, num_frames, tuple(latents.shape[-2:])
                            )
                        core = mask is not None and mg_sampling.in_window(step, total, motion_path_core_window)
                        noise_pred = self._project_onto_path(noise_pred, latents, t, motion_path, strength, mask, core)
                    if renoising:
                        latents = renoised_step(
                            self.scheduler, noise_pred, t, latents,
                            lambda shape=latents.shape, dtype=latents.dtype: self.adapter.mapping_network(
                                randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                            ),
                            eta,
                        )  # fmt: skip
                    else:
                        if map_step_noise:
                            noise = randn_tensor(
                                latents.shape, generator=generator, device=device, dtype=latents.dtype
                            )
                            extra_step_kwargs["variance_noise"] = self.adapter.mapping_network(noise)
                        latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs).prev_sample
                    latents = self._after_step(latents, i, timesteps)

                    if callback_on_step_end is not None:
                        tensors = {"latents": latents, "prompt_embeds": prompt_embeds}
                        tensors["negative_prompt_embeds"] = negative_prompt_embeds
                        callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                        callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                        callback_outputs = {} if callback_outputs is None else callback_outputs
                        latents = checks.callback_tensor(callback_outputs, "latents", latents)
                        prompt_embeds = checks.callback_tensor(callback_outputs, "prompt_embeds", prompt_embeds)
                    if not torch.isfinite(latents).all():
                        raise SamplingDivergedError(
                            f"The latents became NaN or infinite at step {i + 1} of {len(timesteps)}; nothing was decoded."
                            " Lower `guidance_scale` / `mg_scale`, or use float32 (`torch_dtype=torch.float32`)."
                        )
                    progress_bar.update()

        # 8. Decode
        if output_type == "latent":
            video = latents
        else:
            video_tensor = self.decode_latents(latents, decode_chunk_size)
            video = self.video_processor.postprocess_video(video=video_tensor, output_type=output_type)

        # 9. Offload all models
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return AnimateDiffPipelineOutput(frames=video)


def extends_call(base_call: Callable) -> Callable[[Callable], Callable]:
    """
    Decorate a task pipeline's `__call__(self, *args, <its own keywords>, **kwargs)`, which passes `args` and
    `kwargs` on to `base_call`: `inspect.signature` then shows `base_call`'s parameters followed by its own, as
    diffusers' pipelines show theirs (tools and diffusers' tests read it to find `prompt`, `guidance_scale`,
    `callback_on_step_end`, ...).
    """

    def decorate(call: Callable) -> Callable:
        own = [p for p in inspect.signature(call).parameters.values() if p.kind is p.KEYWORD_ONLY]
        base = inspect.signature(base_call)
        names = {p.name for p in own}
        inherited = [p for p in base.parameters.values() if p.name not in names]
        call.__signature__ = base.replace(parameters=[*inherited, *own])
        return call

    return decorate
