from .config import TrainConfig, load_config
from .trainer import Trainer, TrainingDivergedError, find_checkpoints

__all__ = ["TrainConfig", "Trainer", "TrainingDivergedError", "find_checkpoints", "load_config"]
