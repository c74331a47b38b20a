"""Single-file checkpoints: the original Stable Diffusion 1.x key layout that community models ship in.

Reading goes through diffusers (`FromSingleFileMixin`, whose converters map the original keys to diffusers');
this module adds what diffusers leaves out: the other direction (`original_layout_state_dict` /
`save_single_file`, so a model made here, e.g. by `harivo dreambooth`, opens in A1111, ComfyUI or diffusers'
own `from_single_file`), and the checks that turn a checkpoint of another architecture or a truncated file into
a one-line error before diffusers reads it.
"""

import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import HarivoLoadError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
# The original ResBlock's names of diffusers' `ResnetBlock2D` parts (U-Net; the autoencoder keeps diffusers' own
# names except the shortcut).
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# What each architecture family is called in errors (diffusers' `infer_diffusers_model_type` names).
_FAMILIES = {
    "v2": "Stable Diffusion 2",
    "inpainting_v2": "Stable Diffusion 2 inpainting",
    "inpainting": "Stable Diffusion 1.x inpainting (9 input channels)",
    "xl_base": "SDXL",
    "xl_refiner": "SDXL refiner",
    "xl_inpaint": "SDXL inpainting",
    "playground-v2-5": "Playground v2.5 (SDXL)",
}


def _unet_key(key: str, config) -> str:
    """The original layout's name of a diffusers `UNet2DConditionModel` weight."""
    per_level = config.layers_per_block + 1  # the original counts a level's down-sampler as one more input block
    for diffusers_name, original in _UNET_FIXED.items():
        if key.startswith(diffusers_name + "."):
            return original + key[len(diffusers_name) :]
    if match := re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)", key):
        kind, level, part, index, rest = match.groups()
        level, index = int(level), int(index)
        if kind == "down":
            block = f"input_blocks.{1 + level * per_level + (config.layers_per_block if part == 'downsamplers' else index)}"
        else:
            block = f"output_blocks.{level * per_level + (config.layers_per_block if part == 'upsamplers' else index)}"
        if part == "resnets":
            return f"{block}.0.{_resnet_rest(rest)}"
        if part == "attentions":
            return f"{block}.1.{rest}"
        if part == "downsamplers":  # `conv.weight` -> `op.weight`
            return f"{block}.0.op.{rest.removeprefix('conv.')}"
        has_attention = "CrossAttn" in config.up_block_types[level]
        return f"{block}.{2 if has_attention else 1}.{rest}"
    if match := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
        part, index, rest = match.groups()
        if part == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * int(index)}.{_resnet_rest(rest)}"
    raise ValueError(f"No original-layout name for the U-Net weight {key!r} (not a Stable Diffusion 1.x U-Net?).")


def _resnet_rest(rest: str) -> str:
    name, _, tail = rest.rpartition(".")
    return f"{_UNET_RESNET.get(name, name)}.{tail}"


def _vae_key(key: str, config) -> str:
    """The original layout's name of a diffusers `AutoencoderKL` weight."""
    levels = len(config.up_block_types)
    key = key.replace("conv_norm_out", "norm_out")
    if match := re.match(
        r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", key
    ):
        side, kind, level, part, index, rest = match.groups()
        level = int(level) if kind == "down" else levels - 1 - int(level)  # the original counts up blocks upwards
        if part == "resnets":
            return f"{side}.{kind}.{level}.block.{index}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        return f"{side}.{kind}.{level}.{'downsample' if kind == 'down' else 'upsample'}.{rest}"
    if match := re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
        side, part, index, rest = match.groups()
        if part == "resnets":
            return f"{side}.mid.block_{int(index) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        name, _, tail = rest.rpartition(".")
        return f"{side}.mid.attn_1.{_VAE_ATTENTION[name]}.{tail}"
    return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv


def original_layout_state_dict(unet=None, vae=None, text_encoder=None) -> dict[str, torch.Tensor]:
    """
    The weights of a Stable Diffusion 1.x-class model in the original (CompVis / A1111) single-file layout.

    Args:
        unet ([`~diffusers.UNet2DConditionModel`], *optional*): The denoiser (`model.diffusion_model.*`).
        vae ([`~diffusers.AutoencoderKL`], *optional*): The autoencoder (`first_stage_model.*`; its attention as
            1x1 convolutions, as the original has them).
        text_encoder ([`~transformers.CLIPTextModel`], *optional*): The text encoder (`cond_stage_model.transformer.*`).

    Returns:
        `dict[str, torch.Tensor]`: contiguous CPU tensors, ready for `safetensors.torch.save_file`.
    """
    state = _original_layout(unet, vae, text_encoder)
    return {key: value.detach().cpu().contiguous() for key, value in state.items()}


def _original_layout(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    state = {}
    if unet is not None:
        unet = getattr(unet, "_orig_mod", unet)
        state.update({UNET_PREFIX + _unet_key(k, unet.config): v for k, v in unet.state_dict().items()})
    if vae is not None:
        for key, value in vae.state_dict().items():
            name = _vae_key(key, vae.config)
            if ".attn_1." in name and value.ndim == 2:  # linear in diffusers, 1x1 convolution in the original
                value = value[:, :, None, None]
            state[VAE_PREFIX + name] = value
    if text_encoder is not None:
        for key, value in text_encoder.state_dict().items():  # transformers 5 names them without `text_model.`
            state[f"{TEXT_ENCODER_PREFIX}text_model.{key.removeprefix('text_model.')}"] = value
    return state


def save_single_file(pipe, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """
    Save a text-to-image pipeline's model (U-Net, VAE, text encoder) as one original-layout `.safetensors` file.

    Args:
        pipe: A diffusers pipeline with `unet` (a `UNet2DConditionModel`), `vae` and `text_encoder`, e.g. the
            `StableDiffusionPipeline` that `harivo dreambooth` writes.
        path (`str` or `os.PathLike`): The file to write (`.safetensors`).
        dtype (`torch.dtype`, *optional*): Cast floating-point weights (e.g. `torch.float16` halves the file).
    """
    from diffusers import UNet2DConditionModel

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Save single files as .safetensors (got {path.name!r}): pickle files can run code.")
    if not isinstance(getattr(pipe.unet, "_orig_mod", pipe.unet), UNet2DConditionModel):
        raise ValueError(
            f"The pipeline's U-Net is a {type(pipe.unet).__name__}: save the text-to-image model (a pipeline whose"
            " `unet` is a UNet2DConditionModel, e.g. the base model folder loaded with StableDiffusionPipeline)."
        )
    state = original_layout_state_dict(pipe.unet, pipe.vae, pipe.text_encoder)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path, metadata={"format": "pt", "written_by": "harivo"})
    return path


def checkpoint_shapes(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """`{key: empty meta tensor of its shape}` of a `.safetensors` file, read without loading a weight."""
    with safe_open(str(path), framework="pt") as file:
        return {key: torch.empty(file.get_slice(key).get_shape(), device="meta") for key in file.keys()}  # noqa: SIM118


def check_architecture(checkpoint: dict, path: str | os.PathLike) -> None:
    """
    Refuse a single file that is not a Stable Diffusion 1.x-class text-to-image model.

    Raises:
        `HarivoLoadError`: It is SD 2, SDXL, an inpainting model, or no full image model at all (the message names it).
    """
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    name = Path(path).name
    if not any(key.startswith(UNET_PREFIX) for key in checkpoint):
        raise HarivoLoadError(
            f"{name} holds no U-Net in the original layout (no {UNET_PREFIX}* weights): it is not a full Stable"
            " Diffusion 1.x checkpoint (a LoRA? load it with --lora / `pipe.load_lora_weights`; a diffusers folder?"
            " use from_pretrained)."
        )
    family = _FAMILIES.get(model_type := infer_diffusers_model_type(checkpoint))
    if family is None and model_type != "v1":
        family = f"a {model_type!r} model"
    if family is not None:
        raise HarivoLoadError(
            f"{name} is a {family} checkpoint; HARIVO adapters here are trained on Stable Diffusion 1.x-class"
            " text-to-image models: use an SD 1.x checkpoint (or train an adapter on this base)."
        )


def check_complete(checkpoint: dict, path: str | os.PathLike, config: str | os.PathLike, skip=()) -> None:
    """
    Refuse a single file that lacks weights the model of `config` (a local diffusers folder) has.

    Args:
        skip: Components not read from the file (`unet`, `vae`, `text_encoder`), e.g. passed in as objects.

    Raises:
        `HarivoLoadError`: Weights are missing (the message counts them and names the first).
    """
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config = Path(config)
    models = {}
    with init_empty_weights():
        if "unet" not in skip:
            models["unet"] = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
        if "vae" not in skip:
            models["vae"] = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
        if "text_encoder" not in skip:
            models["text_encoder"] = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    expected = _original_layout(models.get("unet"), models.get("vae"), models.get("text_encoder"))
    missing = [key for key in expected if key not in checkpoint]
    if missing:
        parts = sorted({key.split(".")[0] for key in missing})
        raise HarivoLoadError(
            f"{Path(path).name} lacks {len(missing)} of the {len(expected)} weights of the model configured in"
            f" {str(config)!r} (first: {missing[0]}; in {', '.join(parts)}): the file is truncated, of another"
            " configuration, or holds only part of a model (pass the other parts as objects, e.g. `vae=`)."
        )
    for key, value in expected.items():
        if tuple(checkpoint[key].shape) != tuple(value.shape):
            raise HarivoLoadError(
                f"{Path(path).name} does not fit the model configured in {str(config)!r}: {key} has shape"
                f" {tuple(checkpoint[key].shape)}, the config needs {tuple(value.shape)}. Pass the config folder of"
                " this checkpoint's architecture (`config=`, CLI --base-config)."
            )
