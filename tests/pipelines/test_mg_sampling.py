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
