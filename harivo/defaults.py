"""The embedded default model: the Shapes-world text-to-image model and the HARIVO adapter trained on it.

Both ship inside the package (`harivo/default_model/`, diffusers layout, safetensors), so `harivo generate`
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


def load_default_pipeline(torch_dtype: torch.dtype = torch.float32):
    """The embedded default `HarivoPipeline` (Shapes world, 64x64, 16 frames)."""
    from .pipelines import HarivoPipeline

    base, adapter = default_model_paths()
    return HarivoPipeline.from_pretrained(base, adapter=adapter, torch_dtype=torch_dtype)


def export_default_model(base_model: str | Path, adapter: str | Path, destination: Path = DEFAULT_MODEL_DIR) -> Path:
    """
    Copy a trained base model and adapter into `destination` (default: the package's embedded model).

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
    for name in ("base", "adapter"):
        shutil.rmtree(destination / name, ignore_errors=True)
        destination.mkdir(parents=True, exist_ok=True)
        (staging / name).rename(destination / name)
    shutil.rmtree(staging, ignore_errors=True)
    return destination
