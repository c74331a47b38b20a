"""How well a controlled video follows its control: Shapes-world paths the video data never had, their silhouettes
(the Shapes ControlNet's condition) and per-clip scores against them."""

import math

import numpy as np

from ..data.shapes import ShapeScene, render_silhouette
from .detector import detect_clip
from .metrics import score_clip


def _diagonal(t: np.ndarray) -> np.ndarray:
    return np.stack([14 + 36 * t, 14 + 36 * t], -1)


def _arc(t: np.ndarray) -> np.ndarray:  # half a circle over the top, left to right
    angle = math.pi * (1 - t)
    return np.stack([32 + 19 * np.cos(angle), 42 - 24 * np.sin(angle)], -1)


def _zigzag(t: np.ndarray) -> np.ndarray:  # two teeth
    tooth = 1 - np.abs((t * 4) % 2 - 1)
    return np.stack([13 + 38 * t, 20 + 24 * tooth], -1)


def _slow_right(t: np.ndarray) -> np.ndarray:  # 0.5 px a frame at 16 frames: a third of the data's slowest
    return np.stack([26 + 7.5 * t, 32 + 0 * t], -1)


def _fast_up_left(t: np.ndarray) -> np.ndarray:  # about 3.1 px a frame at 16 frames: faster than the data's 2.5
    return np.stack([50 - 34 * t, 46 - 30 * t], -1)


# Centre paths in pixels at a 64-pixel frame, as functions of the clip's progress t in [0, 1]; a large object
# (radius 11) stays inside the frame on each. The video data has only straight paths at 1.5-2.5 px a frame along an
# axis: none of these.
CONTROL_PATHS = {
    "diagonal": _diagonal,
    "arc": _arc,
    "zig-zag": _zigzag,
    "slow right": _slow_right,
    "fast up-left": _fast_up_left,
}


def control_path(name: str, num_frames: int, resolution: int = 64) -> np.ndarray:
    """The centres `(num_frames, 2)` `(x, y)` in pixels of path `name` of `CONTROL_PATHS`."""
    if name not in CONTROL_PATHS:
        raise ValueError(f"Unknown control path {name!r}; choose among {', '.join(CONTROL_PATHS)}.")
    progress = np.linspace(0.0, 1.0, num_frames)
    return CONTROL_PATHS[name](progress) * resolution / 64


def silhouette_clip(scene: ShapeScene, centers: np.ndarray, resolution: int = 64) -> np.ndarray:
    """The silhouettes of `scene`'s object at `centers`: `(F, H, W, 3)` `uint8`, white on black."""
    return np.stack([render_silhouette(scene, tuple(center), resolution) for center in centers])


def control_scores(
    frames: np.ndarray, scene: ShapeScene, centers: np.ndarray, controlled: list[int] | None = None
) -> dict[str, float]:
    """
    Score a controlled clip against its prompt and the path its conditions drew.

    Args:
        frames (`np.ndarray`): `(F, H, W, 3)` `uint8`.
        scene ([`ShapeScene`]): The prompt, parsed (no motion phrase needed).
        centers (`np.ndarray`): `(F, 2)` the silhouettes' centres in pixels, every frame's (also where only some
            frames were controlled: the path the object should take).
        controlled (`list[int]`, *optional*): The controlled frames (default: all).

    Returns:
        `dict[str, float]`: `score_clip`'s scores (fidelity, identity, jerk, background flicker, ...) plus
        `position_error` (mean distance in pixels between the detected object's centre and the path's, over frames
        with an object; a frame without one counts as the frame's half-diagonal), `follow` (share of frames with the
        object within 4 px of the path); with `controlled`, `keyframe_error` (the mean of that distance over the
        controlled frames) and `between_error` (over the others).
    """
    scores = score_clip(frames, scene)
    detections = detect_clip(frames)
    miss = frames.shape[1] * math.sqrt(2) / 2
    errors = np.array(
        [np.linalg.norm(np.asarray(d.center) - c) if d.found else miss for d, c in zip(detections, centers)]
    )
    scores["position_error"] = float(errors.mean())
    scores["follow"] = float((errors <= 4.0).mean())
    if controlled is not None:
        others = [i for i in range(len(frames)) if i not in controlled]
        scores["keyframe_error"] = float(errors[controlled].mean())
        scores["between_error"] = float(errors[others].mean()) if others else 0.0
    return scores
