"""The embedded default model: present, small, loadable by diffusers as it is, and it draws what it is asked."""

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from harivo import HarivoAdapter, load_default_pipeline
from harivo.data import ShapeScene
from harivo.defaults import DEFAULT_MODEL_DIR, DEFAULT_PROMPT, default_model_paths
from harivo.evaluation.metrics import score_clip
from harivo.schedulers import default_guidance_rescale, make_scheduler


def test_default_model_is_under_30_megabytes():
    size = sum(path.stat().st_size for path in DEFAULT_MODEL_DIR.rglob("*") if path.is_file())
    assert size < 30 * 2**20


def test_base_model_loads_as_a_stable_diffusion_pipeline_and_adapter_fits_it():
    base, adapter = default_model_paths()
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    HarivoAdapter.from_pretrained(adapter).check_compatible(pipe.unet.config)
    assert pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1) == 64


def test_default_model_draws_the_prompted_colour_and_background():
    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(
        DEFAULT_PROMPT, num_frames=8, num_inference_steps=10, generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames[0]  # fmt: skip
    frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    scores = score_clip(frames, ShapeScene.from_caption(DEFAULT_PROMPT))
    assert scores["found"] >= 0.75 and scores["fidelity_colour"] >= 0.75, scores


def test_every_offered_sampler_keeps_the_models_schedule_or_is_refused():
    import pytest

    from harivo.schedulers import SCHEDULERS, is_zero_terminal_snr, make_scheduler

    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    base = pipe.scheduler
    assert is_zero_terminal_snr(base)
    accepted = []
    for name in SCHEDULERS:
        try:
            pipe.scheduler = make_scheduler(name, base)
            pipe.check_inputs("x", 8, 64, 64, 10, 7.5, None, None, None, 0.0, (0, 0.5), "frame_difference", "np", [])
        except ValueError as error:
            assert name in ("pndm", "ddpm", "euler-ancestral"), f"{name}: {error}"
            continue
        accepted.append(name)
        scheduler = pipe.scheduler
        torch.testing.assert_close(scheduler.alphas_cumprod.float(), base.alphas_cumprod.float(), atol=1e-6, rtol=0)
        assert scheduler.config.prediction_type == base.config.prediction_type == "v_prediction"
        scheduler.set_timesteps(10)
        assert int(scheduler.timesteps[0]) == 999  # starts at the pure-noise step, as trained
        frames = pipe(DEFAULT_PROMPT, num_frames=8, num_inference_steps=10, guidance_rescale=0.7,
                      generator=torch.Generator().manual_seed(0), output_type="np").frames[0]  # fmt: skip
        frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
        scores = score_clip(frames, ShapeScene.from_caption(DEFAULT_PROMPT))
        assert scores["found"] >= 0.75 and scores["fidelity_colour"] >= 0.75, (name, scores)
    assert accepted == ["ddim", "euler", "dpm-solver++", "unipc", "lcm", "tcd"]
    with pytest.raises(ValueError, match="zero-terminal-SNR"):
        make_scheduler("pndm", base)


def test_a_striped_background_survives_and_holds_still_while_the_object_moves():
    """The video data never shows a textured background; the frozen image model's stripes must reach the video."""
    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("dpm-solver++", pipe.scheduler)  # as `harivo generate` samples by default
    prompt = "a large red circle moving right on a striped black background"
    videos = pipe(
        [prompt] * 2, num_frames=16, num_inference_steps=15, generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        guidance_rescale=default_guidance_rescale(pipe.scheduler), output_type="np",
    ).frames  # fmt: skip
    scores = [
        score_clip((np.clip(v, 0, 1) * 255).round().astype(np.uint8), ShapeScene.from_caption(prompt)) for v in videos
    ]
    assert all(s["fidelity_style"] >= 0.9 and s["texture_contrast"] >= 0.8 for s in scores), scores
    assert all(s["background_change"] < 8 and s["travel"] > 4 for s in scores), scores


def test_sizes_whose_latents_do_not_halve_evenly_run_with_the_subject_mask():
    """72 and 60 pixels are latents of 18 and 15, halved to 9 and 8 (rounding up): the subject's cross-attention
    grid must follow the U-Net's own rounding."""
    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(DEFAULT_PROMPT, num_frames=4, height=72, width=60, num_inference_steps=2, output_type="np").frames
    assert frames.shape == (1, 4, 72, 60, 3)
