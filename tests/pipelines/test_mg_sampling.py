"""MG energies: the motion-path energy [ours] against the plain frame difference, on clips with known motion."""

import pytest
import torch

from harivo.pipelines import mg_sampling


def _blob_clip(step_x: float, step_y: float, num_frames: int = 6, size: int = 16) -> torch.Tensor:
    """`(1, 1, F, size, size)`: a Gaussian blob that moves `(step_x, step_y)` pixels per frame."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    frames = [torch.exp(-((xs - 6 - f * step_x) ** 2 + (ys - 7 - f * step_y) ** 2) / 4.0) for f in range(num_frames)]
    return torch.stack(frames)[None, None]


def _path(step_x: float, step_y: float, num_frames: int = 6) -> torch.Tensor:
    frames = torch.arange(num_frames, dtype=torch.float32)
    return torch.stack([frames * step_x, frames * step_y], dim=-1)[None]  # (1, F, 2)


def test_translate_moves_content_and_marks_what_entered():
    frames = torch.randn(2, 3, 8, 8)
    moved, valid = mg_sampling.translate(frames, torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
    torch.testing.assert_close(moved[0, :, :, 2:], frames[0, :, :, :-2])  # 2 pixels right
    torch.testing.assert_close(moved[1, :, :-1], frames[1, :, 1:])  # 1 pixel up
    assert valid[0, 0, :, :2].sum() == 0 and valid[0, 0, :, 2:].all()
    assert valid[1, 0, -1].sum() == 0 and valid[1, 0, :-1].all()
    half, _ = mg_sampling.translate(frames[:1], torch.tensor([[0.5, 0.0]]))  # sub-pixel: the bilinear mean
    torch.testing.assert_close(half[0, :, :, 1:], 0.5 * (frames[0, :, :, 1:] + frames[0, :, :, :-1]))


def test_motion_path_energy_is_lowest_along_the_true_path():
    clip = _blob_clip(1.0, 0.5)
    static = torch.zeros(1, 6, 2)
    # a zero path is the plain frame difference
    torch.testing.assert_close(mg_sampling.motion_path_energy(clip, static), mg_sampling.frame_difference_energy(clip))
    along = mg_sampling.motion_path_energy(clip, _path(1.0, 0.5))  # the half-pixel step blurs a little
    assert along < 0.02 * mg_sampling.motion_path_energy(clip, static)
    assert along < 0.02 * mg_sampling.motion_path_energy(clip, _path(-1.0, -0.5))
    integer = _blob_clip(1.0, -2.0)
    assert mg_sampling.motion_path_energy(integer, _path(1.0, -2.0)) < 1e-6
    # a still blob: the plain frame difference is zero, the energy along a path is not
    still = _blob_clip(0.0, 0.0)
    assert mg_sampling.frame_difference_energy(still) == 0
    assert mg_sampling.motion_path_energy(still, _path(1.0, 0.0)) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_motion_path_energy_has_gradients(dtype):
    clip = _blob_clip(1.0, 0.0).to(dtype).requires_grad_(True)
    energy = mg_sampling.motion_path_energy(clip, _path(-1.0, 0.0))
    (grad,) = torch.autograd.grad(energy, clip)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def _scene(num_frames: int = 6, size: int = 16, step: int = 1, background_moves: bool = False) -> torch.Tensor:
    """`(1, 1, F, size, size)`: a bright square travelling `step` pixels right per frame over vertical stripes."""
    stripes = (torch.arange(size) // 2 % 2).float().expand(size, size) * 0.5
    frames = []
    for f in range(num_frames):
        frame = torch.roll(stripes, f * step, dims=1) if background_moves else stripes.clone()
        frame[5:9, 2 + f * step : 6 + f * step] = 2.0
        frames.append(frame)
    return torch.stack(frames)[None, None]


def _square_mask(num_frames: int = 6, size: int = 16, step: int = 1, grow: int = 1) -> torch.Tensor:
    mask = torch.zeros(1, 1, num_frames, size, size)
    for f in range(num_frames):
        mask[..., f, 5 - grow : 9 + grow, 2 + f * step - grow : 6 + f * step + grow] = 1.0
    return mask


def test_projecting_the_subject_moves_it_and_keeps_the_background_still():
    path = _path(1.0, 0.0)
    clip = _scene()
    # a subject that already travels the path over a still background is left as it is
    torch.testing.assert_close(mg_sampling.project_onto_path(clip, path, mask=_square_mask(grow=0)), clip)
    # the whole-frame projection drags the stripes along and blurs them
    whole = mg_sampling.project_onto_path(clip, path)
    assert (whole[0, 0, -1] - clip[0, 0, -1]).abs()[12:].mean() > 0.2  # rows below the square
    # a background that drifts with the subject is held still, the subject still travels
    drifting = _scene(background_moves=True)
    held = mg_sampling.project_onto_path(drifting, path, mask=_square_mask())
    still_rows = held[0, 0, :, 12:]
    assert (still_rows - still_rows[:1]).abs().max() < 1e-5
    assert torch.equal(held[0, 0, :, 5:9].argmax(-1)[:, 0], torch.arange(2, 8))  # the square's left edge


def test_the_core_keeps_a_still_texture_the_mask_covers_from_travelling():
    path = _path(1.0, 0.0, num_frames=8)
    clip = _scene(num_frames=8)  # the square travels right over still stripes, two periods in all
    mask = _square_mask(num_frames=8)
    mask[..., 12:, :] = (clip[:, :, :, 12:, :] > 0.25).float()  # the mask also covers the stripes below the square
    union = mg_sampling.project_onto_path(clip, path, mask=mask)
    core = mg_sampling.project_onto_path(clip, path, mask=mask, core=True)
    assert (union[0, 0, -1, 12:] - clip[0, 0, -1, 12:]).abs().max() > 0.4  # the union carries the stripes along
    torch.testing.assert_close(core[0, 0, :, 12:], clip[0, 0, :, 12:])  # the core leaves them where they are
    torch.testing.assert_close(core[0, 0, :, :10], union[0, 0, :, :10])  # the square is moved as without the core
    # a mask that covers only what travels is moved the same with or without the core
    square = _square_mask(num_frames=8, grow=0)
    torch.testing.assert_close(mg_sampling.project_onto_path(clip, path, mask=square, core=True), clip)


def test_a_full_mask_is_the_whole_frame_projection_and_strength_blends():
    clip = torch.randn(2, 3, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    path = torch.cumsum(torch.rand(2, 5, 2, generator=torch.Generator().manual_seed(1)) * 0.25, dim=1)  # < 1.25 px
    ones = torch.ones(2, 1, 5, 8, 8)
    # a full mask moves the whole frame; only near the edges, where content enters, may they differ
    full, whole = mg_sampling.project_onto_path(clip, path, mask=ones), mg_sampling.project_onto_path(clip, path)
    torch.testing.assert_close(full[..., 2:-2, 2:-2], whole[..., 2:-2, 2:-2])
    half = mg_sampling.project_onto_path(clip, path, strength=0.5, mask=ones * 0.3)
    torch.testing.assert_close(half, 0.5 * (clip + mg_sampling.project_onto_path(clip, path, mask=ones * 0.3)))


def test_subject_mask_scales_each_frame_and_ramps():
    attention = {
        "coarse": torch.rand(2 * 4 * 3, 2, 2, generator=torch.Generator().manual_seed(0)),
        "fine": torch.rand(2 * 4 * 3, 4, 4, generator=torch.Generator().manual_seed(1)),
    }
    mask = mg_sampling.subject_mask(attention, num_videos=3, num_frames=4, size=(8, 8))  # the last 3 videos' rows
    assert mask.shape == (3, 1, 4, 8, 8) and mask.min() == 0.0 and mask.max() == 1.0
    peaked = torch.zeros(4, 4, 4)
    peaked[:, 1, 2] = 1.0
    sharp = mg_sampling.subject_mask({"only": peaked}, num_videos=1, num_frames=4, size=(4, 4), threshold=(0.9, 0.95))
    assert sharp[0, 0, :, 1, 2].eq(1).all() and sharp.sum() == 4


MG_SETTINGS = [
    ("frame_difference", "x0"),
    ("frame_difference", "full"),
    ("motion_path", "x0"),
    ("motion_path", "full"),
    ("attention", "full"),
]


@pytest.fixture(scope="module")
def default_pipeline():
    from harivo import load_default_pipeline

    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Every sampler with both of MG's gradients (where the clamped last step acts), every energy with at least two samplers
MG_SETTINGS_OF_SAMPLER = {
    "ddim": [MG_SETTINGS[0], MG_SETTINGS[3], MG_SETTINGS[4]],
    "euler": [MG_SETTINGS[2], MG_SETTINGS[1]],
    "dpm-solver++": [MG_SETTINGS[0], MG_SETTINGS[4]],
    "unipc": [MG_SETTINGS[2], MG_SETTINGS[3]],
}


@pytest.mark.parametrize("sampler", sorted(MG_SETTINGS_OF_SAMPLER))
def test_mg_on_every_step_draws_the_prompt_with_every_offered_sampler(default_pipeline, sampler):
    """MG over the whole schedule, as the README recommends, must not break the clip with any sampler the CLI offers.

    Euler, DPM-Solver++ and UniPC clamp the zero-terminal-SNR schedule's last `alpha_bar` from 0 to 2**-24: MG at that
    step once multiplied its shift by 4096 and drew a blob of the wrong colour on noise."""
    import numpy as np

    from harivo.data import ShapeScene
    from harivo.evaluation.metrics import score_clip
    from harivo.schedulers import make_scheduler

    pipe = default_pipeline
    base = pipe.scheduler
    prompt = "a large blue square moving up on a plain white background"
    scene = ShapeScene.from_caption(prompt)
    try:
        pipe.scheduler = make_scheduler(sampler, base)
        for energy, gradient in MG_SETTINGS_OF_SAMPLER[sampler]:
            for mg_scale in (40.0,):
                frames = pipe(
                    prompt, num_frames=8, num_inference_steps=10, mg_scale=mg_scale, mg_window=(0.0, 1.0),
                    mg_energy=energy, mg_gradient=gradient, generator=torch.Generator().manual_seed(0),
                    output_type="np",
                ).frames[0]  # fmt: skip
                scores = score_clip((np.clip(frames, 0, 1) * 255).round().astype(np.uint8), scene)
                setting = (sampler, energy, gradient, mg_scale)
                assert scores["found"] == 1 and scores["fidelity_colour"] == 1, (setting, scores)
                assert scores["fidelity_background"] == 1 and scores["background_change"] < 6, (setting, scores)
                assert scores["motion_correct"] == 1 and scores["jerk"] < 2, (setting, scores)
    finally:
        pipe.scheduler = base
