"""The embedded default model: the Shapes-world text-to-image model, the HARIVO adapter trained on it and the
Shapes ControlNet.

All three ship inside the package (`harivo/default_model/`, diffusers layout, safetensors), so `harivo generate`
works offline with no argument. `scripts/train_shapes.sh` retrains them from scratch and calls
`export_default_model` to put the result here.
"""

import shutil
from pathlib import Path

import torch

from .errors import HarivoLoadError

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
DEFAULT_PROMPT = "a small red circle moving left on a plain black background"


def default_model_paths() -> tuple[Path, Path]:
    """`(base_model_folder, adapter_folder)` of the embedded default model."""
    base, adapter = DEFAULT_MODEL_DIR / "base", DEFAULT_MODEL_DIR / "adapter"
    for path in (base / "model_index.json", adapter / "harivo_adapter.json"):
        if not path.is_file():
            raise HarivoLoadError(
                f"The embedded default model is missing ({path} does not exist). Reinstall harivo, retrain it with"
                " `bash scripts/train_shapes.sh`, or pass --base-model and --adapter."
            )
    return base, adapter


def default_controlnet_path() -> Path:
    """The embedded Shapes ControlNet (its condition: the object's silhouette, white on black)."""
    path = DEFAULT_MODEL_DIR / "controlnet"
    if not (path / "config.json").is_file():
        raise HarivoLoadError(
            f"The embedded Shapes ControlNet is missing ({path / 'config.json'} does not exist). Reinstall harivo,"
            " retrain it with `bash scripts/train_shapes.sh`, or pass --controlnet."
        )
    return path


def load_default_pipeline(torch_dtype: torch.dtype = torch.float32, controlnet: bool = False):
    """The embedded default `HarivoPipeline` (Shapes world, 64x64, 16 frames); with `controlnet=True` the
    `HarivoControlNetPipeline` with the embedded Shapes ControlNet (silhouette conditions)."""
    from .pipelines import HarivoControlNetPipeline, HarivoPipeline

    base, adapter = default_model_paths()
    if controlnet:
        return HarivoControlNetPipeline.from_pretrained(
            base, adapter=adapter, controlnet=default_controlnet_path(), torch_dtype=torch_dtype
        )
    return HarivoPipeline.from_pretrained(base, adapter=adapter, torch_dtype=torch_dtype)


def export_default_model(
    base_model: str | Path,
    adapter: str | Path,
    destination: Path = DEFAULT_MODEL_DIR,
    controlnet: str | Path | None = None,
    fast: str | Path | None = None,
) -> Path:
    """
    Copy a trained base model and adapter (and a ControlNet, and the adapter's few-step variant: the folder the
    distill stage wrote) into `destination` (default: the package's embedded model).

    The base folder keeps only what `StableDiffusionPipeline.from_pretrained` needs; the model card
    (`destination/README.md`) is left as it is.
    """
    from diffusers import StableDiffusionPipeline

    from .models import HarivoAdapter

    destination = Path(destination)
    staging = destination.with_name(destination.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    pipe = StableDiffusionPipeline.from_pretrained(base_model, safety_checker=None, requires_safety_checker=False)
    pipe.save_pretrained(staging / "base")
    HarivoAdapter.from_pretrained(adapter).save_pretrained(staging / "adapter", include_projection_head=False)
    if fast is not None:
        from .loras import FAST_CONFIG, FAST_FOLDER

        (staging / "adapter" / FAST_FOLDER).mkdir()
        for name in (FAST_CONFIG, "pytorch_lora_weights.safetensors"):
            shutil.copyfile(Path(fast) / name, staging / "adapter" / FAST_FOLDER / name)
    names = ["base", "adapter"]
    if controlnet is not None:
        from diffusers import ControlNetModel

        ControlNetModel.from_pretrained(controlnet).save_pretrained(staging / "controlnet")
        names.append("controlnet")
    for name in names:
        shutil.rmtree(destination / name, ignore_errors=True)
        destination.mkdir(parents=True, exist_ok=True)
        (staging / name).rename(destination / name)
    shutil.rmtree(staging, ignore_errors=True)
    return destination
