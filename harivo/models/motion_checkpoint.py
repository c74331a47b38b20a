"""Motion modules from one weight file: AnimateDiff's own checkpoints (`mm_sd_v15_v2.ckpt`, `v3_sd15_mm.ckpt`; their
original key layout) and files in diffusers' `MotionAdapter` layout (AnimateDiff-Lightning's `*_diffusers.safetensors`,
AnimateLCM's motion module), so `--adapter FILE` takes what AnimateDiff users already have; and AnimateDiff's motion
LoRAs in their original layout (`v2_lora_ZoomIn.ckpt`, ...), renamed for diffusers' `load_lora_weights` (`--lora FILE`).

The original layout is renamed with diffusers' own `convert_animatediff_checkpoint_to_diffusers`; the architecture is
read from the weights' shapes (channels per level, motion layers per block, transformer layers, mid block, the
position table's length). What shapes cannot tell, the attention heads and the norm groups, are AnimateDiff's (8, 32)
unless given.
"""

import os
import re
from pathlib import Path

import torch
from diffusers import MotionAdapter
from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

from ..errors import HarivoLoadError
from ..loading import check_weight_format

SAFE_SUFFIXES = (".safetensors",)


def read_weights(path: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file, or (with `allow_pickle`) of a pickle checkpoint, read as weights only."""
    check_weight_format(path, allow_pickle)
    try:
        if path.suffix in SAFE_SUFFIXES:
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise their own types for damaged files
        raise HarivoLoadError(f"{path}: not a readable weight file ({type(error).__name__}).") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HarivoLoadError(f"{path}: holds no plain table of tensors.")
    return state


def motion_adapter_from_file(
    path: str | os.PathLike,
    allow_pickle: bool = False,
    num_attention_heads: int | None = None,
    norm_num_groups: int | None = None,
) -> MotionAdapter:
    """
    A diffusers `MotionAdapter` with the motion modules of one weight file (original AnimateDiff or diffusers layout).

    Raises:
        `HarivoLoadError`: The file is not a motion-module checkpoint (saying what it looks like instead), or its
            weights do not fit the architecture read from them.
    """
    path = Path(path).expanduser()
    state = read_weights(path, allow_pickle)
    if any("lora" in key for key in state):
        raise HarivoLoadError(f"{path.name} is a LoRA, not motion modules: load it with --lora (`load_lora_weights`).")
    if not any(".motion_modules." in key for key in state):
        raise HarivoLoadError(
            f"{path.name} holds no motion modules (no `motion_modules` keys): --adapter takes a HARIVO adapter folder,"
            " a diffusers MotionAdapter folder, or an AnimateDiff motion-module file."
        )
    positions = [value for key, value in state.items() if key.endswith(("pos_encoder.pe", "pos_embed.pe"))]
    if any(".temporal_transformer." in key or ".attention_blocks." in key for key in state):
        state = convert_animatediff_checkpoint_to_diffusers(state)
    config = _config_of(state, positions)
    config["motion_num_attention_heads"] = num_attention_heads or 8
    config["motion_norm_num_groups"] = norm_num_groups or 32
    try:
        adapter = MotionAdapter(**config)
    except ValueError as error:  # e.g. channels the norm groups do not divide
        raise HarivoLoadError(f"{path.name}: {error}") from error
    missing, unexpected = adapter.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith("pos_embed.pe")]  # recomputed, as diffusers does
    if missing or unexpected:
        raise HarivoLoadError(
            f"{path.name}: its weights do not fit the motion modules read from it (missing {missing[:3]}, unexpected"
            f" {unexpected[:3]})."
        )
    return adapter


def _config_of(state: dict[str, torch.Tensor], positions: list[torch.Tensor]) -> dict:
    """`MotionAdapter` arguments read from diffusers-layout weights."""

    def indices(pattern: str) -> list[int]:
        return sorted({int(m.group(1)) for key in state if (m := re.match(pattern, key))})

    levels = indices(r"down_blocks\.(\d+)\.motion_modules\.")
    channels = [state[f"down_blocks.{level}.motion_modules.0.proj_in.weight"].shape[0] for level in levels]
    mid = indices(r"mid_block\.motion_modules\.(\d+)\.")
    return {
        "block_out_channels": tuple(channels),
        "motion_layers_per_block": len(indices(r"down_blocks\.0\.motion_modules\.(\d+)\.")),
        "motion_transformer_layers_per_block": len(
            indices(r"down_blocks\.0\.motion_modules\.0\.transformer_blocks\.(\d+)\.")
        ),
        "use_motion_mid_block": bool(mid),
        "motion_mid_block_layers_per_block": max(len(mid), 1),
        "motion_transformer_layers_per_mid_block": max(
            len(indices(r"mid_block\.motion_modules\.0\.transformer_blocks\.(\d+)\.")), 1
        ),
        "motion_max_seq_length": positions[0].shape[1] if positions else 32,
    }


# An original motion LoRA names each projection's LoRA after diffusers' old attention-processor LoRA:
# `<motion module path>.attention_blocks.0.processor.to_q_lora.down.weight` (down: A, up: B; no alpha, so a scale of 1
# adds `up @ down` to the weight)
ORIGINAL_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.processor\.(?P<projection>to_q|to_k|to_v|to_out)_lora\.(?P<part>down|up)\.weight$"
)


def is_original_motion_lora(keys) -> bool:
    """Whether a file's keys are an AnimateDiff motion LoRA in its original layout."""
    keys = list(keys)
    return bool(keys) and all(".motion_modules." in key and ORIGINAL_LORA_KEY.match(key) for key in keys)


def motion_lora_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original-layout motion LoRA as diffusers' (peft) LoRA state dict of the video U-Net (`unet.` prefix)."""
    converted = {}
    for key, value in state.items():
        match = ORIGINAL_LORA_KEY.match(key)
        if match is None:
            raise HarivoLoadError(f"{key}: not a key of an AnimateDiff motion LoRA.")
        (module,) = convert_animatediff_checkpoint_to_diffusers({match["module"]: None})
        projection = "to_out.0" if match["projection"] == "to_out" else match["projection"]
        part = "lora_A" if match["part"] == "down" else "lora_B"
        converted[f"unet.{module}.{projection}.{part}.weight"] = value
    return converted


def read_motion_lora(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor] | None:
    """The diffusers LoRA state dict of an original-layout motion LoRA file, or `None` where the file is something
    else (a LoRA in diffusers' or kohya's format, which diffusers reads itself). A pickle file needs
    `allow_pickle`."""
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix not in (*SAFE_SUFFIXES, ".ckpt", ".pt", ".pth", ".bin"):
        return None
    if path.suffix in SAFE_SUFFIXES:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                if not is_original_motion_lora(handle.keys()):
                    return None
        except Exception:  # not a safetensors file: diffusers' loader says what it is
            return None
    state = read_weights(path, allow_pickle)
    return motion_lora_to_diffusers(state) if is_original_motion_lora(state) else None
