"""`HarivoControlNetPipeline`: HARIVO text-to-video steered by ControlNets on every frame or on chosen frames."""

import inspect
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, ControlNetModel, SparseControlNetModel, UNet2DConditionModel, UNetMotionModel
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from diffusers.pipelines.animatediff.pipeline_output import AnimateDiffPipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..errors import HarivoLoadError
from ..loading import check_weight_format, describe_load_error, looks_like_local_path
from ..models.adapter import HarivoAdapter
from . import controlnet as control
from .frames import num_prompts, paths_per_video, videos_per_prompt
from .loading import has_component
from .pipeline_harivo import HarivoPipeline, extends_call


class HarivoControlNetPipeline(HarivoPipeline):
    r"""
    [`HarivoPipeline`] with one or several ControlNets of the frozen image model, on every frame or on chosen frames
    (the names are those of diffusers' `AnimateDiffControlNetPipeline` and `AnimateDiffSparseControlNetPipeline`).

    A ControlNet is an image model: it runs frame by frame on the controlled frames only, reading the prompt (not
    HARIVO's frame tokens); its residuals enter the frozen spatial layers of those frames, and the temporal layers
    carry them to the rest. With a control the pipeline does not use the path the adapter predicts from the prompt
    (the control says where things are): the motion-path projection and path-warped noise are off unless you pass
    `motion_path` (a tensor, or `"control"` to read it from silhouette-like conditions).

    Args:
        vae, text_encoder, tokenizer, unet, adapter, scheduler: As in [`HarivoPipeline`].
        controlnet ([`~diffusers.ControlNetModel`], [`~diffusers.SparseControlNetModel`], a list of them or a
            [`~diffusers.MultiControlNetModel`]): Built for the base model (same U-Net widths and cross-attention
            size). A SparseCtrl net reads the whole clip and spreads the controlled frames' conditions to the others
            with its own temporal layers; an image ControlNet acts on the controlled frames only.
    """

    _exclude_from_cpu_offload = ["adapter", "controlnet"]  # small and called every step: kept on the device

    def __init__(
        self,
        vae: AutoencoderKL | None,
        text_encoder: CLIPTextModel | None,
        tokenizer: CLIPTokenizer | None,
        unet: UNet2DConditionModel | UNetMotionModel | None,
        adapter: HarivoAdapter | None,
        controlnet: ControlNetModel
        | SparseControlNetModel
        | list[ControlNetModel | SparseControlNetModel]
        | tuple[ControlNetModel | SparseControlNetModel, ...]
        | MultiControlNetModel,
        scheduler: SchedulerMixin,
        feature_extractor: CLIPImageProcessor | None = None,
        image_encoder: CLIPVisionModelWithProjection | None = None,
    ):
        super().__init__(vae, text_encoder, tokenizer, unet, adapter, scheduler, feature_extractor, image_encoder)
        controlnet = control.as_multi(controlnet)
        if controlnet is not None and unet is not None:
            control.check_controlnet(controlnet, unet.config)
        self.register_modules(controlnet=controlnet)
        self._control: control.ControlInputs | None = None

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        adapter: HarivoAdapter | str | os.PathLike | None = None,
        *,
        controlnet: Any = None,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> "HarivoControlNetPipeline":
        r"""
        Load a base model, a HARIVO adapter and ControlNets ([`HarivoPipeline.from_pretrained`]'s arguments, plus:)

        Args:
            controlnet: A `ControlNetModel`, a folder or hub id of one, or a list of these (several nets at once);
                optional when the folder is a saved `HarivoControlNetPipeline`.
        """
        local = Path(pretrained_model_name_or_path).expanduser()
        if controlnet is None and local.is_dir() and not has_component(local, "controlnet"):
            raise ValueError(
                f"{str(local)!r} holds no ControlNet: pass `controlnet=` (a ControlNetModel, its folder or hub id, or a"
                " list of them)."
            )
        if controlnet is not None:
            kwargs["controlnet"] = _load_controlnets(controlnet, allow_pickle, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, adapter, allow_pickle=allow_pickle, **kwargs)

    @classmethod
    def from_single_file(
        cls,
        pretrained_model_link_or_path: str | os.PathLike,
        adapter: HarivoAdapter | str | os.PathLike | None = None,
        *,
        controlnet: Any,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> "HarivoControlNetPipeline":
        r"""
        Load a single-file base model ([`HarivoPipeline.from_single_file`]'s arguments), an adapter and ControlNets
        (`controlnet`: a `ControlNetModel`, a folder or hub id of one, or a list of these).
        """
        kwargs["controlnet"] = _load_controlnets(controlnet, allow_pickle, kwargs)
        return super().from_single_file(pretrained_model_link_or_path, adapter, allow_pickle=allow_pickle, **kwargs)

    def _unet_residuals(self, model_input, t, prompt_embeds, frames=None) -> dict[str, Any]:
        inputs = self._control
        if inputs is not None and frames is not None:  # a long video's window: its own frames' conditions
            inputs = control.in_window(inputs, list(frames))
        if inputs is None:
            return {}
        return control.control_residuals(
            self.controlnet, inputs, model_input, t, prompt_embeds, self._step_index, self.num_timesteps,
            self.do_classifier_free_guidance,
        )  # fmt: skip

    def _reads_predicted_path(self) -> bool:
        return self._control is None

    @extends_call(HarivoPipeline.__call__)
    @torch.no_grad()
    def __call__(
        self,
        *args: Any,
        conditioning_frames: Any = None,
        controlnet_frame_indices: list[int] | None = None,
        controlnet_conditioning_scale: float | list[float] = 1.0,
        guess_mode: bool = False,
        control_guidance_start: float | list[float] = 0.0,
        control_guidance_end: float | list[float] = 1.0,
        **kwargs: Any,
    ) -> AnimateDiffPipelineOutput | tuple:
        r"""
        Generate videos from text, steered by the ControlNets. Every argument of [`HarivoPipeline.__call__`] works
        the same; these are added:

        Args:
            conditioning_frames: The condition images: a list of PIL images, an array `(frames, H, W, 3)` or a
                tensor `(frames, 3, H, W)` in [0, 1]; one per frame, or one per entry of `controlnet_frame_indices`.
                With several ControlNets, a list with one such entry per net. Images of the video's aspect ratio
                but another size are resized (bilinear); another aspect ratio is refused.
            controlnet_frame_indices (`list[int]`, *optional*): Control only these frames (e.g. `[0, 15]`); the
                others get no ControlNet residual. Default: every frame.
            controlnet_conditioning_scale (`float` or `list[float]`, defaults to 1.0): Scale of each net's
                residuals; 0 gives exactly the uncontrolled video.
            guess_mode (`bool`, defaults to `False`): The nets see only the prompt's half of the classifier-free
                batch, and their residuals are scaled up from the shallow to the deep layers (diffusers' guess mode).
            control_guidance_start, control_guidance_end (`float` or `list[float]`, defaults to 0.0 and 1.0):
                Fraction of the schedule in which each net acts.
            motion_path (`torch.Tensor` or `"control"`, *optional*): As in [`HarivoPipeline.__call__`], or
                `"control"`: the path the conditions' bright part (a silhouette) travels, interpolated between
                controlled frames, so that with keyframes only the prompt's subject moves along it in between.
        """
        bound = inspect.signature(HarivoPipeline.__call__).bind(self, *args, **kwargs)
        bound.apply_defaults()
        call = bound.arguments
        if self.controlnet is None:
            raise ValueError(
                "This pipeline has no ControlNet; set `pipe.controlnet = ...` or load it with"
                " `HarivoControlNetPipeline.from_pretrained(base_model, adapter=..., controlnet=...)`."
            )
        control.check_controlnet(self.controlnet, self.video_unet.config)
        height, width = self._video_size(call["height"], call["width"])
        inputs = control.prepare_control(
            self.controlnet, conditioning_frames, controlnet_frame_indices, controlnet_conditioning_scale,
            control_guidance_start, control_guidance_end, guess_mode, call["num_frames"], height, width,
            self.vae_scale_factor, num_prompts(call["prompt"], call["prompt_embeds"]),
            videos_per_prompt(call),
        )  # fmt: skip
        if isinstance(call["motion_path"], str):
            if call["motion_path"] != "control":
                raise ValueError(f"`motion_path` must be a tensor or 'control', got {call['motion_path']!r}.")
            if len(inputs.images) > 1:
                raise ValueError(
                    "`motion_path='control'` reads one net's conditions; with several ControlNets pass `motion_path`"
                    " yourself (e.g. `harivo.pipelines.controlnet.path_from_conditions`)."
                )
            paths = torch.stack([
                control.path_from_conditions(clip, inputs.frame_indices, inputs.num_frames, self.vae_scale_factor)
                for clip in inputs.images[0]
            ])  # fmt: skip
            call["motion_path"] = paths_per_video(paths, inputs.videos_per_prompt)
        for number, net in enumerate(control.nets_of(self.controlnet)):
            if control.reads_latents(net):  # SparseCtrl's RGB nets read the condition images as VAE latents
                inputs.images[number] = torch.stack(
                    [self.encode_frames(clip).transpose(0, 1).float().cpu() for clip in inputs.images[number]]
                )
        self._control = inputs
        try:
            return super().__call__(*bound.args[1:], **bound.kwargs)
        finally:
            self._control = None


def _load_controlnet(path: str | os.PathLike, allow_pickle: bool, dtype: torch.dtype | None):
    """A `ControlNetModel` or `SparseControlNetModel` (as its config says) from a folder or hub id."""
    local = Path(path).expanduser()
    if local.exists():
        check_weight_format(local, allow_pickle)
    elif looks_like_local_path(str(path)) or "/" not in str(path):  # a hub id is always org/name
        raise HarivoLoadError(f"The ControlNet {str(path)!r} does not exist; give a ControlNet folder or a hub id.")
    try:
        cls = ControlNetModel
        if ControlNetModel.load_config(path).get("_class_name") == "SparseControlNetModel":
            cls = SparseControlNetModel
        return cls.from_pretrained(path, torch_dtype=dtype, use_safetensors=not allow_pickle or None)
    except (OSError, ValueError) as error:
        raise describe_load_error("ControlNet", path, error) from error


def _load_controlnets(controlnet: Any, allow_pickle: bool, kwargs: dict):
    """A ControlNet, its folder or hub id, or a list of these, loaded (a list as a `MultiControlNetModel`)."""
    items = controlnet if isinstance(controlnet, list | tuple) else [controlnet]
    loaded = []
    for item in items:
        if isinstance(item, str | os.PathLike):
            item = _load_controlnet(item, allow_pickle, kwargs.get("torch_dtype", kwargs.get("dtype")))
        loaded.append(item)
    return control.as_multi(loaded if isinstance(controlnet, list | tuple) else loaded[0])
