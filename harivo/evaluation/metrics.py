"""Per-clip Shapes-world scores from the detector (`shapes-world.md`, "What is measured")."""

from collections import Counter

import numpy as np

from ..data.shapes import ShapeScene
from .detector import detect_clip, motion_direction, object_mask

ATTRIBUTES = ("colour", "shape", "size", "background", "style")
MIN_TRAVEL = 4.0  # pixels at 64 px: "far enough" for a motion to count


def score_clip(frames: np.ndarray, scene: ShapeScene) -> dict[str, float]:
    """
    Score one clip against the scene its prompt describes.

    Args:
        frames (`np.ndarray`): `(F, H, W, 3)` `uint8`.
        scene ([`ShapeScene`]): The prompt, parsed (`ShapeScene.from_caption`).

    Returns:
        `dict[str, float]`: `fidelity_<attribute>` (share of frames matching the prompt, a missing object counts
        as a miss) and `fidelity` (their mean); `found` (share of frames with an object); for a clip (more than
        one frame) also `motion_correct` (1 if
        the centroid travels at least `MIN_TRAVEL` pixels in the prompted direction); `travel` (pixels moved
        along it); `identity` (share of frames showing the clip's most common colour+shape); `area_variation`
        (std / mean of the object area); `background_flicker` (mean absolute change of background pixels
        between frames, 0-255); `jerk` (mean norm of the centroid's second difference, pixels).
    """
    detections = detect_clip(frames)
    scores = {
        f"fidelity_{name}": float(np.mean([getattr(d, name) == getattr(scene, name) for d in detections]))
        for name in ATTRIBUTES
    }
    scores["fidelity"] = float(np.mean([scores[f"fidelity_{name}"] for name in ATTRIBUTES]))
    found = [d for d in detections if d.found]
    scores["found"] = len(found) / len(detections)
    if len(detections) == 1:  # a still image: fidelity only
        return scores
    if len(found) >= 2:
        centers = np.array([d.center for d in found])
        if scene.direction is not None:
            direction = np.array({"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[scene.direction])
            scores["travel"] = float(np.dot(centers[-1] - centers[0], direction))
            scores["motion_correct"] = float(motion_direction(centers, MIN_TRAVEL) == scene.direction)
        identities = Counter((d.colour, d.shape) for d in found)
        scores["identity"] = identities.most_common(1)[0][1] / len(detections)
        areas = np.array([d.area for d in found])
        scores["area_variation"] = float(areas.std() / max(areas.mean(), 1e-6))
        scores["jerk"] = float(np.linalg.norm(np.diff(centers, n=2, axis=0), axis=1).mean()) if len(found) > 2 else 0.0
    else:
        scores.update(identity=0.0, area_variation=1.0, jerk=0.0)
        if scene.direction is not None:
            scores.update(travel=0.0, motion_correct=0.0)
    masks = _dilate(np.stack([object_mask(frame) for frame in frames]))  # edges are blends, not background
    background = ~(masks[1:] | masks[:-1])
    change = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(-1)
    scores["background_flicker"] = float(change[background].mean()) if background.any() else 0.0
    return scores


def _dilate(masks: np.ndarray, radius: int = 1) -> np.ndarray:
    """Grow `(F, H, W)` boolean masks by `radius` pixels (square neighbourhood)."""
    padded = np.pad(masks, ((0, 0), (radius, radius), (radius, radius)))
    height, width = masks.shape[1:]
    grown = np.zeros_like(masks)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            grown |= padded[:, dy : dy + height, dx : dx + width]
    return grown


def mean_scores(all_scores: list[dict[str, float]]) -> dict[str, float]:
    """Average per-clip scores (keys present in every clip)."""
    keys = set.intersection(*(set(s) for s in all_scores))
    return {key: float(np.mean([s[key] for s in all_scores])) for key in sorted(keys)}
