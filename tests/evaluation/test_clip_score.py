"""CLIP score plumbing on a tiny random-weight CLIP saved in transformers layout (real weights cannot be fetched)."""

import numpy as np
import pytest
import torch

from harivo.data import ShapeScene, render_clip
from harivo.evaluation.clip_score import ClipScorer
from tests.helpers import save_tiny_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def _clip(caption: str, seed: int = 0) -> np.ndarray:
    return render_clip(ShapeScene.from_caption(caption), 4, np.random.default_rng(seed))[0]


def test_clip_score_loads_a_local_folder_and_scores_every_frame(clip_dir):
    scorer = ClipScorer(clip_dir, local_files_only=True)
    caption = "a small red circle moving left on a plain black background"
    frames = _clip(caption)
    per_frame = scorer.frame_scores(frames, caption)
    assert per_frame.shape == (4,) and np.all((per_frame >= 0) & (per_frame <= 100))
    assert scorer([frames], [caption]) == pytest.approx(float(per_frame.mean()), rel=1e-5)


def test_clip_score_matches_a_direct_computation(clip_dir):
    scorer = ClipScorer(clip_dir, local_files_only=True)
    caption = "a large blue square moving up on a plain white background"
    frames = _clip(caption, 1)
    inputs = scorer.processor(text=[caption], images=list(frames), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = scorer.model(**inputs)
    cosine = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds.expand_as(out.image_embeds))
    expected = (100 * cosine.clamp(min=0)).numpy()
    assert np.allclose(scorer.frame_scores(frames, caption), expected, atol=1e-4)


def test_clip_score_needs_one_prompt_per_clip(clip_dir):
    scorer = ClipScorer(clip_dir, local_files_only=True)
    with pytest.raises(ValueError, match="prompts"):
        scorer([_clip("a small red circle moving left on a plain black background")], [])
