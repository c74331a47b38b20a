"""Text-conditioned temporal layers [ours] (docs/method.md, row "Motion conditioner").

AnimateDiff's temporal layers attend only across frames: they never see the prompt, so "moving left" and "moving
right" reach them only through whatever the frozen spatial layers leave of those words in the features. A frozen
image model has no reason to keep them (a still image does not depend on its motion phrase), and in the Shapes
world it does not: the prompted direction was not learned (README, comparison table).

`MotionConditioner` reads the prompt once per video and adds a per-frame vector to the input of every temporal
attention (right after its input projection, where AnimateDiff adds its frame-position encoding):
`x[b, f] += W_l(mlp(pool(c_b) + p_f))`. The pooling is attention with a learned query over the text tokens, so it
can pick out the motion words, or (`pooling="last_token"`) the last text token, which a causal text encoder such as
CLIP computes from the whole prompt (with Stable Diffusion's padding, an end-of-text token). `W_l` starts at zero: a fresh conditioner changes nothing. The temporal layers stay a
plain diffusers `MotionAdapter` (still loadable by AnimateDiff); the conditioner is a separate part of the adapter.
"""

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

POOLINGS = ("attention", "last_token")


def attention_pool(
    tokens: torch.Tensor, query: torch.Tensor, to_k: nn.Module, to_v: nn.Module, num_heads: int
) -> torch.Tensor:
    """Multi-head attention of one learned `query` `(H,)` over `tokens` `(B, L, D)`: `(B, H)`. A zero query is the
    mean over tokens."""
    batch_size, length, _ = tokens.shape
    key = to_k(tokens).view(batch_size, length, num_heads, -1).transpose(1, 2)  # (B, heads, L, d)
    value = to_v(tokens).view(batch_size, length, num_heads, -1).transpose(1, 2)
    query = query.view(1, num_heads, 1, -1).expand(batch_size, -1, -1, -1).to(key.dtype)  # (B, heads, 1, d)
    pooled = F.scaled_dot_product_attention(query, key, value)  # (B, heads, 1, d)
    return pooled.reshape(batch_size, -1)


class MotionConditioner(ModelMixin, ConfigMixin):
    r"""
    Per-frame prompt vectors for each temporal layer.

    Args:
        cross_attention_dim (`int`, defaults to 768): Width of the text tokens.
        layer_channels (`tuple[int, ...]`): Width of each temporal layer's attention input, in the order
            `temporal_transformers(motion_adapter)` lists them.
        hidden_dim (`int`, defaults to 128): Width of the pooled prompt and of the hidden layer.
        num_heads (`int`, defaults to 4): Heads of the attention pooling over text tokens.
        max_frames (`int`, defaults to 32): Number of learned frame-position embeddings.
        pooling (`str`, defaults to `"attention"`): How the prompt's tokens become one vector: `"attention"`
            (learned query over all tokens) or `"last_token"` (the last token, a causal encoder's summary).
    """

    @register_to_config
    def __init__(
        self,
        cross_attention_dim: int = 768,
        layer_channels: tuple[int, ...] = (),
        hidden_dim: int = 128,
        num_heads: int = 4,
        max_frames: int = 32,
        pooling: str = "attention",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}, got {pooling!r}.")
        if not layer_channels:
            raise ValueError("`layer_channels` must list the width of at least one temporal layer.")
        if hidden_dim % num_heads:
            raise ValueError(f"`hidden_dim` ({hidden_dim}) must be divisible by `num_heads` ({num_heads}).")
        self.token_norm = nn.LayerNorm(cross_attention_dim)
        self.query = nn.Parameter(torch.zeros(hidden_dim))  # zero: the pooling starts as the mean over tokens
        self.to_k = nn.Linear(cross_attention_dim, hidden_dim, bias=False)
        self.to_v = nn.Linear(cross_attention_dim, hidden_dim)
        self.frame_embedding = nn.Embedding(max_frames, hidden_dim)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU())
        self.proj_out = nn.Linear(hidden_dim, sum(layer_channels))
        nn.init.normal_(self.frame_embedding.weight, std=0.02)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def pool(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """Text tokens `(B, L, D)` to one vector `(B, hidden_dim)`: attention pooling or the last token."""
        if self.config.pooling == "last_token":
            return self.to_v(self.token_norm(encoder_hidden_states[:, -1]))
        return attention_pool(
            self.token_norm(encoder_hidden_states), self.query, self.to_k, self.to_v, self.config.num_heads
        )

    def forward(self, encoder_hidden_states: torch.Tensor, num_frames: int) -> list[torch.Tensor]:
        """
        Args:
            encoder_hidden_states (`torch.Tensor`): Text tokens `c` of shape `(batch, seq_len, dim)`.
            num_frames (`int`): Number of frames `F`.

        Returns:
            `list[torch.Tensor]`: One `(batch, num_frames, channels_l)` tensor per temporal layer.
        """
        if num_frames > self.config.max_frames:
            raise ValueError(
                f"The motion conditioner supports at most {self.config.max_frames} frames, got {num_frames}."
            )
        positions = torch.arange(num_frames, device=encoder_hidden_states.device)
        hidden = self.pool(encoder_hidden_states)[:, None] + self.frame_embedding(positions)[None]  # (B, F, H)
        vectors = self.proj_out(self.mlp(hidden))  # (B, F, sum C_l)
        return list(vectors.split(list(self.config.layer_channels), dim=-1))
