"""Perturbed-attention guidance (PAG, Ahn et al. 2024) with diffusers' names (`AnimateDiffPAGPipeline`): a third
branch runs with the chosen spatial self-attention layers replaced by the identity, and the output moves away from
it: `guided + pag_scale * (text - perturbed)`. diffusers' own PAG attention processors do the perturbing; the video
U-Net's batch holds each branch's videos together, as they expect.

`pipe.set_pag_applied_layers(["mid"])` chooses the layers (regular expressions searched in the names of the frozen
image model's self-attention layers, e.g. `"mid"`, `"up_blocks.1"`; the temporal layers are never perturbed);
`pag_scale` and `pag_adaptive_scale` are call arguments (0: off).
"""

import contextlib
import re

import torch
from diffusers.models.attention_processor import PAGCFGIdentitySelfAttnProcessor2_0, PAGIdentitySelfAttnProcessor2_0

from .checks import is_finite


class HarivoPAGMixin:
    """`set_pag_applied_layers`, and the guided branch the denoising loop asks for with `_pag_prediction`."""

    _pag_applied_layers: tuple[str, ...] = ("mid",)
    _pag_scale = 0.0
    _pag_adaptive_scale = 0.0

    def set_pag_applied_layers(self, pag_applied_layers: str | list[str]) -> None:
        """The self-attention layers PAG perturbs: regular expressions searched in their names."""
        layers = [pag_applied_layers] if isinstance(pag_applied_layers, str) else list(pag_applied_layers)
        self._pag_layers(layers)  # every expression must match a layer
        self._pag_applied_layers = tuple(layers)

    @property
    def pag_applied_layers(self) -> tuple[str, ...]:
        return self._pag_applied_layers

    @property
    def do_perturbed_attention_guidance(self) -> bool:
        return self._pag_scale > 0

    def _pag_layers(self, layers) -> list:
        names = self.video_unet._spatial_self_attention
        chosen = []
        for layer in layers:
            try:
                matched = [name for name in names if re.search(layer, name)]
            except re.error as error:
                raise ValueError(f"`pag_applied_layers`: {layer!r} is not a regular expression ({error}).") from None
            if not matched:
                raise ValueError(
                    f"`pag_applied_layers`: {layer!r} matches no self-attention layer of the image model; e.g. 'mid',"
                    f" 'down_blocks.1', 'up_blocks.0' (layers: {', '.join(sorted(names)[:3])}, ...)."
                )
            chosen += [names[name] for name in matched]
        return chosen

    def _check_pag(self, pag_scale, pag_adaptive_scale) -> None:
        for name, value in (("pag_scale", pag_scale), ("pag_adaptive_scale", pag_adaptive_scale)):
            if not is_finite(value) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0 (0: off), got {value!r}.")
        if pag_scale > 0 and getattr(self, "controlnet", None) is not None:
            raise ValueError(f"`pag_scale`: {type(self).__name__} does not take PAG yet; use HarivoPipeline.")

    @contextlib.contextmanager
    def _pag_during_call(self, pag_scale: float, pag_adaptive_scale: float, added_cond_kwargs):
        """The call's PAG settings, the perturbing processors on the chosen layers; all restored after the call."""
        if not pag_scale > 0:
            yield
            return
        if added_cond_kwargs is not None:
            raise ValueError("`pag_scale` with an IP-Adapter image is not supported yet; set one of them off.")
        modules = self._pag_layers(self._pag_applied_layers)
        originals = [module.processor for module in modules]
        processor = (
            PAGCFGIdentitySelfAttnProcessor2_0 if self.do_classifier_free_guidance else PAGIdentitySelfAttnProcessor2_0
        )
        for module in modules:
            module.set_processor(processor())
        self._pag_scale, self._pag_adaptive_scale = float(pag_scale), float(pag_adaptive_scale)
        try:
            yield
        finally:
            self._pag_scale = self._pag_adaptive_scale = 0.0
            for module, original in zip(modules, originals):
                module.set_processor(original)

    def _pag_scale_at(self, t) -> float:
        """diffusers' adaptive scale: `pag_scale - pag_adaptive_scale * (1000 - t)`, at least 0."""
        return max(self._pag_scale - self._pag_adaptive_scale * (1000 - float(t)), 0.0)

    def _pag_inputs(self, latents: torch.Tensor, prompt_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch with the perturbed branch: (uncond, text, perturbed) or (text, perturbed), each the videos."""
        text = prompt_embeds.chunk(2)[1] if self.do_classifier_free_guidance else prompt_embeds
        branches = 3 if self.do_classifier_free_guidance else 2
        return torch.cat([latents] * branches), torch.cat([prompt_embeds, text])
