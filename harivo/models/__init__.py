from .adapter import HarivoAdapter, zero_init_temporal_outputs
from .frame_tokens import FrameTokenGenerator
from .mapping_network import NoiseMappingNetwork
from .motion_conditioning import MotionConditioner
from .motion_path import MotionPathPredictor, estimate_displacements, warped_noise
from .projection_head import HSpaceProjectionHead
from .video_unet import FeatureCapture, HarivoUNet, default_trsa_layers, spatial_self_attention_layers

__all__ = [
    "FeatureCapture",
    "FrameTokenGenerator",
    "HSpaceProjectionHead",
    "HarivoAdapter",
    "HarivoUNet",
    "MotionConditioner",
    "MotionPathPredictor",
    "NoiseMappingNetwork",
    "default_trsa_layers",
    "estimate_displacements",
    "spatial_self_attention_layers",
    "warped_noise",
    "zero_init_temporal_outputs",
]
