"""The training stages: the Shapes world's autoencoder and text-to-image model, HARIVO itself, ControlNets,
DreamBooth, few-step distillation and motion LoRAs, one module each.

A stage owns its models and its loss; the `Trainer` owns the loop. Each stage trains only its own parameters:
the HARIVO stage trains the adapter and never writes the frozen base model into a checkpoint.
"""

import torch
from accelerate import Accelerator

from ..config import TrainConfig
from .base import Stage, resolve_base_model
from .controlnet import ControlNetStage
from .distill import DistillStage
from .dreambooth import DreamBoothStage
from .harivo import HarivoStage
from .motion_lora import MotionLoraStage
from .text_to_image import TextToImageStage
from .vae import VAEStage

__all__ = [
    "ControlNetStage", "DistillStage", "DreamBoothStage", "HarivoStage", "MotionLoraStage", "Stage", "TextToImageStage", "VAEStage", "build_stage",
    "resolve_base_model",
]  # fmt: skip


def build_stage(config: TrainConfig, accelerator: Accelerator, generator: torch.Generator) -> Stage:
    stages = {
        "vae": VAEStage,
        "t2i": TextToImageStage,
        "harivo": HarivoStage,
        "controlnet": ControlNetStage,
        "dreambooth": DreamBoothStage,
        "distill": DistillStage,
        "motion_lora": MotionLoraStage,
    }
    stage_cls = stages[config.stage]
    return stage_cls(config, accelerator, generator)
