"""HARIVO: text-to-video generation from a frozen text-to-image model, built on diffusers.

The public names are imported on first use, so that `harivo` (and its command line) starts without importing
diffusers until it needs it.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .errors import HarivoLoadError, IncompatibleAdapterError, SamplingDivergedError, TrainingDivergedError

__version__ = "0.1.0"

_LAZY = {
    "load_default_pipeline": ".defaults",
    "HarivoLoss": ".losses",
    "LossWeights": ".losses",
    "HarivoAdapter": ".models",
    "HarivoUNet": ".models",
    "HarivoControlNetPipeline": ".pipelines",
    "HarivoImageToVideoPipeline": ".pipelines",
    "HarivoPipeline": ".pipelines",
    "HarivoVideoToVideoPipeline": ".pipelines",
    "save_video": ".video_io",
}

if TYPE_CHECKING:
    from .defaults import load_default_pipeline
    from .losses import HarivoLoss, LossWeights
    from .models import HarivoAdapter, HarivoUNet
    from .pipelines import (
        HarivoControlNetPipeline,
        HarivoImageToVideoPipeline,
        HarivoPipeline,
        HarivoVideoToVideoPipeline,
    )
    from .video_io import save_video


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harivo' has no attribute {name!r}")


__all__ = [
    "HarivoAdapter",
    "HarivoControlNetPipeline",
    "HarivoImageToVideoPipeline",
    "HarivoLoadError",
    "HarivoLoss",
    "HarivoPipeline",
    "HarivoUNet",
    "HarivoVideoToVideoPipeline",
    "IncompatibleAdapterError",
    "LossWeights",
    "SamplingDivergedError",
    "TrainingDivergedError",
    "__version__",
    "load_default_pipeline",
    "save_video",
]
