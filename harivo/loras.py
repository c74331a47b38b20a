"""LoRAs on a HARIVO pipeline from `PATH[:SCALE]` values (`--lora`, the UI, settings files): checked before any model
loads, then loaded side by side and mixed at their scales."""

import math
from pathlib import Path

from .loading import WEIGHT_SUFFIXES, looks_like_local_path

MAX_LORA_SCALE = 10.0  # past it a LoRA only makes noise
FAST_FOLDER = "fast"  # an adapter's few-step variant (a distilled LoRA), `--fast` without a folder
FAST_CONFIG = "harivo_fast.json"  # beside a few-step LoRA: the steps and sampler it was distilled for
MOTION_CONFIG = "harivo_motion.json"  # beside a motion LoRA: the motion path of the clips it learned from


def parse_loras(values: list[str] | None) -> list[tuple[str, float]]:
    """`--lora PATH[:SCALE]` values as `(path, scale)`, checked before any model loads."""
    loras = []
    for value in values or ():
        path, _, tail = value.rpartition(":")
        try:
            scale = float(tail) if path else None
        except ValueError:  # a colon inside the path (e.g. C:\...)
            scale = None
        if scale is None:
            path, scale = value, 1.0
        if not math.isfinite(scale) or abs(scale) > MAX_LORA_SCALE:
            value = value if value.isprintable() else repr(value)
            raise ValueError(
                f"--lora {value}: the scale must be a number from -{MAX_LORA_SCALE:g} to {MAX_LORA_SCALE:g} (usually"
                f" 0 to 1; below 0 inverts the LoRA), e.g. {path}:0.8."
            )
        missing = not path.strip() or not Path(path).expanduser().exists()
        if missing and (looks_like_local_path(path) or Path(path).suffix in WEIGHT_SUFFIXES or not is_hub_id(path)):
            shown = path if path.isprintable() else repr(path)  # a line break in it must not break the message
            raise FileNotFoundError(f"--lora {shown}: no such file or folder (nor a hub id, org/name).")
        loras.append((path, scale))
    return loras


def is_hub_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return "/" in text  # a LoRA on the hub lives in a user's or an organisation's repository


def apply_loras(pipe, loras: list[tuple[str, float]], allow_pickle: bool = False) -> None:
    """Load each LoRA under its own name and mix them at their scales (`set_adapters`); pickle files only with
    `allow_pickle`."""
    if not loras:
        return
    names = [f"lora_{index}" for index in range(len(loras))]
    for name, (path, _) in zip(names, loras):
        try:
            pipe.load_lora_weights(path, adapter_name=name, allow_pickle=allow_pickle)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ValueError(f"--lora {path}: {' '.join(str(error).split())}") from error
    set_lora_scales(pipe, loras)


def set_lora_scales(pipe, loras: list[tuple[str, float]]) -> None:
    """Mix the LoRAs `apply_loras` loaded (the same paths, in order) at these scales, without loading them again."""
    if loras:
        names = [f"lora_{index}" for index in range(len(loras))]
        pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])


def carried_motion_path(values: list[str] | None, num_frames: int):
    """
    The motion path a motion LoRA among `--lora` values carries (`harivo_motion.json` beside its weights, written by
    the motion_lora stage), fitted to `num_frames`: its first frames, or continued at its mean velocity past its end.
    `None` when none carries one; two that do are a one-line `ValueError`.

    Returns:
        `torch.Tensor` or `None`: `(num_frames, 2)` offsets from the first frame in latent pixels.
    """
    import json

    import torch

    carried = []
    for path, _ in parse_loras(values):
        folder = Path(path).expanduser()
        folder = folder if folder.is_dir() else folder.parent
        if (folder / MOTION_CONFIG).is_file():
            try:
                steps = torch.tensor(json.loads((folder / MOTION_CONFIG).read_text(encoding="utf-8"))["motion_path"])
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise ValueError(f"--lora {path}: {MOTION_CONFIG} is not readable ({error}).") from None
            if steps.ndim != 2 or steps.shape[1] != 2 or len(steps) < 2:
                raise ValueError(f"--lora {path}: {MOTION_CONFIG} holds no motion path of (x, y) offsets per frame.")
            carried.append((path, steps.float()))
    if len(carried) > 1:
        raise ValueError(
            f"--lora {carried[0][0]} and {carried[1][0]} both carry a motion path; choose one with --motion DX DY."
        )
    if not carried:
        return None
    steps = carried[0][1]
    if num_frames <= len(steps):
        return steps[:num_frames]
    velocity = (steps[-1] - steps[0]) / (len(steps) - 1)
    more = steps[-1] + torch.arange(1, num_frames - len(steps) + 1)[:, None] * velocity
    return torch.cat([steps, more])
