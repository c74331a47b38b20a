"""Frame-wise token generator `t_theta` (method.md section 3).

From the pooled prompt embedding and an embedding of the frame position it makes `K` extra tokens per
frame; frame `f` then cross-attends to `[c ; e_f]` through the frozen cross-attention projections.
"""

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class FrameTokenGenerator(ModelMixin, ConfigMixin):
    r"""
    Makes `num_tokens` tokens for every frame from the prompt embedding.

    Args:
        cross_attention_dim (`int`, defaults to 768): Width of the text tokens (`unet.config.cross_attention_dim`).
        num_tokens (`int`, defaults to 4): Tokens per frame, `K`. `0` switches the generator off.
        max_frames (`int`, defaults to 32): Number of learned frame-position embeddings.
        hidden_dim (`int`, *optional*): Width of the hidden layers; defaults to `cross_attention_dim`.
    """

    @register_to_config
    def __init__(
        self,
        cross_attention_dim: int = 768,
        num_tokens: int = 4,
        max_frames: int = 32,
        hidden_dim: int | None = None,
    ):
        super().__init__()
        if num_tokens < 0:
            raise ValueError(f"`num_tokens` must be >= 0 (0 switches frame tokens off), got {num_tokens}.")
        if num_tokens == 0:
            return  # switched off: no weights, forward returns no tokens
        hidden_dim = hidden_dim or cross_attention_dim
        self.prompt_proj = nn.Sequential(nn.LayerNorm(cross_attention_dim), nn.Linear(cross_attention_dim, hidden_dim))
        self.frame_embedding = nn.Embedding(max_frames, hidden_dim)
        self.mlp = nn.Sequential(
            nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, num_tokens * cross_attention_dim),
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Zero the output layer, so the tokens start at zero (zero keys and values through bias-free SD projections)."""
        nn.init.normal_(self.frame_embedding.weight, std=0.02)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @property
    def enabled(self) -> bool:
        return self.config.num_tokens > 0

    def forward(self, encoder_hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """
        Args:
            encoder_hidden_states (`torch.Tensor`): Text tokens `c` of shape `(batch, seq_len, dim)`.
            num_frames (`int`): Number of frames `F`.

        Returns:
            `torch.Tensor`: Tokens of shape `(batch * num_frames, num_tokens, dim)`, frames moved into the batch in
            `(batch, frame)` order, the layout `UNetMotionModel` uses.
        """
        if num_frames > self.config.max_frames:
            raise ValueError(
                f"The frame-token generator supports at most {self.config.max_frames} frames, got {num_frames}."
            )
        batch_size, _, dim = encoder_hidden_states.shape
        num_tokens = self.config.num_tokens
        if num_tokens == 0:
            return encoder_hidden_states.new_zeros(batch_size * num_frames, 0, dim)
        pooled = encoder_hidden_states.mean(dim=1)  # (B, D)
        positions = torch.arange(num_frames, device=encoder_hidden_states.device)
        hidden = self.prompt_proj(pooled)[:, None] + self.frame_embedding(positions)[None]  # (B, F, H)
        tokens = self.mlp(hidden)  # (B, F, K*D)
        return tokens.reshape(batch_size * num_frames, num_tokens, dim)  # frames into batch: (B*F, K, D)
