"""Helpers shared by the tests."""

import torch

from harivo.models import HarivoAdapter

NUM_FRAMES = 4


def randomize_temporal_layers(adapter: HarivoAdapter, seed: int = 1, std: float = 0.1) -> HarivoAdapter:
    """Give the zero-initialised temporal output projections (and frame tokens) non-zero weights, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "proj_out" in name or "frame_token_generator.mlp" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return adapter


def frame_by_frame(unet, sample: torch.Tensor, timestep, text: torch.Tensor) -> torch.Tensor:
    """The T2I U-Net applied to each frame: (B, C, F, h, w) in, (B, C, F, h, w) out."""
    batch, channels, frames, height, width = sample.shape
    images = sample.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)  # frames into batch
    context = text.repeat_interleave(frames, dim=0)
    out = unet(images, timestep, encoder_hidden_states=context).sample
    return out.reshape(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)
