"""Keep every word of a caption in a from-scratch text encoder, as a pretrained CLIP does.

A CLIP text encoder is trained contrastively: its pooled (end-of-text) feature has to identify the whole caption, so
"moving left" and "moving right" end up far apart. A text encoder trained from scratch through an image model's
diffusion loss alone learns no such thing for words that images do not depend on: in the Shapes world the motion
phrase of an image caption is random, and the encoder trained that way gave "moving left" and "moving right"
features a tenth as far apart as two colours at the word itself and 1-5 % of their norm apart after it, so nothing
downstream (HARIVO's temporal layers included) learned to tell the directions apart. `CaptionContentHead` restores
CLIP's property: linear classifiers read every attribute of the caption (motion included) from the pooled feature,
and their cross-entropy is added to the text-to-image loss (`t2i.caption_content_weight`). The head is training-only; it is checkpointed, never exported.
"""

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..data.shapes import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SIZES, STYLES, ShapeScene

ATTRIBUTES = {
    "shape": tuple(SHAPES),
    "colour": tuple(COLOURS),
    "size": tuple(SIZES),
    "background": tuple(BACKGROUNDS),
    "style": tuple(STYLES),
    "direction": (None, *DIRECTIONS),  # None: a caption without a motion phrase
}


class CaptionContentHead(ModelMixin, ConfigMixin):
    r"""
    One linear classifier per Shapes attribute over a text encoder's pooled output.

    Args:
        hidden_size (`int`): Width of the text encoder.
    """

    @register_to_config
    def __init__(self, hidden_size: int = 64):
        super().__init__()
        self.classifiers = nn.ModuleDict(
            {name: nn.Linear(hidden_size, len(values)) for name, values in ATTRIBUTES.items()}
        )

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute for pooled text features `(B, hidden_size)`."""
        return {name: classifier(pooled) for name, classifier in self.classifiers.items()}

    def loss(self, pooled: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """
        Mean cross-entropy of every attribute of every non-empty caption (empty ones, for guidance, are skipped).

        Args:
            pooled (`torch.Tensor`): `CLIPTextModel(...).pooler_output` of the captions, `(B, hidden_size)`.
            captions (`list[str]`): The captions, in the Shapes template.
        """
        keep = [index for index, caption in enumerate(captions) if caption]
        if not keep:
            return pooled.sum() * 0.0
        scenes = [ShapeScene.from_caption(captions[index]) for index in keep]
        logits = self(pooled[keep])
        losses = []
        for name, values in ATTRIBUTES.items():
            targets = torch.tensor([values.index(getattr(scene, name)) for scene in scenes], device=pooled.device)
            losses.append(F.cross_entropy(logits[name].float(), targets))
        return torch.stack(losses).mean()

    @torch.no_grad()
    def accuracy(self, pooled: torch.Tensor, captions: list[str]) -> dict[str, float]:
        """Share of captions whose attribute the head reads correctly, per attribute."""
        scenes = [ShapeScene.from_caption(caption) for caption in captions]
        logits = self(pooled)
        return {
            name: sum(values[i] == getattr(s, name) for i, s in zip(logits[name].argmax(-1).tolist(), scenes))
            / len(scenes)
            for name, values in ATTRIBUTES.items()
        }
