"""CLIP score of generated videos: how well the frames match their prompt, for real-data evaluation.

`CLIPScore = 100 * max(cos(image_embedding, text_embedding), 0)`, averaged over the frames of a clip (the
frame-level CLIP similarity of the video literature, e.g. on MSR-VTT). CLIP loads with transformers from a local
folder or a hub id; harivo does not download it.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class ClipScorer:
    """
    Args:
        model_name_or_path (`str` or `Path`): A CLIP checkpoint (`CLIPModel` + its processor), e.g. a local copy
            of `openai/clip-vit-base-patch32`.
        device (`str` or `torch.device`, defaults to `"cpu"`).
        local_files_only (`bool`, defaults to `False`): Never reach the hub.
    """

    def __init__(self, model_name_or_path: str | Path, device: str | torch.device = "cpu", local_files_only=False):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(model_name_or_path, local_files_only=local_files_only).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(model_name_or_path, local_files_only=local_files_only)
        self.device = torch.device(device)

    @torch.no_grad()
    def frame_scores(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        """Per-frame scores `(F,)` of `uint8` frames `(F, H, W, 3)` against one prompt."""
        inputs = self.processor(text=[prompt], images=list(frames), return_tensors="pt", padding=True)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        image = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        text = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        image = torch.nn.functional.normalize(_embeddings(image), dim=-1)
        text = torch.nn.functional.normalize(_embeddings(text), dim=-1)
        return (100 * (image @ text.T).squeeze(-1).clamp(min=0)).float().cpu().numpy()

    def __call__(self, clips: Sequence[np.ndarray], prompts: Sequence[str]) -> float:
        """Mean CLIP score of `uint8` clips `(F, H, W, 3)` against their prompts."""
        if len(clips) != len(prompts):
            raise ValueError(f"Got {len(clips)} clips but {len(prompts)} prompts.")
        return float(np.mean([self.frame_scores(clip, prompt).mean() for clip, prompt in zip(clips, prompts)]))


def _embeddings(output) -> torch.Tensor:
    """`get_*_features` returns a tensor in most transformers versions and a model output in some."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
