"""Fréchet video distance: the statistics, the Shapes-world FVD-analog and FVD with a user-given I3D network.

FVD (Unterthiner et al., 2019) fits a Gaussian to the features of real clips and one to the features of generated
clips, and reports the Fréchet distance between the two:

    FD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

The features come from a video classifier: I3D trained on Kinetics-400 for real data, the small
[`ShapesVideoClassifier`] for the Shapes world (the FVD-analog). I3D's weights cannot ship with harivo; pass the
TorchScript export most FVD code uses (`i3d_torchscript.pt`, the file StyleGAN-V's and many video papers'
evaluation loads), downloaded once by the user.
"""

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .classifier import ShapesVideoClassifier, clips_to_tensor, load_shapes_classifier


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `(D,)` and covariance `(D, D)` of `(N, D)` features (`N >= 2`)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"Need (N, D) features with N >= 2, got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """
    Fréchet distance between `N(mu1, sigma1)` and `N(mu2, sigma2)`.

    `Tr((S1 S2)^(1/2))` is computed as `Tr((S1^(1/2) S2 S1^(1/2))^(1/2))`, a symmetric positive semi-definite
    matrix, with eigendecompositions only: stable for the rank-deficient covariances of small sample sets, and no
    scipy needed.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"Mismatched statistics: {mu1.shape}, {sigma1.shape} vs {mu2.shape}, {sigma2.shape}.")
    root1 = _psd_sqrt(sigma1)
    cross = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_distance_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two `(N, D)` feature sets."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(generated))


@torch.no_grad()
def shapes_features(
    clips: np.ndarray | list[np.ndarray], classifier: ShapesVideoClassifier | None = None, batch_size: int = 32
) -> np.ndarray:
    """Shapes-classifier features `(N, D)` of `uint8` clips `(N, F, H, W, 3)`."""
    classifier = classifier or load_shapes_classifier()
    clips = list(clips)
    features = [
        classifier.features(clips_to_tensor(clips[i : i + batch_size]).to(classifier.device, classifier.dtype))
        for i in range(0, len(clips), batch_size)
    ]
    return torch.cat(features).float().cpu().numpy()


def shapes_fvd(
    real_clips: np.ndarray | list[np.ndarray],
    generated_clips: np.ndarray | list[np.ndarray],
    classifier: ShapesVideoClassifier | None = None,
) -> float:
    """The Shapes-world FVD-analog between real (rendered) and generated `uint8` clips."""
    classifier = classifier or load_shapes_classifier()
    return frechet_distance_from_features(
        shapes_features(real_clips, classifier), shapes_features(generated_clips, classifier)
    )


class I3DFeatureExtractor:
    """
    I3D features for FVD, from a TorchScript file the user provides (weights cannot be downloaded by harivo).

    The expected module is the common `i3d_torchscript.pt` export: called as `model(videos, **kwargs)` on
    `(N, 3, T, 224, 224)` float videos in `[-1, 1]` it returns `(N, 400)` logits, or the 400-d pre-logit features
    with `return_features=True`. Clips are resized to 224x224 here (bilinear, per frame), as FVD does.

    Args:
        path (`str` or `Path`): The TorchScript file.
        device (`str` or `torch.device`, defaults to `"cpu"`).
        call_kwargs (`dict`, *optional*): Keyword arguments of the module's call; defaults to
            `{"rescale": False, "resize": False, "return_features": True}` (this class already resizes).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", call_kwargs: dict | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"No I3D TorchScript file at {path}. FVD needs the Kinetics-400 I3D network; download"
                " `i3d_torchscript.pt` once (see docs/evaluation.md) and pass its path."
            )
        self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = torch.device(device)
        self.call_kwargs = (
            {"rescale": False, "resize": False, "return_features": True} if call_kwargs is None else call_kwargs
        )

    @torch.no_grad()
    def __call__(self, clips: np.ndarray | list[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """`uint8` clips `(N, F, H, W, 3)` to `(N, D)` features."""
        features = []
        clips = list(clips)
        for start in range(0, len(clips), batch_size):
            videos = clips_to_tensor(clips[start : start + batch_size]).to(self.device)  # (n, 3, F, H, W)
            n, frames = videos.shape[0], videos.shape[2]
            resized = F.interpolate(
                videos.transpose(1, 2).flatten(0, 1), size=(224, 224), mode="bilinear", align_corners=False
            )  # (n*F, 3, 224, 224)
            videos = resized.unflatten(0, (n, frames)).transpose(1, 2).contiguous()
            features.append(self.model(videos, **self.call_kwargs).float().cpu())
        return torch.cat(features).numpy()


def fvd(
    real_clips: Iterable[np.ndarray],
    generated_clips: Iterable[np.ndarray],
    extractor: Callable[[list[np.ndarray]], np.ndarray],
) -> float:
    """FVD between two sets of `uint8` clips `(F, H, W, 3)` with any feature extractor (e.g. `I3DFeatureExtractor`)."""
    return frechet_distance_from_features(extractor(list(real_clips)), extractor(list(generated_clips)))
