"""Projection head `g_theta` on the U-Net bottleneck (h-space), used only by `L_dc` during training."""

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class HSpaceProjectionHead(ModelMixin, ConfigMixin):
    r"""
    Spatially mean-pools the mid-block output and projects it onto the unit sphere with a 2-layer MLP.

    Args:
        in_channels (`int`, defaults to 1280): Channels of the mid-block output (`unet.config.block_out_channels[-1]`).
        hidden_dim (`int`, defaults to 512): Width of the hidden layer.
        out_dim (`int`, defaults to 128): Dimension of the projected embedding.
    """

    @register_to_config
    def __init__(self, in_channels: int = 1280, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, h_space: torch.Tensor) -> torch.Tensor:
        """
        Args:
            h_space (`torch.Tensor`): Mid-block output of shape `(N, channels, height, width)`.

        Returns:
            `torch.Tensor`: Unit-norm embeddings of shape `(N, out_dim)`, in float32.
        """
        pooled = h_space.mean(dim=(2, 3)).to(self.mlp[0].weight.dtype)  # (N, C)
        return F.normalize(self.mlp(pooled).float(), dim=-1)
