"""Training state as safetensors + JSON: nothing in a checkpoint is unpickled, so a checkpoint cannot run code.

A state tree (nested dicts, lists, tuples, numbers, strings, tensors and numpy arrays, e.g. an optimizer's
`state_dict`) is written as `{name}.json` (the structure, tensors replaced by references) and `{name}.safetensors`
(the tensors).
"""

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointFileError, PickledStateError  # noqa: F401 (PickledStateError: re-exported)


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {"__dict__": {key: _encode(item, tensors) for key, item in value.items()}}
        return {"__items__": [[_encode(key, tensors), _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(item, tensors) for item in value]}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"Cannot store a {type(value).__name__} in a training checkpoint.")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__dict__" in value:
        return {key: _decode(item, tensors) for key, item in value["__dict__"].items()}
    if "__items__" in value:
        return {_decode(key, tensors): _decode(item, tensors) for key, item in value["__items__"]}
    if "__tuple__" in value:
        return tuple(_decode(item, tensors) for item in value["__tuple__"])
    raise ValueError(f"unknown entry {sorted(value)}")


def save_tree(tree: Any, folder: str | os.PathLike, name: str) -> None:
    """Write `tree` as `folder/{name}.json` and `folder/{name}.safetensors`."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(tree, tensors)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(structure, allow_nan=True))


def load_tree(folder: str | os.PathLike, name: str) -> Any:
    """
    Read what `save_tree` wrote.

    Raises:
        `CheckpointFileError`: A file is missing, truncated or malformed (the message names it).
    """
    folder = Path(folder)
    tensors_path, structure_path = folder / f"{name}.safetensors", folder / f"{name}.json"
    try:
        tensors = load_file(str(tensors_path))
    except Exception as error:  # safetensors raises its own error types on truncated files
        raise CheckpointFileError(f"{tensors_path}: {_reason(error)}") from error
    try:
        return _decode(json.loads(structure_path.read_text()), tensors)
    except Exception as error:
        raise CheckpointFileError(f"{structure_path}: {_reason(error)}") from error


def rng_states() -> dict:
    """Every global random number generator's state (Python, NumPy, torch CPU and CUDA)."""
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
