"""`HarivoUNet`: the frozen T2I U-Net with HARIVO's temporal layers and frame tokens, as one video denoiser.

Composes onto diffusers' `UNetMotionModel`: the temporal layers of the `UNetMotionModel` *are* the adapter's
modules (shared, not copied), so the adapter's parameters are exactly what trains and what gets saved.
"""

import functools
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import UNet2DConditionModel, UNetMotionModel
from diffusers.models.attention_processor import Attention
from torch import nn

from .adapter import HarivoAdapter


@dataclass
class FeatureCapture:
    """What a forward pass inside `HarivoUNet.capture` recorded.

    Attributes:
        attention_maps (`dict[str, torch.Tensor]`): Layer name -> self-attention probabilities of shape
            `(batch * frames, heads, queries, keys)`, frames in the batch in `(batch, frame)` order.
        h_space (`torch.Tensor` or `None`): Mid-block output `(batch * frames, channels, height, width)`.
        token_attention (`dict[str, torch.Tensor]`): Layer name -> the cross-attention each query pays to the
            weighted text tokens (`capture(token_weights=...)`), `(batch * frames, height, width)`, mean over heads,
            detached.
    """

    attention_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    h_space: torch.Tensor | None = None
    token_attention: dict[str, torch.Tensor] = field(default_factory=dict)


class _ExplicitAttentionProcessor:
    """diffusers' `AttnProcessor` with the attention probabilities materialised (no fused kernel) and handed to
    `record`; subclasses keep what they need of them. Installed only on the layers being captured, and only while
    capturing."""

    def record(self, attn: Attention, probs: torch.Tensor, batch_size: int, sequence_length: int) -> None:
        raise NotImplementedError

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape  # (B*F, h*w, C): frames are in the batch
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*F*heads, h*w, d)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B*F*heads, h*w, keys)
        self.record(attn, probs, batch_size, sequence_length)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class AttentionMapCaptureProcessor(_ExplicitAttentionProcessor):
    """Self-attention that hands its probabilities `(B*F, heads, h*w, h*w)` to a `FeatureCapture`."""

    def __init__(self, name: str, capture: FeatureCapture):
        self.name = name
        self.capture = capture

    def record(self, attn: Attention, probs: torch.Tensor, batch_size: int, sequence_length: int) -> None:
        self.capture.attention_maps[self.name] = probs.unflatten(0, (batch_size, attn.heads))


class TokenAttentionProcessor(_ExplicitAttentionProcessor):
    """Cross-attention that records how much attention each query pays to some text tokens.

    `token_weights` `(videos, L)` weighs the text tokens of each video (1 on a subject's words, 0 elsewhere); frame
    tokens appended after the `L` text tokens get weight 0.
    """

    def __init__(
        self,
        name: str,
        capture: FeatureCapture,
        token_weights: torch.Tensor,
        size: tuple[int, int],
        original: Any = None,
    ):
        self.name = name
        self.capture = capture
        self.token_weights = token_weights
        self.size = size  # (height, width) of the latents: the query grid is this size halved, rounding up, k times
        self.original = original  # the layer's own processor

    def __call__(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: Any = None, *args, **kwargs
    ):
        if isinstance(encoder_hidden_states, tuple):  # IP-Adapter's (text, image tokens): record the text's
            super().__call__(attn, hidden_states, encoder_hidden_states[0], *args, **kwargs)
            return self.original(attn, hidden_states, encoder_hidden_states, *args, **kwargs)  # its own output
        return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)

    def record(self, attn: Attention, probs: torch.Tensor, batch_size: int, sequence_length: int) -> None:
        weights = self.token_weights.to(probs.device, probs.dtype)
        videos, text_length = weights.shape
        weights = weights.repeat_interleave(batch_size // videos, dim=0)  # (B*F, L)
        weights = torch.nn.functional.pad(weights, (0, probs.shape[-1] - text_length))  # frame tokens: 0
        mass = (probs.unflatten(0, (batch_size, attn.heads)) * weights[:, None, None]).sum(-1).mean(1)
        grid = self.size
        while grid[0] * grid[1] > sequence_length:  # each down-sampling halves the grid, rounding up
            grid = (-(-grid[0] // 2), -(-grid[1] // 2))
        self.capture.token_attention[self.name] = mass.detach().reshape(batch_size, *grid)


def spatial_cross_attention_layers(unet: nn.Module) -> list[str]:
    """Names of the frozen spatial cross-attention layers (`attn2` of the image transformer blocks) of a U-Net."""
    return [
        name
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and name.endswith(".attn2") and "motion_modules" not in name
    ]


def spatial_self_attention_layers(unet: nn.Module, blocks: Sequence[str] = ("down", "mid", "up")) -> list[str]:
    """
    Names of the frozen spatial self-attention layers (`attn1` of the image transformer blocks) of a U-Net.

    Args:
        unet (`nn.Module`): A `UNetMotionModel` or `UNet2DConditionModel`.
        blocks (`Sequence[str]`, defaults to all): Which parts to list: `"down"`, `"mid"`, `"up"`.
    """
    prefixes = tuple(f"{part}_block" for part in blocks)
    return [
        name
        for name, module in unet.named_modules()
        if isinstance(module, Attention)
        and name.endswith(".attn1")
        and "motion_modules" not in name
        and name.startswith(prefixes)
    ]


def default_trsa_layers(unet: nn.Module) -> list[str]:
    """The self-attention layers of the lowest-resolution decoder block that has any: the cheapest maps."""
    for index in range(len(unet.up_blocks)):
        names = [n for n in spatial_self_attention_layers(unet, ("up",)) if n.startswith(f"up_blocks.{index}.")]
        if names:
            return names
    return []


class _Identity(nn.Module):
    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class HarivoUNet(nn.Module):
    r"""
    Video denoiser: frozen `UNetMotionModel` spatial layers + the HARIVO adapter.

    Args:
        unet ([`~diffusers.UNetMotionModel`]): The motion U-Net; its temporal layers are replaced by the adapter's.
        adapter ([`HarivoAdapter`]): The trainable HARIVO parts.
    """

    def __init__(self, unet: UNetMotionModel, adapter: HarivoAdapter):
        super().__init__()
        base = getattr(unet, "_orig_mod", unet)  # a `torch.compile`d U-Net is called as such, inspected unwrapped
        adapter.check_compatible(base.config)
        _share_temporal_layers(base, adapter)
        base.freeze_unet2d_params()
        self.unet = unet
        self.adapter = adapter
        self._temporal_enabled = True

    @classmethod
    def from_unet2d(cls, unet: UNet2DConditionModel, adapter: HarivoAdapter) -> "HarivoUNet":
        """Build the video U-Net from a frozen text-to-image `UNet2DConditionModel` and an adapter."""
        adapter.check_compatible(unet.config)
        return cls(UNetMotionModel.from_unet2d(unet, adapter.motion_adapter), adapter)

    @property
    def base_unet(self) -> UNetMotionModel:
        """The `UNetMotionModel` itself, also when `unet` is a `torch.compile` wrapper of it."""
        return getattr(self.unet, "_orig_mod", self.unet)

    @property
    def config(self):
        return self.base_unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.base_unet.dtype

    @property
    def device(self) -> torch.device:
        return self.base_unet.device

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters HARIVO trains (those of the adapter)."""
        return [p for p in self.adapter.parameters() if p.requires_grad]

    def map_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """Apply the mapping network `m_theta` to IID noise `(B, C, F, h, w)`."""
        return self.adapter.mapping_network(noise)

    def encoder_states_per_frame(self, encoder_hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """
        Text tokens per frame, with the frame tokens appended while temporal layers are enabled.

        Args:
            encoder_hidden_states (`torch.Tensor`): `(B, L, D)` text tokens of each video, or `(B, F, L, D)` of each
                frame (prompt travel): frame `f`'s tokens are then made from frame `f`'s text.
            num_frames (`int`): Frames per video.

        Returns:
            `torch.Tensor`: `(B*F, L+K, D)`, frames moved into the batch in `(batch, frame)` order.
        """
        if encoder_hidden_states.ndim == 4:
            per_frame = encoder_hidden_states.flatten(0, 1)  # (B*F, L, D)
        else:
            per_frame = encoder_hidden_states.repeat_interleave(num_frames, dim=0)  # (B*F, L, D)
        generator = self.adapter.frame_token_generator
        if not (self._temporal_enabled and generator.enabled):
            return per_frame
        tokens = frame_wise(generator, encoder_hidden_states, num_frames).flatten(0, 1).to(per_frame.dtype)
        return torch.cat([per_frame, tokens], dim=1)  # (B*F, L+K, D)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        cross_attention_kwargs: dict[str, Any] | None = None,
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """
        Args:
            sample (`torch.Tensor`): Noisy latents `(B, C, F, h, w)`.
            timestep (`torch.Tensor`, `float` or `int`): Diffusion timestep(s), scalar or `(B,)`.
            encoder_hidden_states (`torch.Tensor`): Text tokens `(B, L, D)`, or `(B, F, L, D)` per frame.
            cross_attention_kwargs (`dict`, *optional*): Passed to the attention processors (e.g. LoRA `scale`).
            down_block_additional_residuals, mid_block_additional_residual: ControlNet residuals, frames in batch.
            added_cond_kwargs (`dict`, *optional*): `{"image_embeds": ...}` of a loaded IP-Adapter, one per video.

        Returns:
            `torch.Tensor`: The model output (noise or v prediction) `(B, C, F, h, w)`.
        """
        num_frames = sample.shape[2]
        if num_frames > self.adapter.max_frames and self._temporal_enabled:
            raise ValueError(
                f"The temporal layers support at most {self.adapter.max_frames} frames, got {num_frames}."
            )
        context = self.encoder_states_per_frame(encoder_hidden_states, num_frames)
        conditioner = self.adapter.motion_conditioner
        vectors = (
            frame_wise(conditioner, encoder_hidden_states, num_frames)
            if conditioner is not None and self._temporal_enabled
            else None
        )
        # With gradient checkpointing, the backward pass recomputes the temporal layers after this call returns
        recomputed = self.base_unet.is_gradient_checkpointing and torch.is_grad_enabled()
        with self.adapter.motion_condition(vectors, keep=recomputed):
            return self.unet(
                sample,
                timestep,
                encoder_hidden_states=context,
                cross_attention_kwargs=cross_attention_kwargs,
                down_block_additional_residuals=down_block_additional_residuals,
                mid_block_additional_residual=mid_block_additional_residual,
                added_cond_kwargs=added_cond_kwargs,
            ).sample

    @contextmanager
    def temporal_layers_disabled(self) -> Iterator["HarivoUNet"]:
        """
        Bypass every temporal layer and the frame tokens: inside, the model is the frozen T2I U-Net run frame by
        frame (used by `L_reg` and by tests). The bypassed layers are not computed at all.
        """
        if not self._temporal_enabled:  # nested inside another bypass: that one restores the layers
            yield self
            return
        swapped = []
        for module_list in _motion_module_lists(self.base_unet):
            swapped.append((module_list, list(module_list)))
            for index in range(len(module_list)):
                module_list[index] = _Identity()
        self._temporal_enabled = False
        try:
            yield self
        finally:
            self._temporal_enabled = True
            for module_list, originals in swapped:
                for index, module in enumerate(originals):
                    module_list[index] = module

    @functools.cached_property
    def _spatial_self_attention(self) -> dict[str, Attention]:
        """The frozen spatial self-attention layers by name (the U-Net's structure never changes)."""
        modules = dict(self.base_unet.named_modules())
        return {name: modules[name] for name in spatial_self_attention_layers(self.base_unet)}

    @functools.cached_property
    def _spatial_cross_attention(self) -> dict[str, Attention]:
        modules = dict(self.base_unet.named_modules())
        return {name: modules[name] for name in spatial_cross_attention_layers(self.base_unet)}

    @contextmanager
    def capture(
        self,
        attention_layers: Sequence[str] = (),
        h_space: bool = False,
        token_weights: torch.Tensor | None = None,
        latent_size: tuple[int, int] | None = None,
    ) -> Iterator[FeatureCapture]:
        """
        Record spatial self-attention maps of the given layers, the h-space and/or the cross-attention to some text
        tokens during forwards inside.

        Only the named layers materialise their maps; every other attention keeps the fused kernel. With gradient
        checkpointing on, the backward pass recomputes these layers after the context has closed, so they keep the
        map-keeping processor (same values, no fused kernel) instead of getting their original one back.

        Args:
            attention_layers (`Sequence[str]`): Names from `spatial_self_attention_layers(unet)`.
            h_space (`bool`, defaults to `False`): Record the mid-block output.
            token_weights (`torch.Tensor`, *optional*): `(videos, L)` weights of the text tokens: record, in every
                spatial cross-attention layer, the attention each position pays to them (`token_attention`).
                `videos` must divide the forward's batch (negative and positive prompts included).
            latent_size (`tuple[int, int]`): `(h, w)` of the latents; needed with `token_weights`.
        """
        capture = FeatureCapture()
        modules = self._spatial_self_attention  # looked up once: training calls this every step
        unknown = [name for name in attention_layers if name not in modules]
        if unknown:
            raise ValueError(f"Unknown spatial self-attention layers {unknown}. Choose among: {sorted(modules)}.")
        recomputed = self.base_unet.is_gradient_checkpointing and torch.is_grad_enabled()
        with ExitStack() as stack:
            for name in attention_layers:
                module = modules[name]
                original = module.processor
                module.set_processor(AttentionMapCaptureProcessor(name, capture))
                if not recomputed:
                    stack.callback(module.set_processor, original)
            if token_weights is not None:
                if latent_size is None:
                    raise ValueError("`capture(token_weights=...)` needs the `latent_size` (h, w) of the latents.")
                for name, module in self._spatial_cross_attention.items():
                    original = module.processor
                    module.set_processor(TokenAttentionProcessor(name, capture, token_weights, latent_size, original))
                    stack.callback(module.set_processor, original)
            if h_space:
                handle = self.base_unet.mid_block.register_forward_hook(
                    lambda _module, _args, output: setattr(capture, "h_space", output)
                )
                stack.callback(handle.remove)
            yield capture


def frame_wise(module: nn.Module, encoder_hidden_states: torch.Tensor, num_frames: int) -> Any:
    """
    A module that maps a video's text `(B, L, D)` to per-frame outputs `(B, F, ...)` (the frame-token generator
    `(B*F, K, D)`, the motion conditioner a list of `(B, F, C)`), applied to per-frame text `(B, F, L, D)`: frame
    `f`'s output is the one the module gives for frame `f` of a video whose whole text is frame `f`'s. Returns
    `(B, F, ...)` tensors (a list where the module returns one); 3-dim text is passed through unchanged.
    """
    if encoder_hidden_states.ndim == 3:
        output = module(encoder_hidden_states, num_frames)
        if isinstance(output, list):
            return output
        return output.unflatten(0, (encoder_hidden_states.shape[0], num_frames))
    batch_size = encoder_hidden_states.shape[0]
    output = module(encoder_hidden_states.flatten(0, 1), num_frames)  # every frame's text, as a whole video

    def diagonal(values: torch.Tensor, rest: tuple[int, ...]) -> torch.Tensor:  # -> (B, F, *rest)
        values = values.reshape(batch_size, num_frames, num_frames, *rest)  # (video, text frame, frame, ...)
        return torch.diagonal(values, dim1=1, dim2=2).movedim(-1, 1)

    if isinstance(output, list):  # (B*F, F, C) each
        return [diagonal(v, tuple(v.shape[2:])) for v in output]
    return diagonal(output, tuple(output.shape[1:]))  # (B*F*F, K, D)


def _motion_module_lists(unet: UNetMotionModel) -> list[nn.ModuleList]:
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    return [block.motion_modules for block in blocks if hasattr(block, "motion_modules")]


def _share_temporal_layers(unet: UNetMotionModel, adapter: HarivoAdapter) -> None:
    """Make the U-Net's temporal layers the adapter's own modules (one copy of the weights, trained in place)."""
    motion = adapter.motion_adapter
    pairs = [*zip(unet.down_blocks, motion.down_blocks), *zip(unet.up_blocks, motion.up_blocks)]
    if hasattr(unet.mid_block, "motion_modules") and motion.mid_block is not None:
        pairs.append((unet.mid_block, motion.mid_block))
    for unet_block, adapter_block in pairs:
        ours, theirs = unet_block.motion_modules, adapter_block.motion_modules
        ours_shapes = [p.shape for p in ours.parameters()]
        if ours_shapes != [p.shape for p in theirs.parameters()]:
            raise ValueError("The U-Net's temporal layers do not match the adapter's; build it with `from_unet2d`.")
        unet_block.motion_modules = theirs
