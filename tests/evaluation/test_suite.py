"""The Shapes evaluation suite: prompt groups, scores with spread over seeds, diversity, FVD-analog, report."""

import json

import numpy as np
import pytest

from harivo.data import IMAGE_WORLD, VIDEO_WORLD, ShapeScene
from harivo.data.shapes import DIRECTIONS
from harivo.evaluation.suite import (
    IN_DISTRIBUTION,
    OUT_OF_DISTRIBUTION,
    TEXTURED,
    EvalSettings,
    diversity,
    evaluation_prompts,
    format_table,
    generate_clips,
    render_reference_clips,
    score_clips,
    through_vae,
    write_results,
)

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def groups():
    return evaluation_prompts(4)


@pytest.fixture(scope="module")
def real(groups):
    prompts = [p for g in groups.values() for p in g]
    return render_reference_clips(prompts, SEEDS, 12)


def test_prompt_groups_split_on_the_video_data(groups):
    inside = [ShapeScene.from_caption(p) for p in groups[IN_DISTRIBUTION]]
    outside = [ShapeScene.from_caption(p) for p in groups[OUT_OF_DISTRIBUTION]]
    assert all(VIDEO_WORLD.contains(s) for s in inside)
    assert not any(VIDEO_WORLD.contains(s) or IMAGE_WORLD.is_held_out(s) for s in outside)
    textured = [ShapeScene.from_caption(p) for p in groups[TEXTURED]]
    assert all(VIDEO_WORLD.shapes.count(s.shape) and VIDEO_WORLD.colours.count(s.colour) for s in textured)
    assert sorted(s.style for s in textured) == ["checkered", "checkered", "striped", "striped"]
    assert not any(IMAGE_WORLD.is_held_out(s) for s in textured)
    for scenes in (inside, outside, textured):
        assert sorted(s.direction for s in scenes) == sorted(DIRECTIONS)
    assert evaluation_prompts(4) == groups  # fixed, so that runs compare
    assert list(evaluation_prompts(4, textured=False)) == [IN_DISTRIBUTION, OUT_OF_DISTRIBUTION]


def test_real_clips_score_at_the_top_and_broken_ones_lower(groups, real):
    reference = render_reference_clips([p for g in groups.values() for p in g], SEEDS, 12, offset=1000)
    scores = score_clips(real, groups, reference=reference)
    for group in groups:
        result = scores[group]
        assert result["fidelity"]["mean"] == 1.0 and result["motion_correct"]["mean"] == 1.0
        assert result["background_flicker"]["mean"] == 0.0 and result["num_clips"] == 12
        assert result["diversity"]["mean"] > 5.0 and result["background_change"]["mean"] == 0.0
    assert scores[TEXTURED]["texture_contrast"]["mean"] == pytest.approx(1.0)
    assert "texture_contrast" not in scores[IN_DISTRIBUTION]  # plain backgrounds only
    rng = np.random.default_rng(0)
    shuffled = {s: [clip[rng.permutation(len(clip))] for clip in clips] for s, clips in real.items()}
    same_start = dict.fromkeys(real, real[0])  # every seed draws the same clip: no diversity
    broken = score_clips(shuffled, groups, reference=reference)
    collapsed = score_clips(same_start, groups, reference=reference)
    for group in groups:
        assert broken[group]["jerk"]["mean"] > 5 * scores[group]["jerk"]["mean"] + 1
        assert broken[group]["fvd"]["mean"] > scores[group]["fvd"]["mean"]
        assert collapsed[group]["diversity"]["mean"] == 0.0
        assert collapsed[group]["fidelity"]["std"] == 0.0


def test_rendered_clips_through_the_vae_are_the_floor_of_a_latent_model(groups, real):
    from diffusers import AutoencoderKL

    from harivo.defaults import default_model_paths

    vae = AutoencoderKL.from_pretrained(default_model_paths()[0], subfolder="vae").eval()
    textured = {seed: clips[-2:] for seed, clips in real.items()}  # a striped and a checkered clip per seed
    decoded = through_vae(textured, vae, batch_size=5)  # chunks that do not divide the 12 frames
    assert list(decoded) == list(textured)
    assert all(d.shape == r.shape and d.dtype == np.uint8 for s in real for d, r in zip(decoded[s], textured[s]))
    group = {TEXTURED: groups[TEXTURED][-2:]}
    scores = score_clips(decoded, group)[TEXTURED]
    assert scores["fidelity"]["mean"] > 0.9 and scores["motion_correct"]["mean"] == 1.0
    # the VAE redraws the background around the moving object a little differently in every frame ...
    assert 0.3 < scores["background_change"]["mean"] < 6.0 and scores["background_flicker"]["mean"] > 0.3
    # ... but a still clip stays exactly still: the latents are the distribution's mode, not a draw
    still = {0: [np.repeat(textured[0][0][:1], 4, axis=0)]}
    frames = through_vae(still, vae)[0][0]
    assert (frames == frames[:1]).all() and not (frames == still[0][0]).all()


def test_diversity_is_the_spread_of_start_positions():
    prompt = "a small red circle moving left on a plain black background"
    clips = render_reference_clips([prompt], SEEDS, 4)
    assert diversity([clips[s][0] for s in SEEDS]) > 0
    assert diversity([clips[0][0]] * 3) == 0.0


def test_every_seed_needs_every_prompt(groups, real):
    with pytest.raises(ValueError, match="one clip per prompt"):
        score_clips({0: real[0][:-1]}, groups)


def test_table_and_results_files(tmp_path, groups, real):
    rows = {"rendered clips": score_clips(real, groups)}
    table = format_table(rows)
    assert "rendered clips" in table and "fidelity ↑" in table and "1.00 ± 0.00" in table
    assert f"**{IN_DISTRIBUTION}**" in table and f"**{OUT_OF_DISTRIBUTION}**" in table
    folder = write_results(tmp_path / "out", rows, {"note": "test"})
    assert json.loads((folder / "results.json").read_text())["rows"]["rendered clips"][IN_DISTRIBUTION]
    assert "| method" in (folder / "table.md").read_text()


def test_generate_clips_lays_out_seeds_and_prompts(base_dir, make_adapter):
    from harivo import HarivoPipeline

    pipe = HarivoPipeline.from_pretrained(base_dir, adapter=make_adapter())
    settings = EvalSettings(seeds=(0, 1), num_frames=3, num_inference_steps=2, batch_size=2)
    clips = generate_clips(pipe, ["a", "b", "c"], settings, progress=False)
    assert list(clips) == [0, 1] and all(len(v) == 3 for v in clips.values())
    assert clips[0][0].dtype == np.uint8 and clips[0][0].shape[0] == 3
    assert not np.array_equal(clips[0][0], clips[1][0])  # other seed, other clip
