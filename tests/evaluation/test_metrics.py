import dataclasses

import numpy as np
import pytest

from harivo.data import ShapeScene, render_clip, render_frame
from harivo.evaluation.metrics import ATTRIBUTES, score_clip

SCENE = ShapeScene("triangle", "blue", "large", "white", "plain", "right")


@pytest.fixture(scope="module")
def clip():
    frames, _ = render_clip(SCENE, 16, np.random.default_rng(0))
    return frames


def test_real_clip_scores_perfectly(clip):
    scores = score_clip(clip, SCENE)
    assert scores["fidelity"] == 1.0 and scores["motion_correct"] == 1.0 and scores["identity"] == 1.0
    assert scores["background_flicker"] == 0.0 and scores["jerk"] < 0.5 and scores["area_variation"] < 0.02


def test_wrong_direction_prompt_is_not_a_correct_motion(clip):
    assert score_clip(clip, dataclasses.replace(SCENE, direction="left"))["motion_correct"] == 0.0


def test_broken_clips_lose_points(clip):
    real = score_clip(clip, SCENE)
    shuffled = score_clip(clip[np.random.default_rng(0).permutation(16)], SCENE)
    assert shuffled["jerk"] > 5 * real["jerk"] + 1
    static = score_clip(np.stack([clip[0]] * 16), SCENE)
    assert static["motion_correct"] == 0.0 and static["travel"] == 0.0
    swapped = clip.copy()
    recoloured, _ = render_clip(dataclasses.replace(SCENE, colour="red"), 16, np.random.default_rng(0))
    swapped[8:] = recoloured[8:]
    swapped_scores = score_clip(swapped, SCENE)
    assert swapped_scores["fidelity_colour"] == 0.5 and swapped_scores["identity"] == 0.5
    noisy = np.clip(clip + np.random.default_rng(0).normal(0, 60, clip.shape), 0, 255).astype(np.uint8)
    noisy_scores = score_clip(noisy, SCENE)
    assert noisy_scores["background_flicker"] > 10 and noisy_scores["fidelity"] < real["fidelity"]


def test_still_prompt_has_no_motion_score():
    scene = ShapeScene("circle", "red", "small", "black", "plain")
    frame = render_frame(scene, (20.0, 20.0))
    scores = score_clip(np.stack([frame, frame]), scene)
    assert "motion_correct" not in scores and scores["fidelity"] == 1.0
    assert set(score_clip(frame[None], scene)) == {*(f"fidelity_{a}" for a in ATTRIBUTES), "fidelity", "found"}
