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


TEXTURED = ShapeScene("circle", "red", "large", "black", "striped", "right")


def test_a_still_textured_background_scores_still_and_full_contrast():
    frames, _ = render_clip(TEXTURED, 16, np.random.default_rng(0))
    scores = score_clip(frames, TEXTURED)
    assert scores["background_change"] == 0.0 and scores["texture_contrast"] == pytest.approx(1.0)
    assert "texture_contrast" not in score_clip(*render_clip(SCENE, 4, np.random.default_rng(0))[:1], SCENE)


def test_a_travelling_or_faded_background_is_measured():
    frames, _ = render_clip(TEXTURED, 16, np.random.default_rng(0))
    travelling = np.stack([np.roll(frame, index, axis=1) for index, frame in enumerate(frames)])  # a camera pan
    moved = score_clip(travelling, TEXTURED)
    assert moved["background_change"] > 20 and moved["texture_contrast"] == pytest.approx(1.0, abs=0.02)
    grey = frames.astype(np.float32).mean(-1, keepdims=True)
    faded = (0.5 * frames + 0.5 * grey.mean((1, 2), keepdims=True)).astype(np.uint8)  # stripes at half contrast
    halved = score_clip(faded, TEXTURED)
    assert halved["texture_contrast"] == pytest.approx(0.5, abs=0.03) and halved["background_change"] < 0.5
    plain = np.stack([np.where(frame > 0, frame, 0) for frame in render_clip(
        dataclasses.replace(TEXTURED, style="plain"), 16, np.random.default_rng(0))[0]])  # fmt: skip
    assert score_clip(plain, TEXTURED)["texture_contrast"] < 0.05
