"""Per-clip Shapes-world scores from the detector (`shapes-world.md`, "What is measured")."""

from collections import Counter

import numpy as np

from ..data.shapes import COLOURS, SHAPES, ShapeScene, render_background
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
        between frames, 0-255); `background_change` (mean absolute change of the background pixels from the
        first frame, 0-255: 0 for a still background, whatever it looks like); `jerk` (mean norm of the
        centroid's second difference, pixels); and, for a striped or checkered background, `texture_contrast`
        (the background's standard deviation over the prompted background's, mean over frames: 1 keeps the
        texture's contrast, 0 is plain; also for a single frame).
    """
    # a concept shape or colour competes with the world's
    shapes = SHAPES if scene.shape in SHAPES else (*SHAPES, scene.shape)
    colours = tuple(COLOURS) if scene.colour in COLOURS else (*COLOURS, scene.colour)
    detections = detect_clip(frames, shapes, colours)
    scores = {
        f"fidelity_{name}": float(np.mean([getattr(d, name) == getattr(scene, name) for d in detections]))
        for name in ATTRIBUTES
    }
    scores["fidelity"] = float(np.mean([scores[f"fidelity_{name}"] for name in ATTRIBUTES]))
    found = [d for d in detections if d.found]
    scores["found"] = len(found) / len(detections)
    masks = _dilate(np.stack([object_mask(frame) for frame in frames]))  # edges are blends, not background
    if scene.style != "plain":
        scores["texture_contrast"] = texture_contrast(frames, masks, scene)
    if len(detections) == 1:  # a still image: fidelity (and texture) only
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
    background = ~(masks[1:] | masks[:-1])
    change = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(-1)
    scores["background_flicker"] = float(change[background].mean()) if background.any() else 0.0
    still = ~(masks[1:] | masks[:1])
    drift = np.abs(frames[1:].astype(np.float32) - frames[:1].astype(np.float32)).mean(-1)
    scores["background_change"] = float(drift[still].mean()) if still.any() else 0.0
    return scores


def texture_contrast(frames: np.ndarray, masks: np.ndarray, scene: ShapeScene) -> float:
    """
    How much of a textured background's contrast a clip keeps: per frame, the standard deviation of the background
    pixels' grey level over that of the prompted background (rendered) at the same pixels, averaged over frames.

    Args:
        frames (`np.ndarray`): `(F, H, W, 3)` `uint8`.
        masks (`np.ndarray`): `(F, H, W)` boolean, the (grown) object pixels to leave out.
        scene ([`ShapeScene`]): The prompt; its style must be striped or checkered.
    """
    template = render_background(scene, frames.shape[1]).astype(np.float32).mean(-1)
    grey = frames.astype(np.float32).mean(-1)
    ratios = []
    for frame, mask in zip(grey, masks):
        keep = ~mask
        if keep.sum() < 2 or template[keep].std() == 0:
            continue
        ratios.append(frame[keep].std() / template[keep].std())
    return float(np.mean(ratios)) if ratios else 0.0


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
