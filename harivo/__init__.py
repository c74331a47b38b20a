"""HARIVO: text-to-video generation from a frozen text-to-image model, built on diffusers."""

__version__ = "0.1.0"

from .defaults import load_default_pipeline
from .errors import HarivoLoadError, IncompatibleAdapterError, TrainingDivergedError
from .losses import HarivoLoss, LossWeights
from .models import HarivoAdapter, HarivoUNet
from .pipelines import HarivoPipeline
from .video_io import save_video

__all__ = [
    "HarivoAdapter",
    "HarivoLoadError",
    "HarivoLoss",
    "HarivoPipeline",
    "HarivoUNet",
    "IncompatibleAdapterError",
    "LossWeights",
    "TrainingDivergedError",
    "__version__",
    "load_default_pipeline",
    "save_video",
]
