"""Noise mapping network `m_theta` (method.md section 2).

Maps IID Gaussian noise to a noise whose frames are correlated, before the frozen U-Net sees it:
`eps~ = m(eps) = mix(eps) + Conv3D-stack(eps)`, with the last convolution zero-initialised.

`mix` is a fixed frame-mixing map with one parameter, the correlation `rho` between any two frames [ours]:
`mix(eps) = sqrt(1 - rho) (eps - mean_f eps) + sqrt(1 + (F - 1) rho) mean_f eps`. Every frame of `mix(eps)` is
still exactly `N(0, I)` (what the frozen image model was trained on), and any two frames have correlation `rho`:
`rho = 0` is the identity (the network starts as the identity), `rho = 1` gives every frame the same noise (no
motion can come out of the noise). Independent per-frame noise makes the fine detail of every frame differ (the
background flickers) even when the temporal layers agree on the layout; a shared part removes that at the source.
"""

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class NoiseMappingNetwork(ModelMixin, ConfigMixin):
    r"""
    Residual stack of 3-D convolutions over `(frames, height, width)` applied to video noise.

    Args:
        in_channels (`int`, defaults to 4): Latent channels of the base model (`unet.config.in_channels`).
        hidden_channels (`int`, defaults to 64): Channels of the hidden convolutions.
        num_layers (`int`, defaults to 3): Number of 3-D convolutions (at least 2).
        kernel_size (`int`, defaults to 3): Cubic kernel size, odd so that the shape is kept.
        renormalize (`bool`, defaults to `True`):
            Give each mapped frame the mean and standard deviation of the input frame (over channels, height and
            width), so that the frozen image model always sees the marginal statistics it was trained on while the
            frames become correlated. Exactly the identity at initialisation.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        hidden_channels: int = 64,
        num_layers: int = 3,
        kernel_size: int = 3,
        renormalize: bool = True,
        frame_correlation: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= frame_correlation < 1.0:
            raise ValueError(
                f"`frame_correlation` must be in [0, 1) (1 would freeze every frame), got {frame_correlation}."
            )
        if num_layers < 2:
            raise ValueError(f"`num_layers` must be at least 2, got {num_layers}.")
        if kernel_size % 2 != 1:
            raise ValueError(f"`kernel_size` must be odd to keep the shape, got {kernel_size}.")
        padding = kernel_size // 2
        channels = [in_channels] + [hidden_channels] * (num_layers - 1) + [in_channels]
        layers = []
        for index in range(num_layers):
            layers.append(nn.Conv3d(channels[index], channels[index + 1], kernel_size, padding=padding))
            if index < num_layers - 1:
                layers.append(nn.SiLU())
        self.layers = nn.Sequential(*layers)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Zero the last convolution: the residual branch starts at zero, the network at the identity."""
        last = self.layers[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    @property
    def is_identity(self) -> bool:
        """Whether the network maps noise to itself (no frame mixing, residual branch at zero)."""
        last = self.layers[-1]
        return self.config.frame_correlation == 0 and not (last.weight.any() or last.bias.any())

    def mix_frames(self, noise: torch.Tensor) -> torch.Tensor:
        """The fixed frame-mixing part: unit-variance frames with pairwise correlation `frame_correlation`."""
        rho = self.config.frame_correlation
        if rho == 0:
            return noise
        num_frames = noise.shape[2]
        mean = noise.mean(dim=2, keepdim=True)  # (B, C, 1, h, w), variance 1/F per element
        return (1 - rho) ** 0.5 * (noise - mean) + (1 + (num_frames - 1) * rho) ** 0.5 * mean

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """
        Args:
            noise (`torch.Tensor`): IID Gaussian noise of shape `(batch, channels, frames, height, width)`.

        Returns:
            `torch.Tensor`: The mapped noise, same shape and dtype.
        """
        if noise.ndim != 5 or noise.shape[1] != self.config.in_channels:
            raise ValueError(
                f"NoiseMappingNetwork expects noise of shape (batch, {self.config.in_channels}, frames, height, width),"
                f" got {tuple(noise.shape)}."
            )
        weight_dtype = self.layers[0].weight.dtype
        mapped = self.mix_frames(noise) + self.layers(noise.to(weight_dtype)).to(noise.dtype)  # (B, C, F, h, w)
        if not self.config.renormalize:
            return mapped
        # statistics per (batch, frame), over channels, height and width; in float32 for fp16 safety
        dims = (1, 3, 4)
        source, mapped32 = self.mix_frames(noise).float(), mapped.float()
        standardized = (mapped32 - mapped32.mean(dims, keepdim=True)) / (mapped32.std(dims, keepdim=True) + 1e-6)
        restored = standardized * (source.std(dims, keepdim=True) + 1e-6) + source.mean(dims, keepdim=True)
        return restored.to(noise.dtype)
