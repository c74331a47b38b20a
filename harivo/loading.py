"""Loading helpers: weight-format policy (safetensors unless pickle is opted into) and readable load errors."""

import functools
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

from .errors import HarivoLoadError, MissingVariantError

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)


@functools.cache
def dtype_argument_name() -> str:
    """`from_pretrained`'s name for the dtype in this diffusers version: `dtype` where diffusers renamed `torch_dtype`
    (and warns on the old name), else `torch_dtype`. Asked on first use, so that importing this module stays light."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def dtype_argument(kwargs: dict) -> dict:
    """Move a `torch_dtype=` / `dtype=` of `kwargs` to the name this diffusers version reads (in place)."""
    dtype = kwargs.pop("torch_dtype", None)
    dtype = kwargs.pop("dtype", None) if dtype is None else dtype
    if dtype is not None:
        kwargs[dtype_argument_name()] = dtype
    return kwargs


def component_dtype(dtype: Any, name: str) -> Any:
    """The dtype for component `name` of a `torch_dtype` argument: the dtype itself, or from a per-component dict
    (`{"adapter": torch.float16, "default": torch.float32}`) the component's entry, else `"default"`'s, else
    float32, as diffusers reads it."""
    if not isinstance(dtype, dict):
        return dtype
    import torch

    return dtype.get(name, dtype.get("default", torch.float32))


def pickle_files(path: str | os.PathLike) -> list[Path]:
    """The pickle weight files under `path` that loading would read (those without a `.safetensors` twin)."""
    path = Path(path)
    if path.is_file():
        return [path] if path.suffix in PICKLE_SUFFIXES else []
    found = []
    for folder, _, files in os.walk(path):
        names = set(files)
        for name in files:
            stem, suffix = os.path.splitext(name)
            if suffix in PICKLE_SUFFIXES and stem + ".safetensors" not in names:
                found.append(Path(folder) / name)
    return sorted(found)


def check_weight_format(path: str | os.PathLike, allow_pickle: bool = False) -> None:
    """
    Refuse pickle weights unless `allow_pickle` is set: unpickling a checkpoint can run arbitrary code.

    Args:
        path (`str` or `os.PathLike`): A weight file, or a folder searched recursively.
        allow_pickle (`bool`, defaults to `False`): Accept `.bin` / `.ckpt` / `.pt` / `.pth` files.

    Raises:
        `HarivoLoadError`: `path` holds pickle weights and `allow_pickle` is `False`.
    """
    found = pickle_files(path)
    if allow_pickle:
        for file in found:
            warnings.warn(
                f"Loading pickle weights {file} (allow_pickle): torch reads only tensors from it, but convert it to"
                " .safetensors if you keep it.",
                stacklevel=3,
            )
        return
    if found:
        raise HarivoLoadError(
            f"{found[0]} is a pickle weight file without a .safetensors twin; loading pickle weights can run"
            " arbitrary code. Convert it to .safetensors, or, if you trust its source, pass `allow_pickle=True`"
            " (CLI: --allow-pickle)."
        )


def looks_like_local_path(text: str) -> bool:
    """Whether `text` names a local path rather than a Hugging Face Hub id (`org/name` or `name`)."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep + os.sep in text


def resolve_model_path(name_or_path: str | os.PathLike, what: str, **download_kwargs: Any) -> Path:
    """
    Return a local folder for a local path or a Hugging Face Hub repository id.

    Args:
        name_or_path (`str` or `os.PathLike`): A local folder or file, or a hub id such as `"org/model"`.
        what (`str`): What is being loaded, for the error message (e.g. `"base model"`).
        download_kwargs: Passed to `huggingface_hub.snapshot_download` (e.g. `revision`, `cache_dir`, `token`).

    Raises:
        `HarivoLoadError`: The path does not exist and the hub id could not be downloaded.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = str(name_or_path)
    if looks_like_local_path(text):
        raise HarivoLoadError(f"The {what} path {text!r} does not exist.")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, **download_kwargs))
    except Exception as error:  # huggingface_hub raises many types: offline, 404, auth, ...
        raise HarivoLoadError(
            f"Could not find the {what} {text!r}: it is not a local path, and downloading it from the Hugging Face "
            f"Hub failed ({type(error).__name__}: {error}). Pass the path of a local folder instead."
        ) from error


def describe_load_error(what: str, path: str | os.PathLike, error: BaseException) -> HarivoLoadError:
    """Wrap an exception raised while loading weights into a `HarivoLoadError` that names the folder."""
    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    if any(isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e) for e in chain):
        return HarivoLoadError(
            f"Refused to load the {what} from {str(path)!r}: a pickle weight file in it holds objects other than"
            " tensors (loading them would run code). Use safetensors weights from a source you trust."
        )
    message = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
    if isinstance(error, ValueError) and "variant" in message:
        return MissingVariantError(f"Could not load the {what} from {str(path)!r}: {message}.")
    if Path(path).is_file():
        return HarivoLoadError(
            f"Could not load the {what} from {str(path)!r}: {message}. Check that the file is complete (not"
            " truncated or corrupt)."
        )
    return HarivoLoadError(
        f"Could not load the {what} from {str(path)!r}: {message}. Check that the folder is complete (config.json "
        "and weights) and that its weight files are not truncated or corrupt."
    )
