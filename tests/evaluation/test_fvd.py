"""Fréchet distance against closed forms, FVD plumbing with a random-weight TorchScript I3D stand-in, and the
Shapes FVD-analog with the shipped classifier on real vs broken clips."""

import numpy as np
import pytest
import torch
from torch import nn

from harivo.data import FULL_WORLD, render_clip
from harivo.evaluation.fvd import (
    I3DFeatureExtractor,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    fvd,
    shapes_fvd,
)


def test_identical_gaussians_are_at_distance_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T + np.eye(5)
    assert frechet_distance(np.ones(5), sigma, np.ones(5), sigma) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_covariances_match_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # = 10 + 4 + 1
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)
    assert expected == pytest.approx(15.0)


def test_full_covariances_match_the_eigenvalues_of_the_product():
    # Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2 (similar to a PSD matrix).
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_sample_statistics_converge_to_the_population_distance():
    rng = np.random.default_rng(2)
    real = rng.normal(0.0, 1.0, size=(20000, 2))
    generated = rng.normal([3.0, 0.0], [1.0, 2.0], size=(20000, 2))
    assert frechet_distance_from_features(real, generated) == pytest.approx(9.0 + 1.0, rel=0.03)


def test_statistics_reject_bad_input():
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="Mismatched"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


class TinyI3D(nn.Module):
    """A random-weight stand-in with the call signature of the `i3d_torchscript.pt` FVD network."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=3, stride=(1, 4, 4), padding=1)
        self.logits = nn.Linear(8, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        features = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))
        return features if return_features else self.logits(features)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.script(TinyI3D()).save(str(path))
    return path


def _clips(count: int, seed: int, num_frames: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_clip(FULL_WORLD.sample(rng), num_frames, rng)[0] for _ in range(count)]


def test_i3d_extractor_loads_torchscript_resizes_and_returns_features(i3d_file):
    extractor = I3DFeatureExtractor(i3d_file)
    features = extractor(_clips(3, 0), batch_size=2)
    assert features.shape == (3, 8) and np.isfinite(features).all()


def test_fvd_with_i3d_separates_real_from_noise(i3d_file):
    extractor = I3DFeatureExtractor(i3d_file)
    real, other_real = _clips(12, 0), _clips(12, 1)
    noise = [np.random.default_rng(i).integers(0, 256, clip.shape, dtype=np.uint8) for i, clip in enumerate(real)]
    assert fvd(real, other_real, extractor) < fvd(real, noise, extractor)


def test_missing_i3d_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"i3d_torchscript\.pt"):
        I3DFeatureExtractor(tmp_path / "nope.pt")


def test_shapes_fvd_analog_ranks_real_clips_first():
    real, other_real = _clips(32, 10, 16), _clips(32, 11, 16)
    rng = np.random.default_rng(0)
    shuffled = [clip[rng.permutation(len(clip))] for clip in other_real]
    static = [np.repeat(clip[:1], len(clip), axis=0) for clip in other_real]
    noisy = [np.clip(c + rng.normal(0, 60, c.shape), 0, 255).astype(np.uint8) for c in other_real]
    baseline = shapes_fvd(real, other_real)
    for broken in (shuffled, static, noisy):
        assert shapes_fvd(real, broken) > 2 * baseline
