"""Motion paths: the prompt's motion as an explicit path, used to move the content when sampling [ours].

AnimateDiff-style temporal layers never learned, at this project's training budgets, to *choose* the direction a
prompt names (docs/method.md, the model card): where the object goes is decided at the first, noisiest steps, where
only the prompt can say it, and the loss gains little there. So HARIVO predicts the motion as a path, `(x, y)` per
frame, and the sampler makes the content follow it (`HarivoPipeline(motion_path_projection=...)`: the early clean-
latent predictions are projected onto content that travels rigidly along the path, as Text2Video-Zero moves its
latents by a global translation).

- `estimate_displacements` measures a training clip's global motion: phase correlation of each frame against the
  first, with a sub-pixel peak.
- `MotionPathPredictor` learns the path from the prompt (`L_path`, regression on the measured paths) and, if asked,
  also warps the initial noise along it.
- `warped_noise` is that warp: one canvas of Gaussian noise at `upscale` times the latent resolution per video, a
  window of it that slides along the path for each frame, sum-pooled back to the latent grid. Sum-pooling `k x k`
  IID `N(0, 1)` values and dividing by `k` is exactly `N(0, 1)`, so every frame is still exactly the noise the image
  model was trained on, and the path moves in steps of `1 / upscale` latent pixels. New noise enters at the edges
  (no wrap-around). A share `1 - correlation` of each frame is fresh IID noise. (A frozen image U-Net is nearly
  translation-equivariant, so content tends to follow its noise; measured in the Shapes world, this alone did not
  make the object travel the prompted way, see the model card.)
"""

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from .motion_conditioning import attention_pool


def batched_path(path, batch_size: int, num_frames: int, name: str = "motion_path") -> torch.Tensor:
    """A path given as `(F, 2)` (one for every video) or `(B, F, 2)`, as a float `(B, F, 2)` tensor; a `ValueError`
    that names the argument and the shapes it accepts otherwise."""
    path = torch.as_tensor(path).float()
    if path.ndim == 2:
        path = path.expand(batch_size, -1, -1)
    if tuple(path.shape) != (batch_size, num_frames, 2):
        raise ValueError(
            f"`{name}` must have shape ({num_frames}, 2) or ({batch_size}, {num_frames}, 2), got {tuple(path.shape)}."
        )
    if not torch.isfinite(path).all():
        raise ValueError(f"`{name}` must be finite.")
    return path


def warped_noise(
    shape: tuple[int, int, int, int, int],
    displacements: torch.Tensor,
    upscale: int = 4,
    correlation: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """
    Gaussian video noise whose frames are translated copies of one noise image along a path.

    Args:
        shape (`tuple`): `(batch, channels, frames, height, width)` of the latent noise.
        displacements (`torch.Tensor`): `(batch, frames, 2)` or `(frames, 2)`: the `(x, y)` offset of each frame's
            noise from where it would be without motion, in latent pixels (positive x is right, positive y down).
        upscale (`int`, defaults to 4): Sub-pixel resolution of the path: offsets are rounded to `1 / upscale`
            latent pixels.
        correlation (`float`, defaults to 1): Share of each frame's variance that comes from the warped canvas; the
            rest is fresh IID noise per frame. Every frame is exactly `N(0, I)` for any value in [0, 1].
        generator (`torch.Generator` or a list of one per video, *optional*): Random source.

    Returns:
        `torch.Tensor`: Noise of `shape`.
    """
    batch_size, channels, num_frames, height, width = shape
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"`correlation` must be in [0, 1], got {correlation}.")
    if upscale < 1:
        raise ValueError(f"`upscale` must be at least 1, got {upscale}.")
    displacements = batched_path(displacements, batch_size, num_frames, "displacements")
    if isinstance(generator, list) and len(generator) != batch_size:
        raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size} videos; pass one per video.")
    dtype = dtype or torch.float32
    offsets = torch.round(displacements.detach().float().cpu() * upscale).long()  # (B, F, 2) in canvas pixels
    videos = []
    for index in range(batch_size):
        source = generator[index] if isinstance(generator, list) else generator
        pad_x, pad_y = offsets[index].abs().amax(dim=0).tolist()
        canvas_shape = (1, channels, height * upscale + 2 * pad_y, width * upscale + 2 * pad_x)
        canvas = randn_tensor(canvas_shape, generator=source, device=torch.device(device or "cpu"))
        frames = []
        for dx, dy in offsets[index].tolist():
            top, left = pad_y - dy, pad_x - dx  # the canvas window at (pad - offset): its content moved by +offset
            frames.append(canvas[..., top : top + height * upscale, left : left + width * upscale])
        window = torch.cat(frames)  # (F, C, H*k, W*k)
        warped = F.avg_pool2d(window, upscale) * upscale  # sum of k*k IID N(0, 1) over k: exactly N(0, 1)
        if correlation < 1.0:
            fresh = randn_tensor(warped.shape, generator=source, device=warped.device)
            warped = math.sqrt(correlation) * warped + math.sqrt(1.0 - correlation) * fresh
        videos.append(warped.transpose(0, 1))  # (C, F, h, w)
    return torch.stack(videos).to(dtype=dtype)


@torch.no_grad()
def estimate_displacements(frames: torch.Tensor) -> torch.Tensor:
    """
    The global translation of every frame from the first, by phase correlation with a sub-pixel peak, unwrapped
    along the clip (a frame may be more than half a frame away from the first, as long as consecutive frames move
    less than half a frame).

    Args:
        frames (`torch.Tensor`): `(batch, frames, channels, height, width)` pixels.

    Returns:
        `torch.Tensor`: `(batch, frames, 2)` `(x, y)` displacements in pixels (frame 0 is `(0, 0)`).
    """
    if frames.ndim != 5:
        raise ValueError(
            f"`frames` must have shape (batch, frames, channels, height, width), got {tuple(frames.shape)}."
        )
    gray = frames.float().mean(dim=2)  # (B, F, H, W)
    gray = gray - gray.mean(dim=(-1, -2), keepdim=True)
    height, width = gray.shape[-2:]
    spectra = torch.fft.rfft2(gray)
    cross = spectra * spectra[:, :1].conj()  # frame f against frame 0: a peak at frame f's shift
    cross = cross / cross.abs().clamp_min(1e-8)
    surface = torch.fft.irfft2(cross, s=(height, width))  # (B, F, H, W)
    peak = surface.flatten(2).argmax(dim=-1)
    py, px = peak // width, peak % width

    def refine(values: torch.Tensor, position: torch.Tensor, size: int, dim: int) -> torch.Tensor:
        """Parabola through the peak and its two (circular) neighbours along one axis."""
        before = torch.gather(values, dim, ((position - 1) % size).unsqueeze(dim)).squeeze(dim)
        at = torch.gather(values, dim, position.unsqueeze(dim)).squeeze(dim)
        after = torch.gather(values, dim, ((position + 1) % size).unsqueeze(dim)).squeeze(dim)
        curvature = before - 2 * at + after
        step = torch.where(curvature < 0, 0.5 * (before - after) / curvature.clamp(max=-1e-8), 0.0)
        shift = position.float() + step.clamp(-0.5, 0.5)
        return torch.where(shift > size / 2, shift - size, shift)  # wrap to (-size/2, size/2]

    row = torch.gather(surface, 2, py[..., None, None].expand(-1, -1, 1, width)).squeeze(2)  # (B, F, W)
    column = torch.gather(surface, 3, px[..., None, None].expand(-1, -1, height, 1)).squeeze(3)  # (B, F, H)
    shifts = torch.stack([refine(row, px, width, 2), refine(column, py, height, 2)], dim=-1)  # (B, F, 2)
    # a shift is known only modulo the frame size: unwrap each frame's to the one nearest the previous frame's, so a
    # clip may travel further than half the frame
    size = torch.tensor([width, height], dtype=shifts.dtype, device=shifts.device)
    for index in range(1, shifts.shape[1]):
        previous = shifts[:, index - 1]
        shifts[:, index] -= torch.round((shifts[:, index] - previous) / size) * size
    return shifts


class MotionPathPredictor(ModelMixin, ConfigMixin):
    r"""
    Predicts the path `(x, y)` of each frame from the prompt, in latent pixels; optionally warps the noise along it.

    `path[b, f] = f * velocity(h_b) + offset(h_b)[f]`, `h_b = mlp(pool(c_b))`, with frame 0 moved to the origin. The
    pooling is attention with a learned query over the text tokens (as in [`MotionConditioner`]), so it can find the
    motion words; the query starts random (a zero query starts as the mean over tokens, and training then sits on
    that symmetric start for hundreds of steps). The constant-velocity part shares one prediction across all frames;
    the per-frame offsets leave room for other paths. Both output layers start at zero: a fresh predictor predicts
    no motion.

    Args:
        cross_attention_dim (`int`, defaults to 768): Width of the text tokens.
        hidden_dim (`int`, defaults to 64): Width of the pooled prompt and of the hidden layer.
        num_heads (`int`, defaults to 4): Heads of the attention pooling.
        max_frames (`int`, defaults to 32): Frame positions it predicts.
        warp_noise (`bool`, defaults to `False`): Also warp the initial noise along the path (`warped_noise`), in
            training (the clip's measured path) and sampling (the predicted path).
        upscale (`int`, defaults to 4): Sub-pixel resolution of the warp.
        correlation (`float`, defaults to 0.9): Share of each frame's noise that follows the path in the warp.
    """

    @register_to_config
    def __init__(
        self,
        cross_attention_dim: int = 768,
        hidden_dim: int = 64,
        num_heads: int = 4,
        max_frames: int = 32,
        warp_noise: bool = False,
        upscale: int = 4,
        correlation: float = 0.9,
    ):
        super().__init__()
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"`correlation` must be in [0, 1], got {correlation}.")
        if upscale < 1:
            raise ValueError(f"`upscale` must be at least 1, got {upscale}.")
        if hidden_dim % num_heads:
            raise ValueError(f"`hidden_dim` ({hidden_dim}) must be divisible by `num_heads` ({num_heads}).")
        self.token_norm = nn.LayerNorm(cross_attention_dim)
        self.query = nn.Parameter(torch.randn(hidden_dim))
        self.to_k = nn.Linear(cross_attention_dim, hidden_dim, bias=False)
        self.to_v = nn.Linear(cross_attention_dim, hidden_dim)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU())
        self.velocity = nn.Linear(hidden_dim, 2)
        self.proj_out = nn.Linear(hidden_dim, max_frames * 2)
        for layer in (self.velocity, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, encoder_hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """
        Args:
            encoder_hidden_states (`torch.Tensor`): Text tokens `(batch, seq_len, dim)`.
            num_frames (`int`): Number of frames `F`.

        Returns:
            `torch.Tensor`: `(batch, num_frames, 2)` `(x, y)` displacements from frame 0, in latent pixels.
        """
        if num_frames > self.config.max_frames:
            raise ValueError(
                f"The motion path predictor supports at most {self.config.max_frames} frames, got {num_frames}."
            )
        tokens = self.token_norm(encoder_hidden_states)
        hidden = self.mlp(attention_pool(tokens, self.query, self.to_k, self.to_v, self.config.num_heads))  # (B, H)
        frames = torch.arange(num_frames, device=hidden.device, dtype=hidden.dtype)
        offsets = self.proj_out(hidden).view(-1, self.config.max_frames, 2)[:, :num_frames]
        path = frames[None, :, None] * self.velocity(hidden)[:, None] + offsets  # (B, F, 2)
        return path - path[:, :1]  # frame 0 at the origin

    def noise(
        self,
        shape: tuple[int, int, int, int, int],
        displacements: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """`warped_noise` with this predictor's `upscale` and `correlation`."""
        return warped_noise(
            shape, displacements, self.config.upscale, self.config.correlation, generator, device=device, dtype=dtype
        )
