from .adapter import HarivoAdapter, zero_init_temporal_outputs
from .frame_tokens import FrameTokenGenerator
from .mapping_network import NoiseMappingNetwork
from .motion_conditioning import MotionConditioner
from .projection_head import HSpaceProjectionHead
from .video_unet import FeatureCapture, HarivoUNet, default_trsa_layers, spatial_self_attention_layers

__all__ = [
    "FeatureCapture",
    "FrameTokenGenerator",
    "HSpaceProjectionHead",
    "HarivoAdapter",
    "HarivoUNet",
    "MotionConditioner",
    "NoiseMappingNetwork",
    "default_trsa_layers",
    "spatial_self_attention_layers",
    "zero_init_temporal_outputs",
]
