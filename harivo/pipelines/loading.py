"""Loading a HARIVO pipeline: a base model from a diffusers folder, a hub id or one single-file checkpoint, with its
adapter, and LoRAs on top (`HarivoLoadingMixin`, diffusers' loaders under HARIVO's checks)."""

import contextvars
import inspect
import json
import os
from pathlib import Path
from typing import Any, Self

from diffusers import UNet2DConditionModel
from huggingface_hub import snapshot_download
from safetensors import SafetensorError

from ..errors import HarivoLoadError, IncompatibleAdapterError, IncompatibleControlNetError
from ..loading import (
    PICKLE_SUFFIXES,
    WEIGHT_SUFFIXES,
    check_weight_format,
    component_dtype,
    describe_load_error,
    dtype_argument,
    dtype_argument_name,
    resolve_model_path,
)
from ..models.adapter import HarivoAdapter

_ADAPTER_GIVEN = contextvars.ContextVar("harivo_adapter_given", default=False)


def has_component(folder: Path, name: str) -> bool:
    """Whether the diffusers folder `folder` lists the component `name` in its `model_index.json`."""
    index = folder / "model_index.json"
    if not index.is_file():
        return False
    try:
        return name in json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def norm_groups(base: Path) -> int | None:
    """The norm groups of a local base model's U-Net (`None` where it is not a readable local folder)."""
    try:
        return json.loads((base / "unet" / "config.json").read_text()).get("norm_num_groups")
    except (OSError, ValueError, AttributeError):
        return None


class HarivoLoadingMixin:
    """`from_pretrained`, `from_single_file` and `load_lora_weights` of the HARIVO pipelines: diffusers' loaders, with
    the adapter loaded beside the base model, pickle files refused unless allowed, and one-line errors."""

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        adapter: HarivoAdapter | str | os.PathLike | None = None,
        *,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> Self:
        r"""
        Load a base model (diffusers folder or hub id) and a HARIVO adapter.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): Base text-to-image model (SD-1.5 architecture):
                a local diffusers folder or a hub id; or a saved `HarivoPipeline` folder.
            adapter ([`HarivoAdapter`], `str` or `os.PathLike`, *optional*): The adapter or its folder / hub id.
                Required unless the folder is a saved `HarivoPipeline`.
            allow_pickle (`bool`, defaults to `False`): Accept pickle weight files (they can run code when loaded).
            kwargs: Passed to `DiffusionPipeline.from_pretrained` (`torch_dtype` or `dtype`, `variant`, `scheduler`,
                `revision`, ...).
        """
        if "controlnet" in kwargs and "controlnet" not in inspect.signature(cls.__init__).parameters:
            raise ValueError(
                f"{cls.__name__} takes no ControlNet: load `HarivoControlNetPipeline.from_pretrained(base_model,"
                " adapter=..., controlnet=...)` instead."
            )
        local = Path(pretrained_model_name_or_path).expanduser()
        if local.exists():
            check_weight_format(local, allow_pickle)
            if adapter is None and not has_component(local, "adapter"):
                raise ValueError(
                    f"{str(local)!r} holds no HARIVO adapter: pass `adapter=` (a HARIVO adapter folder, hub id or "
                    "`HarivoAdapter`)."
                )
            if adapter is None:  # a saved HarivoPipeline: its adapter is loaded here, like one passed in
                adapter = local / "adapter"
        dtype_argument(kwargs)
        if isinstance(adapter, str | os.PathLike):
            adapter = HarivoAdapter.from_pretrained(
                adapter,
                allow_pickle=allow_pickle,
                torch_dtype=component_dtype(kwargs.get(dtype_argument_name()), "adapter"),
                variant=kwargs.get("variant"),
                motion_norm_num_groups=norm_groups(local),  # a motion-module file's, as its base U-Net's
            )
        if adapter is not None:
            kwargs["adapter"] = adapter
        kwargs.setdefault("use_safetensors", True if not allow_pickle else None)
        token = _ADAPTER_GIVEN.set(adapter is not None)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (HarivoLoadError, IncompatibleAdapterError, IncompatibleControlNetError):
            raise
        except (OSError, ValueError, SafetensorError) as error:
            raise describe_load_error("base model", pretrained_model_name_or_path, error) from error
        finally:
            _ADAPTER_GIVEN.reset(token)

    @classmethod
    def from_single_file(
        cls,
        pretrained_model_link_or_path: str | os.PathLike,
        adapter: HarivoAdapter | str | os.PathLike | None = None,
        *,
        config: str | os.PathLike | None = None,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> Self:
        r"""
        Load a base model from one original-layout checkpoint file (A1111 / CompVis `.safetensors`, the format most
        community and DreamBooth models ship in) and a HARIVO adapter, as diffusers' `FromSingleFileMixin` does.

        Args:
            pretrained_model_link_or_path (`str` or `os.PathLike`): The checkpoint: a local file or a hub file URL.
            adapter ([`HarivoAdapter`], `str` or `os.PathLike`): The adapter or its folder / hub id.
            config (`str` or `os.PathLike`, *optional*): A diffusers folder (or hub id) of the same architecture whose
                component configs, tokenizer and scheduler are used. Default: diffusers' inference from the
                checkpoint (Stable Diffusion 1.5's configs from the hub or its cache); offline, give a local folder.
            allow_pickle (`bool`, defaults to `False`): Accept a pickle `.ckpt` (loaded with `weights_only`).
            kwargs: Passed to diffusers' `from_single_file` (`torch_dtype`, `scheduler=`, `vae=`, ...).
        """
        from diffusers.loaders.single_file_utils import fetch_diffusers_config, load_single_file_checkpoint

        from .. import single_file

        path = Path(pretrained_model_link_or_path).expanduser()
        is_url = str(pretrained_model_link_or_path).startswith(("https://", "http://"))
        if path.is_dir():
            raise ValueError(f"{str(path)!r} is a folder: load diffusers folders with `from_pretrained`.")
        if not is_url and not path.is_file():
            raise HarivoLoadError(f"The single-file checkpoint {str(path)!r} does not exist.")
        if path.suffix not in WEIGHT_SUFFIXES:
            raise HarivoLoadError(f"{path.name} is not a weight file (.safetensors, or .ckpt with allow_pickle).")
        if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise HarivoLoadError(
                f"{path.name} is a pickle checkpoint; loading pickle files can run arbitrary code. Use its"
                " .safetensors version, or, if you trust its source, pass `allow_pickle=True` (CLI: --allow-pickle)."
            )
        try:
            checkpoint = (
                single_file.checkpoint_shapes(path)  # names and shapes only: nothing is read twice
                if path.suffix == ".safetensors" and path.is_file()
                else load_single_file_checkpoint(str(pretrained_model_link_or_path))
            )
        except Exception as error:  # safetensors / the hub / torch raise many types
            raise describe_load_error("single-file checkpoint", pretrained_model_link_or_path, error) from error
        single_file.check_architecture(checkpoint, path)
        if config is None:
            repo = fetch_diffusers_config(checkpoint)["pretrained_model_name_or_path"]
            try:  # the configs, tokenizer and scheduler only, as diffusers fetches them
                config = snapshot_download(repo, allow_patterns=["*.json", "*.txt"])
            except Exception as error:
                raise HarivoLoadError(
                    f"Could not fetch the configs of {repo} for {path.name} ({type(error).__name__}); offline, pass"
                    " `config=` a local diffusers folder of the same architecture (CLI: --base-config)."
                ) from error
        config = resolve_model_path(config, "single-file config", allow_patterns=["*.json", "*.txt"])
        unet_class = (
            UNet2DConditionModel.load_config(config / "unet").get("_class_name")
            if (config / "unet").is_dir()
            else None
        )
        if unet_class != "UNet2DConditionModel":
            raise ValueError(
                f"`config` {str(config)!r} is not a text-to-image model folder (its unet is {unet_class}): give the"
                " diffusers folder of a Stable Diffusion 1.x-class model of the checkpoint's architecture."
            )
        passed = {name for name in ("unet", "vae", "text_encoder") if kwargs.get(name) is not None}
        single_file.check_complete(checkpoint, path, config, skip=passed)
        if adapter is None:
            raise ValueError(
                f"{path.name} holds no HARIVO adapter: pass `adapter=` (a HARIVO adapter folder, hub id or"
                " `HarivoAdapter`)."
            )
        dtype_argument(kwargs)
        if isinstance(adapter, str | os.PathLike):
            adapter = HarivoAdapter.from_pretrained(
                adapter,
                allow_pickle=allow_pickle,
                torch_dtype=component_dtype(kwargs.get(dtype_argument_name()), "adapter"),
            )
        kwargs.setdefault("local_files_only", True)  # `config` is local by now
        try:
            return super().from_single_file(
                str(pretrained_model_link_or_path), config=str(config), adapter=adapter, **kwargs
            )
        except (HarivoLoadError, IncompatibleAdapterError, IncompatibleControlNetError):
            raise
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
            raise describe_load_error("single-file checkpoint", pretrained_model_link_or_path, error) from error

    @classmethod
    def load_config(cls, *args: Any, **kwargs: Any):
        """diffusers' `load_config`; while `from_pretrained` passes the adapter in, the folder's own `adapter` entry is
        left out, so diffusers neither loads it again nor looks into its sub-folders for variant files (it expects
        files only there)."""
        config = super().load_config(*args, **kwargs)
        if _ADAPTER_GIVEN.get():
            (config[0] if isinstance(config, tuple) else config).pop("adapter", None)
        return config

    def load_lora_weights(
        self, pretrained_model_name_or_path_or_dict, adapter_name: str | None = None, *, allow_pickle: bool = False,
        **kwargs,
    ):  # fmt: skip
        """
        diffusers' `load_lora_weights`: an image LoRA (U-Net and text encoder), a motion LoRA (the temporal layers)
        or both, in diffusers' format, the kohya / A1111 community format (converted by diffusers) or, for motion
        LoRAs, AnimateDiff's original layout (`v2_lora_ZoomIn.ckpt`; a pickle file only with `allow_pickle=True`).
        Several load side by side under their `adapter_name`s; `pipe.set_adapters(names, adapter_weights=...)` mixes
        them (a weight of 0 gives exactly the output without that LoRA), `pipe.fuse_lora()` / `unfuse_lora()` bake
        them in.

        Raises:
            `ValueError`: The LoRA was made for a base model of another architecture (one line, naming a layer);
                nothing of it stays loaded.
        """
        from ..models.motion_checkpoint import read_motion_lora

        if isinstance(pretrained_model_name_or_path_or_dict, str | os.PathLike):
            original = read_motion_lora(pretrained_model_name_or_path_or_dict, allow_pickle)
            if original is not None:  # renamed for diffusers; the name stays in messages
                return self._load_lora(
                    original, adapter_name, Path(pretrained_model_name_or_path_or_dict).name, kwargs
                )
        return self._load_lora(pretrained_model_name_or_path_or_dict, adapter_name, None, kwargs)

    def _load_lora(self, source, adapter_name: str | None, name: str | None, kwargs: dict) -> None:
        if getattr(self, "unet", None) is not None and getattr(self, "adapter", None) is not None:
            _ = self.video_unet  # the U-Net takes the adapter's temporal layers first: a motion LoRA lands in them
        before = {name for names in self.get_list_adapters().values() for name in names}
        try:
            super().load_lora_weights(source, adapter_name=adapter_name, **kwargs)
        except RuntimeError as error:
            mismatch = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), None)
            if mismatch is None:
                raise
            added = {name for names in self.get_list_adapters().values() for name in names} - before
            if added:
                self.delete_adapters(sorted(added))
            what = name or (Path(source).name if isinstance(source, str | os.PathLike) else "given")
            raise ValueError(
                f"The LoRA {what} was made for a base model of another architecture ({mismatch.rstrip('.')}): use a"
                " LoRA trained on this base model."
            ) from error
