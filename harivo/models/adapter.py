"""`HarivoAdapter`: everything HARIVO adds to a frozen text-to-image model, shipped and loaded as one folder.

Folder layout (each sub-folder is a normal diffusers model folder: `config.json` + safetensors)::

    harivo_adapter.json
    motion_adapter/          temporal layers `l_theta` (a diffusers `MotionAdapter`, loadable by AnimateDiff)
    mapping_network/         noise mapping network `m_theta`
    frame_token_generator/   frame-wise token generator `t_theta`
    motion_conditioner/      prompt vectors for the temporal layers [ours] (optional)
    path_predictor/          the prompt's motion path, for sampling (and warping the noise) [ours] (optional)
    projection_head/         h-space projection head `g_theta` (training only; optional)
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import MotionAdapter
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from ..errors import HarivoLoadError, IncompatibleAdapterError
from ..loading import WEIGHT_SUFFIXES, check_weight_format, describe_load_error, dtype_argument, resolve_model_path
from .frame_tokens import FrameTokenGenerator
from .mapping_network import NoiseMappingNetwork
from .motion_conditioning import MotionConditioner
from .motion_path import MotionPathPredictor
from .projection_head import HSpaceProjectionHead

ADAPTER_CONFIG_NAME = "harivo_adapter.json"
COMPONENTS = {
    "motion_adapter": MotionAdapter,
    "mapping_network": NoiseMappingNetwork,
    "frame_token_generator": FrameTokenGenerator,
    "motion_conditioner": MotionConditioner,
    "path_predictor": MotionPathPredictor,
    "projection_head": HSpaceProjectionHead,
}
OPTIONAL_COMPONENTS = ("motion_conditioner", "path_predictor", "projection_head")


def temporal_transformers(motion_adapter: MotionAdapter) -> list[AnimateDiffTransformer3D]:
    """The temporal transformers of a `MotionAdapter` in a fixed order: down blocks, mid block, up blocks."""
    blocks = [*motion_adapter.down_blocks, motion_adapter.mid_block, *motion_adapter.up_blocks]
    return [module for block in blocks if block is not None for module in block.motion_modules]


def temporal_layer_widths(motion_adapter: MotionAdapter) -> tuple[int, ...]:
    """Width of each temporal transformer's attention input, in `temporal_transformers` order."""
    return tuple(module.proj_in.out_features for module in temporal_transformers(motion_adapter))


def zero_init_temporal_outputs(motion_adapter: MotionAdapter) -> MotionAdapter:
    """Zero the output projection of every temporal transformer, so each temporal layer starts as the identity."""
    for module in motion_adapter.modules():
        if isinstance(module, AnimateDiffTransformer3D):
            nn.init.zeros_(module.proj_out.weight)
            nn.init.zeros_(module.proj_out.bias)
    return motion_adapter


def _add_motion_condition(module: nn.Linear, _args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of a temporal layer's `proj_in`: add the prompt vectors `(B, F, C)` the adapter set on it, if any,
    to its output `(B*h*w, F, C)` (rows in `(batch, pixel)` order)."""
    vectors = module.__dict__.get("_harivo_motion_condition")
    if vectors is None:
        return output
    pixels = output.shape[0] // vectors.shape[0]
    return output + vectors.to(output.dtype).repeat_interleave(pixels, dim=0)


# Pipeline settings an adapter may recommend (`HarivoAdapter.sampling_defaults`): name -> what a value must be.
# The windows are read by `HarivoPipeline` where a call leaves them unset; the sampler and its number of steps by
# `harivo generate` / `harivo ui` where the command leaves them unset (a pipeline call keeps diffusers' meaning).
SAMPLING_DEFAULTS = {
    "temporal_window": "a fraction window [start, end] with 0 <= start <= end <= 1",
    "motion_path_window": "a fraction window [start, end] with 0 <= start <= end <= 1",
    "motion_path_core_window": "a fraction window [start, end] with 0 <= start <= end <= 1",
    "scheduler": "a sampler name harivo offers (harivo.schedulers.SCHEDULERS)",
    "num_inference_steps": "a positive whole number of steps",
}
# The fraction windows among them (each also a `HarivoPipeline` keyword and a training option `sampling_<name>`)
SAMPLING_WINDOWS = ("temporal_window", "motion_path_window", "motion_path_core_window")


def check_sampling_defaults(defaults: Any) -> dict[str, Any]:
    """`defaults` checked (windows as tuples), or a one-line `ValueError` naming what is wrong."""
    if not isinstance(defaults, dict):
        raise ValueError(f"`sampling_defaults` must be an object of {sorted(SAMPLING_DEFAULTS)}, got {defaults!r}.")
    checked = {}
    for name, value in defaults.items():
        if name not in SAMPLING_DEFAULTS:
            raise ValueError(f"Unknown sampling default {name!r}; known: {sorted(SAMPLING_DEFAULTS)}.")
        if name == "scheduler":
            from ..schedulers import SCHEDULERS

            valid = value in SCHEDULERS
        elif name == "num_inference_steps":
            valid = isinstance(value, int) and not isinstance(value, bool) and value > 0
        else:
            try:
                start, end = (float(v) for v in value)
            except (TypeError, ValueError):
                start = end = float("nan")
            valid = 0.0 <= start <= end <= 1.0
            value = (start, end)
        if not valid:
            raise ValueError(f"Sampling default {name!r} must be {SAMPLING_DEFAULTS[name]}, got {defaults[name]!r}.")
        checked[name] = value
    return checked


def _as_tuple(value: Any, length: int) -> tuple:
    return tuple(value) if isinstance(value, list | tuple) else (value,) * length


class HarivoAdapter(ModelMixin):
    r"""
    The trainable parts of HARIVO, bundled. Its parameters are exactly the parameters HARIVO trains.

    A `ModelMixin` so that diffusers pipelines save and load it as a component (through the `save_pretrained` /
    `from_pretrained` below, which write one sub-folder per part).

    Args:
        motion_adapter ([`~diffusers.MotionAdapter`]): Temporal layers.
        mapping_network ([`NoiseMappingNetwork`]): Noise mapping network.
        frame_token_generator ([`FrameTokenGenerator`]): Frame-wise token generator (`num_tokens=0` is off).
        projection_head ([`HSpaceProjectionHead`], *optional*): h-space projection head, needed only for training.
        motion_conditioner ([`MotionConditioner`], *optional*): Prompt vectors for the temporal layers [ours].
        path_predictor ([`MotionPathPredictor`], *optional*): The prompt's motion path [ours].
        sampling_defaults (`dict`, *optional*): Sampling settings this adapter was measured best with, used by
            `HarivoPipeline` where a call leaves them unset; keys from `SAMPLING_DEFAULTS` (e.g.
            `{"temporal_window": (0.0, 0.5)}`). Saved in `harivo_adapter.json`.
    """

    def __init__(
        self,
        motion_adapter: MotionAdapter,
        mapping_network: NoiseMappingNetwork,
        frame_token_generator: FrameTokenGenerator,
        projection_head: HSpaceProjectionHead | None = None,
        motion_conditioner: MotionConditioner | None = None,
        path_predictor: MotionPathPredictor | None = None,
        sampling_defaults: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.sampling_defaults = check_sampling_defaults(sampling_defaults or {})
        self.motion_adapter = motion_adapter
        self.mapping_network = mapping_network
        self.frame_token_generator = frame_token_generator
        self.motion_conditioner = motion_conditioner
        self.path_predictor = path_predictor
        self.projection_head = projection_head
        if motion_conditioner is not None:
            widths = temporal_layer_widths(motion_adapter)
            if tuple(motion_conditioner.config.layer_channels) != widths:
                raise IncompatibleAdapterError(
                    f"The motion conditioner was built for temporal layers of widths "
                    f"{tuple(motion_conditioner.config.layer_channels)}, these have {widths}."
                )
            # One hook per temporal layer, owned by the adapter's own modules: it reads only what
            # `motion_condition` put on its module, so any number of video U-Nets can share this adapter.
            for module in temporal_transformers(motion_adapter):
                if "_harivo_motion_condition" not in module.proj_in.__dict__:
                    module.proj_in.__dict__["_harivo_motion_condition"] = None
                    module.proj_in.register_forward_hook(_add_motion_condition)

    @contextmanager
    def motion_condition(self, vectors: list[torch.Tensor] | None, keep: bool = False) -> Iterator[None]:
        """
        Inside, each temporal layer adds its prompt vectors (`MotionConditioner` output, one `(B, F, C)` per layer).

        Args:
            vectors (`list[torch.Tensor]` or `None`): One tensor per temporal layer, or `None` for none.
            keep (`bool`, defaults to `False`): Leave the vectors in place on exit, for a backward pass that
                recomputes the layers (gradient checkpointing); the next `motion_condition` replaces them.
        """
        if self.motion_conditioner is None:  # no hooks: nothing to set
            if vectors is not None:
                raise ValueError("This adapter has no motion conditioner, so its temporal layers take no vectors.")
            yield
            return
        # (inside `HarivoUNet.temporal_layers_disabled` the temporal layers are stand-ins without `proj_in`)
        layers = [m.proj_in.__dict__ for m in temporal_transformers(self.motion_adapter) if hasattr(m, "proj_in")]
        if vectors is not None and len(vectors) != len(layers):
            raise ValueError(f"Expected prompt vectors for {len(layers)} temporal layers, got {len(vectors)}.")
        previous = [layer["_harivo_motion_condition"] for layer in layers]
        for index, layer in enumerate(layers):
            layer["_harivo_motion_condition"] = None if vectors is None else vectors[index]
        try:
            yield
        finally:
            if not keep:
                for layer, value in zip(layers, previous):
                    layer["_harivo_motion_condition"] = value

    @property
    def max_frames(self) -> int:
        """Most frames the temporal layers (and frame tokens) support."""
        limits = [self.motion_adapter.config.motion_max_seq_length]
        if self.frame_token_generator.enabled:
            limits.append(self.frame_token_generator.config.max_frames)
        for part in (self.motion_conditioner, self.path_predictor):
            if part is not None:
                limits.append(part.config.max_frames)
        return min(limits)

    @classmethod
    def from_unet(
        cls,
        unet_config: Any,
        *,
        motion_adapter: MotionAdapter | None = None,
        num_frame_tokens: int = 4,
        max_frames: int = 32,
        motion_num_attention_heads: int = 8,
        mapping_hidden_channels: int = 64,
        mapping_num_layers: int = 3,
        renormalize_noise: bool = True,
        noise_frame_correlation: float = 0.0,
        projection_dim: int = 128,
        with_projection_head: bool = True,
        motion_conditioning: bool = False,
        motion_conditioning_dim: int = 128,
        motion_conditioning_pooling: str = "attention",
        motion_path: bool = False,
        noise_warping: bool = False,
        noise_warp_correlation: float = 0.9,
        noise_warp_upscale: int = 4,
    ) -> "HarivoAdapter":
        r"""
        Build a fresh adapter at identity for a base U-Net: zero-initialised temporal layers, identity mapping
        network, zero frame tokens.

        Args:
            unet_config: The base `UNet2DConditionModel` or its `config`.
            motion_adapter ([`~diffusers.MotionAdapter`], *optional*):
                Start from these temporal layers (e.g. a pretrained AnimateDiff adapter) instead of fresh ones.
            num_frame_tokens (`int`, defaults to 4): Tokens per frame, `K` (`0` is off).
            max_frames (`int`, defaults to 32): Longest clip the fresh temporal layers and frame tokens support.
            motion_num_attention_heads (`int`, defaults to 8): Heads of the fresh temporal attention layers.
            mapping_hidden_channels (`int`, defaults to 64): Hidden channels of the mapping network.
            mapping_num_layers (`int`, defaults to 3): 3-D convolutions in the mapping network.
            renormalize_noise (`bool`, defaults to `True`): Per-frame renormalisation in the mapping network.
            noise_frame_correlation (`float`, defaults to 0): Correlation between frames that the mapping network's
                fixed frame mixing gives the noise (`0`: the identity).
            projection_dim (`int`, defaults to 128): Output dimension of the h-space projection head.
            with_projection_head (`bool`, defaults to `True`): Build the projection head (needed to train `L_dc`).
            motion_conditioning (`bool`, defaults to `False`): Add a [`MotionConditioner`], which gives the temporal
                layers the prompt [ours]; zero-initialised, so the fresh adapter is still the identity.
            motion_conditioning_dim (`int`, defaults to 128): Hidden width of the motion conditioner.
            motion_conditioning_pooling (`str`, defaults to `"attention"`): How the conditioner pools the prompt
                (`"attention"` or `"last_token"`, see [`MotionConditioner`]).
            motion_path (`bool`, defaults to `False`): Add a [`MotionPathPredictor`], which predicts the prompt's
                motion path; the pipeline moves the content along it [ours]. Fresh, it predicts no motion.
            noise_warping (`bool`, defaults to `False`): Also warp the initial noise along the path (implies
                `motion_path`). Needs `noise_frame_correlation=0` (the warp correlates the frames itself).
            noise_warp_correlation (`float`, defaults to 0.9): Share of each frame's noise that follows the path.
            noise_warp_upscale (`int`, defaults to 4): Sub-pixel resolution of the path (in `1/upscale` latent
                pixels).
        """
        if noise_warping and noise_frame_correlation:
            raise ValueError(
                "`noise_warping` correlates the frames' noise itself; set `noise_frame_correlation` to 0 (the "
                "mapping network's frame mixing expects independent frames)."
            )
        config = getattr(unet_config, "config", unet_config)
        channels = tuple(config["block_out_channels"])
        if motion_adapter is None:
            motion_adapter = MotionAdapter(
                block_out_channels=channels,
                motion_layers_per_block=config["layers_per_block"],
                motion_norm_num_groups=config["norm_num_groups"],
                motion_num_attention_heads=motion_num_attention_heads,
                motion_max_seq_length=max_frames,
            )
            zero_init_temporal_outputs(motion_adapter)
        max_frames = motion_adapter.config.motion_max_seq_length
        mapping_network = NoiseMappingNetwork(
            in_channels=config["in_channels"],
            hidden_channels=mapping_hidden_channels,
            num_layers=mapping_num_layers,
            renormalize=renormalize_noise,
            frame_correlation=noise_frame_correlation,
        )
        frame_token_generator = FrameTokenGenerator(
            cross_attention_dim=config["cross_attention_dim"], num_tokens=num_frame_tokens, max_frames=max_frames
        )
        projection_head = (
            HSpaceProjectionHead(in_channels=channels[-1], hidden_dim=4 * projection_dim, out_dim=projection_dim)
            if with_projection_head
            else None
        )
        motion_conditioner = None
        if motion_conditioning:
            motion_conditioner = MotionConditioner(
                cross_attention_dim=config["cross_attention_dim"],
                layer_channels=temporal_layer_widths(motion_adapter),
                hidden_dim=motion_conditioning_dim,
                max_frames=max_frames,
                pooling=motion_conditioning_pooling,
            )
        path_predictor = None
        if motion_path or noise_warping:
            path_predictor = MotionPathPredictor(
                cross_attention_dim=config["cross_attention_dim"],
                max_frames=max_frames,
                warp_noise=noise_warping,
                upscale=noise_warp_upscale,
                correlation=noise_warp_correlation,
            )
        return cls(
            motion_adapter, mapping_network, frame_token_generator, projection_head, motion_conditioner, path_predictor
        )

    def check_compatible(self, unet_config: Any) -> None:
        """
        Raise `IncompatibleAdapterError` if this adapter was built for a base U-Net of another architecture.

        Args:
            unet_config: A `UNet2DConditionModel` / `UNetMotionModel` or its `config`.
        """
        config = getattr(unet_config, "config", unet_config)
        motion = self.motion_adapter.config
        num_blocks = len(config["block_out_channels"])
        expected = {
            "block_out_channels": (tuple(motion.block_out_channels), tuple(config["block_out_channels"])),
            "layers_per_block": (
                _as_tuple(motion.motion_layers_per_block, num_blocks),
                _as_tuple(config["layers_per_block"], num_blocks),
            ),
            "in_channels (mapping network)": (self.mapping_network.config.in_channels, config["in_channels"]),
        }
        if self.frame_token_generator.enabled:
            expected["cross_attention_dim (frame tokens)"] = (
                self.frame_token_generator.config.cross_attention_dim,
                config["cross_attention_dim"],
            )
        if self.motion_conditioner is not None:
            expected["cross_attention_dim (motion conditioner)"] = (
                self.motion_conditioner.config.cross_attention_dim,
                config["cross_attention_dim"],
            )
        if self.path_predictor is not None:
            expected["cross_attention_dim (path predictor)"] = (
                self.path_predictor.config.cross_attention_dim,
                config["cross_attention_dim"],
            )
        if self.projection_head is not None:
            expected["mid-block channels (projection head)"] = (
                self.projection_head.config.in_channels,
                config["block_out_channels"][-1],
            )
        mismatches = [
            f"{name}: adapter {ours}, base {theirs}" for name, (ours, theirs) in expected.items() if ours != theirs
        ]
        if mismatches:
            raise IncompatibleAdapterError(
                "This HARIVO adapter was built for a base model of another architecture ("
                + "; ".join(mismatches)
                + "). Use an adapter trained on a base model of the same family (e.g. SD-1.5 for SD-1.5)."
            )

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        include_projection_head: bool = True,
        safe_serialization: bool = True,
        variant: str | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Save every component into its own sub-folder (safetensors) plus `harivo_adapter.json`.

        Args:
            save_directory (`str` or `os.PathLike`): Folder to write (created if needed).
            include_projection_head (`bool`, defaults to `True`): Also save the training-only projection head.
            safe_serialization (`bool`, defaults to `True`): safetensors files (`False`: pickle `.bin` files).
            variant (`str`, *optional*): Write the weights as `diffusion_pytorch_model.<variant>.safetensors`, beside
                the default files (a `DiffusionPipeline.save_pretrained(..., variant=...)` passes it here).
            kwargs: Passed to each component's `save_pretrained`.
        """
        kwargs.update(safe_serialization=safe_serialization, variant=variant)
        injected = sorted({key.split(".lora_")[0] for key in self.state_dict() if ".lora_" in key})
        if injected or any(".base_layer." in key for key in self.state_dict()):
            raise ValueError(
                f"This adapter has LoRA layers loaded into it ({len(injected)} layers, e.g. {injected[:1]}), which"
                " cannot be saved as adapter weights: call `pipe.fuse_lora()` then `pipe.unload_lora_weights()` to"
                " save them fused into the temporal layers, or `pipe.unload_lora_weights()` to save without them."
            )
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        saved = []
        for name in COMPONENTS:
            component = getattr(self, name)
            if component is None or (name == "projection_head" and not include_projection_head):
                continue
            component.save_pretrained(save_directory / name, **kwargs)
            saved.append(name)
        from .. import __version__

        manifest = {"_class_name": type(self).__name__, "_harivo_version": __version__, "components": saved}
        if variant:
            manifest["variant"] = variant
        if self.sampling_defaults:
            manifest["sampling_defaults"] = {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in self.sampling_defaults.items()
            }
        (save_directory / ADAPTER_CONFIG_NAME).write_text(json.dumps(manifest, indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        allow_pickle: bool = False,
        torch_dtype: torch.dtype | None = None,
        variant: str | None = None,
        motion_num_attention_heads: int | None = None,
        motion_norm_num_groups: int | None = None,
        **kwargs: Any,
    ) -> "HarivoAdapter":
        r"""
        Load a HARIVO adapter folder, or plain AnimateDiff temporal layers (then the mapping network is the identity
        and frame tokens are off): a diffusers `MotionAdapter` folder, or one motion-module file (AnimateDiff's own
        `.ckpt` / `.safetensors` in their original layout, or a diffusers-layout file such as AnimateDiff-Lightning's).

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): Local folder or Hugging Face Hub id.
            allow_pickle (`bool`, defaults to `False`): Accept pickle weight files (they can run code when loaded).
            torch_dtype (`torch.dtype`, *optional*): Load the weights in this dtype (`dtype=` is read too).
            variant (`str`, *optional*): Load the weight files of this variant (e.g. `"fp16"`), as
                `save_pretrained(variant=...)` wrote them; by default the default files, or the variant the folder
                was saved with where it has no default files. A component without files of that variant loads its
                default files.
            motion_num_attention_heads, motion_norm_num_groups (`int`, *optional*): For a motion-module file, what
                its weights cannot tell: the heads of its temporal attention and its norm groups (AnimateDiff's 8
                and 32; `HarivoPipeline.from_pretrained` passes the base U-Net's norm groups).
            kwargs: `revision`, `cache_dir`, `token`, ... for hub downloads; other diffusers loading arguments
                (from a `DiffusionPipeline.from_pretrained` call) are ignored.
        """
        torch_dtype = torch_dtype if torch_dtype is not None else kwargs.get("dtype")
        if Path(pretrained_model_name_or_path).expanduser().is_file():  # a motion-module file
            from .motion_checkpoint import motion_adapter_from_file

            motion_adapter = motion_adapter_from_file(
                pretrained_model_name_or_path, allow_pickle, motion_num_attention_heads, motion_norm_num_groups
            )
            adapter = cls._around_motion_adapter(motion_adapter)
            return adapter.to(dtype=torch_dtype) if torch_dtype is not None else adapter
        download_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token") if kwargs.get(k) is not None}
        path = resolve_model_path(pretrained_model_name_or_path, "HARIVO adapter", **download_kwargs)
        check_weight_format(path, allow_pickle)
        # safetensors only, unless pickle is allowed: then safetensors first, pickle as a fallback
        load_kwargs = dtype_argument(
            {"use_safetensors": True if not allow_pickle else None, "torch_dtype": torch_dtype}
        )
        manifest_path = path / ADAPTER_CONFIG_NAME
        if not manifest_path.is_file():
            if _is_motion_adapter_folder(path):
                motion_adapter = _load_component(MotionAdapter, path, "motion adapter", load_kwargs)
                adapter = cls._around_motion_adapter(motion_adapter)
                return adapter.to(dtype=torch_dtype) if torch_dtype is not None else adapter
            raise HarivoLoadError(
                f"{str(path)!r} is neither a HARIVO adapter folder (no {ADAPTER_CONFIG_NAME}) nor a diffusers "
                "MotionAdapter folder (no config.json with _class_name MotionAdapter)."
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise describe_load_error("HARIVO adapter manifest", manifest_path, error) from error
        if not isinstance(manifest, dict) or not isinstance(manifest.get("components", []), list):
            raise HarivoLoadError(
                f"{manifest_path} is not a HARIVO adapter manifest (expected a JSON object with a `components` list)."
            )
        components = {}
        for name, component_cls in COMPONENTS.items():
            folder = path / name
            if name not in manifest.get("components", []) and name in OPTIONAL_COMPONENTS:
                components[name] = None
                continue
            if not folder.is_dir():
                raise HarivoLoadError(f"The HARIVO adapter at {str(path)!r} is missing its {name!r} sub-folder.")
            components[name] = _load_component(
                component_cls,
                folder,
                name.replace("_", " "),
                {**load_kwargs, "variant": _variant_in(folder, variant, manifest.get("variant"))},
            )
        try:
            return cls(**components, sampling_defaults=manifest.get("sampling_defaults"))
        except ValueError as error:
            raise HarivoLoadError(f"{manifest_path}: {error}") from error

    @classmethod
    def _around_motion_adapter(cls, motion_adapter: MotionAdapter) -> "HarivoAdapter":
        """Wrap plain AnimateDiff temporal layers: identity mapping network, frame tokens off, no projection head."""
        max_frames = motion_adapter.config.motion_max_seq_length
        return cls(
            motion_adapter,
            NoiseMappingNetwork(in_channels=motion_adapter.config.conv_in_channels or 4),
            FrameTokenGenerator(num_tokens=0, max_frames=max_frames),
            None,
        )


def _variant_in(folder: Path, variant: str | None, saved: str | None = None) -> str | None:
    """The variant of `folder`'s weight files to load: `variant` where it has files of it, else `None` (its default
    files); without `variant`, its default files, or the `saved` variant where it has no default files."""
    if not folder.is_dir():
        return None
    weights = [p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    if variant is None:
        if saved is None or any(len(p.suffixes) == 1 for p in weights):
            return None
        variant = saved
    return variant if any(f".{variant}." in p.name for p in weights) else None


def _is_motion_adapter_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        content = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(content, dict) and content.get("_class_name") == "MotionAdapter"


def _load_component(component_cls: type, folder: Path, what: str, load_kwargs: dict) -> nn.Module:
    try:
        if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
            # a component without weights (e.g. frame tokens switched off) is saved as its config alone
            component = component_cls.from_config(component_cls.load_config(folder))
            if component.state_dict():
                raise HarivoLoadError(f"The {what} at {str(folder)!r} has a config.json but no weight file.")
            return component
        return component_cls.from_pretrained(folder, **load_kwargs)
    except HarivoLoadError:
        raise
    except Exception as error:  # diffusers / safetensors raise OSError, ValueError, SafetensorError, ...
        raise describe_load_error(what, folder, error) from error
