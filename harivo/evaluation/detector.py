"""The Shapes-world detector: reads back, from any frame, the object and background a caption describes.

Exact on rendered frames and tolerant of generated ones: the object is the saturated part of the frame
(backgrounds are grey levels), its colour the nearest palette colour, its shape and size the best-overlapping
rendered template at its centroid, the background the nearest rendered background (colour x style).
"""

import functools
from dataclasses import dataclass

import numpy as np

from ..data.shapes import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    PALETTE,
    SHAPES,
    SIZES,
    STYLES,
    ShapeScene,
    render_background,
    render_frame,
)

SATURATION_THRESHOLD = 60  # max(R, G, B) - min(R, G, B) above which a pixel belongs to the object
MIN_OBJECT_PIXELS = 6


@dataclass
class FrameDetection:
    """What one frame shows; object fields are `None` when no object is found."""

    background: str
    style: str
    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    center: tuple[float, float] | None = None  # (x, y) in pixels
    area: float = 0.0  # object pixels
    shape_iou: float = 0.0  # overlap with the best template

    @property
    def found(self) -> bool:
        return self.colour is not None


def object_mask(frame: np.ndarray) -> np.ndarray:
    channels = frame.astype(np.int16)
    return channels.max(-1) - channels.min(-1) > SATURATION_THRESHOLD


def _nearest(value: np.ndarray, table: dict) -> str:
    names = list(table)
    distances = [np.linalg.norm(value - np.asarray(table[n], dtype=np.float32)) for n in names]
    return names[int(np.argmin(distances))]


@functools.lru_cache(maxsize=8)
def _background_templates(resolution: int) -> dict[tuple[str, str], np.ndarray]:
    return {
        (background, style): render_background(ShapeScene("circle", "red", "small", background, style), resolution)
        for background in BACKGROUNDS
        for style in STYLES
    }


def _classify_background(frame: np.ndarray, mask: np.ndarray) -> tuple[str, str]:
    keep = ~mask
    best, best_error = ("black", "plain"), np.inf
    for (background, style), template in _background_templates(frame.shape[0]).items():
        error = np.abs(template.astype(np.float32) - frame.astype(np.float32))[keep].mean()
        if error < best_error:
            best, best_error = (background, style), error
    return best


def _classify_shape(
    mask: np.ndarray, center: tuple[float, float], shapes: tuple[str, ...] = SHAPES
) -> tuple[str, str, float]:
    resolution = mask.shape[0]
    best, best_iou = ("circle", "small"), -1.0
    for shape in shapes:
        for size in SIZES:
            scene = ShapeScene(shape, "red", size, "black", "plain")
            template = object_mask(render_frame(scene, center, resolution))
            union = np.logical_or(template, mask).sum()
            iou = np.logical_and(template, mask).sum() / max(union, 1)
            if iou > best_iou:
                best, best_iou = (shape, size), iou
    return (*best, float(best_iou))


def detect_frame(
    frame: np.ndarray, shapes: tuple[str, ...] = SHAPES, colours: tuple[str, ...] = tuple(COLOURS)
) -> FrameDetection:
    """Detect the object and background of one `(H, W, 3)` `uint8` frame; its shape is the best of `shapes` and its
    colour the nearest of `colours` (the world's; add a concept shape or colour, e.g. `"heart"` or `"orange"`, to
    score prompts that ask for one)."""
    mask = object_mask(frame)
    background, style = _classify_background(frame, mask)
    if mask.sum() < MIN_OBJECT_PIXELS:
        return FrameDetection(background, style)
    ys, xs = np.nonzero(mask)
    center = (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5)
    colour = _nearest(frame[mask].astype(np.float32).mean(0), {name: PALETTE[name] for name in colours})
    shape, size, iou = _classify_shape(mask, center, shapes)
    return FrameDetection(background, style, colour, shape, size, center, float(mask.sum()), iou)


def detect_clip(
    frames: np.ndarray, shapes: tuple[str, ...] = SHAPES, colours: tuple[str, ...] = tuple(COLOURS)
) -> list[FrameDetection]:
    """Detect every frame of a `(F, H, W, 3)` `uint8` clip."""
    return [detect_frame(frame, shapes, colours) for frame in frames]


def motion_direction(centers: np.ndarray, min_distance: float = 4.0) -> str | None:
    """The direction (`left`/`right`/`up`/`down`) of a centroid path `(F, 2)`, or `None` if it moved less."""
    displacement = centers[-1] - centers[0]
    if np.linalg.norm(displacement) < min_distance:
        return None
    unit = displacement / np.linalg.norm(displacement)
    return max(DIRECTIONS, key=lambda name: float(np.dot(unit, DIRECTIONS[name])))
