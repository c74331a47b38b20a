"""The Shapes world (`shapes-world.md`): procedural, seeded, captioned images and videos of one moving shape.

Every sample is a pure function of `(seed, index)`: no files, any size of set, identical on every machine.
The image world covers every attribute; the video world only a subset (the image-over-video asymmetry that
HARIVO's frozen-T2I claim is about).
"""

import dataclasses
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

SHAPES = ("circle", "square", "triangle", "star")
# Shapes the renderer draws but no caption, image or clip of the world has: concepts to teach a base model later
# (DreamBooth), scored by the detector when a prompt asks for one. Their names are not in the vocabulary.
CONCEPT_SHAPES = ("heart", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 210, 40),
    "magenta": (210, 50, 210),
    "cyan": (40, 205, 215),
}
# Colours the renderer draws but no caption of the world names: concept colours (a new palette) for LoRA styles.
CONCEPT_COLOURS = {"orange": (245, 130, 20)}
PALETTE = {**COLOURS, **CONCEPT_COLOURS}
# Backgrounds are grey levels (saturation 0), so an object is always the saturated part of a frame.
BACKGROUNDS = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128)}
BACKGROUND_SHADES = {"black": (70, 70, 70), "white": (185, 185, 185), "grey": (85, 85, 85)}
STYLES = ("plain", "striped", "checkered")
SIZES = {"small": 6.0, "large": 11.0}  # circumradius in pixels at a 64-pixel frame
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
STYLE_PERIOD = 8  # stripe width / checker cell in pixels at a 64-pixel frame
SPEED_RANGE = (1.5, 2.5)  # pixels per frame at a 64-pixel frame
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeScene:
    """What one sample shows; `direction` is `None` for a still image."""

    shape: str
    colour: str
    size: str
    background: str
    style: str
    direction: str | None = None

    def __post_init__(self):
        for name, value, domain in (
            ("shape", self.shape, SHAPES + CONCEPT_SHAPES),
            ("colour", self.colour, PALETTE),
            ("size", self.size, SIZES),
            ("background", self.background, BACKGROUNDS),
            ("style", self.style, STYLES),
        ):
            if value not in domain:
                raise ValueError(f"Unknown {name} {value!r}; the Shapes world has {', '.join(domain)}.")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"Unknown direction {self.direction!r}; the Shapes world has {', '.join(DIRECTIONS)}.")

    @property
    def caption(self) -> str:
        motion = f" moving {self.direction}" if self.direction else ""
        return f"a {self.size} {self.colour} {self.shape}{motion} on a {self.style} {self.background} background"

    @classmethod
    def from_caption(cls, caption: str) -> "ShapeScene":
        """Parse a caption of the world's template (the inverse of `caption`)."""
        words = caption.lower().replace(",", " ").split()
        found = {}
        for name, domain in (
            ("shape", SHAPES),
            ("colour", COLOURS),
            ("size", SIZES),
            ("background", BACKGROUNDS),
            ("style", STYLES),
            ("direction", DIRECTIONS),
        ):
            hits = [word for word in words if word in domain]
            if name != "direction" and len(hits) != 1:
                raise ValueError(
                    f"Cannot read the {name} from {caption!r}: expected one of {', '.join(domain)}; captions look"
                    f" like {cls('circle', 'red', 'small', 'black', 'plain', 'left').caption!r}."
                )
            found[name] = hits[0] if hits else None
        return cls(**found)


@dataclass(frozen=True)
class ShapesWorld:
    """The attribute domains a set draws from."""

    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    sizes: tuple[str, ...] = tuple(SIZES)
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    styles: tuple[str, ...] = STYLES
    directions: tuple[str, ...] = tuple(DIRECTIONS)
    held_out: tuple[tuple[tuple[str, str], ...], ...] = ()  # compositions never shown, e.g. ((shape, star), ...)

    def scenes(self, with_motion: bool = True) -> Iterator[ShapeScene]:
        """Every scene of this world, in a fixed order."""
        directions = self.directions if with_motion else (None,)
        for combo in itertools.product(
            self.shapes, self.colours, self.sizes, self.backgrounds, self.styles, directions
        ):
            if not self.is_held_out(scene := ShapeScene(*combo)):
                yield scene

    def sample(self, rng: np.random.Generator, with_motion: bool = True) -> ShapeScene:
        pick = lambda values: values[rng.integers(len(values))]  # noqa: E731
        while True:  # rejection sampling keeps the other compositions uniform
            direction = pick(self.directions) if with_motion else None
            scene = ShapeScene(
                pick(self.shapes), pick(self.colours), pick(self.sizes), pick(self.backgrounds), pick(self.styles),
                direction,
            )  # fmt: skip
            if not self.is_held_out(scene):
                return scene

    def is_held_out(self, scene: ShapeScene) -> bool:
        return any(all(getattr(scene, name) == value for name, value in pattern) for pattern in self.held_out)

    def contains(self, scene: ShapeScene) -> bool:
        return (
            not self.is_held_out(scene)
            and scene.shape in self.shapes
            and scene.colour in self.colours
            and scene.size in self.sizes
            and scene.background in self.backgrounds
            and scene.style in self.styles
            and (scene.direction is None or scene.direction in self.directions)
        )


# Compositions the text-to-image model never sees together (each attribute alone it sees often): the test of
# "draws compositions it never saw". The autoencoder, which reads no caption, sees every image (`FULL_WORLD`).
HELD_OUT_COMPOSITIONS = (
    (("shape", "star"), ("colour", "green")),
    (("shape", "square"), ("background", "white"), ("style", "checkered")),
    (("colour", "cyan"), ("size", "small"), ("background", "black")),
)
FULL_WORLD = ShapesWorld()
IMAGE_WORLD = ShapesWorld(held_out=HELD_OUT_COMPOSITIONS)
# DreamBooth's instance images: a concept is learned from clear views (large objects)
CONCEPT_WORLD = ShapesWorld(sizes=("large",), held_out=HELD_OUT_COMPOSITIONS)
VIDEO_WORLD = ShapesWorld(shapes=("circle", "square", "triangle"), colours=("red", "green", "blue"), styles=("plain",))


def vocabulary() -> list[str]:
    """Every word a Shapes caption can contain."""
    words = {"a", "moving", "on", "background", *SHAPES, *COLOURS, *SIZES, *BACKGROUNDS, *STYLES, *DIRECTIONS}
    return sorted(words)


def build_shapes_tokenizer(save_directory=None, model_max_length: int = 16):
    """The world's CLIP tokenizer (every caption word is one token; captions fit in 16 tokens with BOS/EOS)."""
    from ..utils.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(vocabulary(), save_directory, model_max_length=model_max_length)


def _shape_polygon(shape: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    if shape == "square":
        half = radius / math.sqrt(2) * 1.15
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    if shape == "triangle":  # pointing up, centred on its circumcentre
        angles = [-90, 30, 150]
        return [(cx + radius * math.cos(math.radians(a)), cy + radius * math.sin(math.radians(a))) for a in angles]
    if shape == "star":
        points = []
        for k in range(10):
            r = radius if k % 2 == 0 else radius * 0.45
            angle = math.radians(-90 + 36 * k)
            points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
        return points
    if shape == "heart":  # the classic heart curve, centred on its centroid (0, 0.79), circumradius 17.79 units
        points = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((cx + radius * x / 17.79, cy - radius * (y - 0.79) / 17.79))
        return points
    if shape == "cross":  # a plus sign, arms a third of its width
        a, b = radius, radius / 3
        corners = [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
        return [(cx + x, cy + y) for x, y in corners]
    raise ValueError(shape)


def render_background(scene: ShapeScene, resolution: int) -> np.ndarray:
    """The scene's background alone, `(resolution, resolution, 3)` uint8 (its colour, and its texture if styled)."""
    base = np.array(BACKGROUNDS[scene.background], dtype=np.uint8)
    shade = np.array(BACKGROUND_SHADES[scene.background], dtype=np.uint8)
    period = max(1, round(STYLE_PERIOD * resolution / 64))
    cells = np.arange(resolution) // period
    if scene.style == "plain":
        mask = np.zeros((resolution, resolution), dtype=bool)
    elif scene.style == "striped":  # vertical stripes
        mask = np.broadcast_to(cells[None, :] % 2 == 1, (resolution, resolution))
    else:  # checkered
        mask = (cells[:, None] + cells[None, :]) % 2 == 1
    return np.where(mask[..., None], shade, base)


def _coverage(scene: ShapeScene, center: tuple[float, float], resolution: int) -> np.ndarray:
    """`(H, W)` float share of each pixel the object covers (anti-aliased by supersampling)."""
    scale = resolution / 64 * SUPERSAMPLE
    big = resolution * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, radius = center[0] * SUPERSAMPLE, center[1] * SUPERSAMPLE, SIZES[scene.size] * scale
    if scene.shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    else:
        draw.polygon(_shape_polygon(scene.shape, cx, cy, radius), fill=255)
    return np.asarray(mask.resize((resolution, resolution), Image.Resampling.BOX), dtype=np.float32) / 255


def render_frame(scene: ShapeScene, center: tuple[float, float], resolution: int = 64) -> np.ndarray:
    """
    Draw one frame.

    Args:
        scene ([`ShapeScene`]): What to draw.
        center (`tuple[float, float]`): Object centre `(x, y)` in pixels (sub-pixel positions are anti-aliased).
        resolution (`int`, defaults to 64): Frame side in pixels.

    Returns:
        `np.ndarray`: `(H, W, 3)` `uint8` RGB.
    """
    alpha = _coverage(scene, center, resolution)[..., None]
    colour = np.array(PALETTE[scene.colour], dtype=np.float32)
    frame = alpha * colour + (1 - alpha) * render_background(scene, resolution).astype(np.float32)
    return np.round(frame).astype(np.uint8)


def render_silhouette(scene: ShapeScene, center: tuple[float, float], resolution: int = 64) -> np.ndarray:
    """
    The object's silhouette, the Shapes ControlNet's condition: white on black, nothing else (no colour, no
    background). Only the scene's shape and size matter.

    Returns:
        `np.ndarray`: `(H, W, 3)` `uint8` RGB.
    """
    alpha = _coverage(scene, center, resolution)
    return np.repeat(np.round(alpha * 255).astype(np.uint8)[..., None], 3, axis=-1)


@dataclass
class Trajectory:
    """Where the object is in each frame: `centers` `(F, 2)` in pixels `(x, y)`, and its radius."""

    centers: np.ndarray
    radius: float


def sample_trajectory(
    scene: ShapeScene, num_frames: int, rng: np.random.Generator, resolution: int = 64
) -> Trajectory:
    """A straight, constant-speed path in the scene's direction that keeps the whole object inside the frame."""
    scale = resolution / 64
    radius = SIZES[scene.size] * scale
    margin = radius + 1
    dx, dy = DIRECTIONS[scene.direction] if scene.direction else (0.0, 0.0)
    span = resolution - 2 * margin
    speed = rng.uniform(*SPEED_RANGE) * scale
    speed = min(speed, span / max(num_frames - 1, 1))
    travel = speed * (num_frames - 1)
    start = []
    for d in (dx, dy):
        low, high = margin, resolution - margin
        if d > 0:
            high -= travel
        elif d < 0:
            low += travel
        start.append(rng.uniform(low, high))
    steps = np.arange(num_frames, dtype=np.float64)[:, None] * speed * np.array([dx, dy])
    return Trajectory(centers=np.array(start) + steps, radius=radius)


def render_clip(
    scene: ShapeScene, num_frames: int, rng: np.random.Generator, resolution: int = 64
) -> tuple[np.ndarray, Trajectory]:
    """Render a clip: `(F, H, W, 3)` `uint8` frames and the ground-truth trajectory."""
    trajectory = sample_trajectory(scene, num_frames, rng, resolution)
    frames = np.stack([render_frame(scene, tuple(c), resolution) for c in trajectory.centers])
    return frames, trajectory


def to_model_range(frames: np.ndarray) -> torch.Tensor:
    """`uint8` `(..., H, W, 3)` to float `(..., 3, H, W)` in [-1, 1]."""
    tensor = torch.from_numpy(frames).float().div(127.5).sub(1)
    return tensor.movedim(-1, -3).contiguous()


@dataclass
class _ShapesDataset(Dataset):
    length: int = 100_000
    seed: int = 0
    resolution: int = 64
    world: ShapesWorld = field(default_factory=ShapesWorld)

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return np.random.default_rng((self.seed, index))


@dataclass
class ShapesImageDataset(_ShapesDataset):
    """Captioned still images of the image world: `{"pixel_values": (3, H, W) in [-1, 1], "caption": str}`, and
    with `silhouettes` the object's silhouette as `"conditioning_pixel_values"` `(3, H, W)` in [0, 1]."""

    world: ShapesWorld = field(default_factory=lambda: IMAGE_WORLD)
    silhouettes: bool = False

    def scene(self, index: int) -> ShapeScene:
        return self.world.sample(self.rng(index), with_motion=False)

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        scene = self.world.sample(rng, with_motion=False)
        # A still image is one frame of a random trajectory: positions cover the whole frame.
        frames, trajectory = render_clip(scene, 1, rng, self.resolution)
        sample = {"pixel_values": to_model_range(frames[0]), "caption": scene.caption}
        if self.silhouettes:
            silhouette = render_silhouette(scene, tuple(trajectory.centers[0]), self.resolution)
            sample["conditioning_pixel_values"] = torch.from_numpy(silhouette).float().div(255).permute(2, 0, 1)
        return sample


@dataclass
class ShapesVideoDataset(_ShapesDataset):
    """Captioned clips of the video world: `{"pixel_values": (F, 3, H, W) in [-1, 1], "caption": str}`."""

    num_frames: int = 16
    world: ShapesWorld = field(default_factory=lambda: VIDEO_WORLD)

    def scene(self, index: int) -> ShapeScene:
        return self.world.sample(self.rng(index), with_motion=True)

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        scene = self.world.sample(rng, with_motion=True)
        frames, _ = render_clip(scene, self.num_frames, rng, self.resolution)
        return {"pixel_values": to_model_range(frames), "caption": scene.caption}


def render_concept_images(
    folder,
    identifier: str,
    shape: str | None = None,
    colour: str | None = None,
    count: int = 20,
    seed: int = 0,
    resolution: int = 64,
    world: ShapesWorld = CONCEPT_WORLD,
) -> list:
    """
    Still images of something no caption of the world has, captioned with `identifier` in its word's place:
    DreamBooth's instance images. A concept `shape` (one of `CONCEPT_SHAPES`: "a large red <identifier> on a plain
    black background") or a concept `colour` (one of `CONCEPT_COLOURS`, a style: "a large <identifier> circle on
    ..."); the other attributes and positions vary as in `world` (default: the image world's large objects, clear
    views as a DreamBooth subject's photos are). Writes `NNNNN.png` and its caption `NNNNN.txt`.

    Returns:
        `list[ShapeScene]`: what each image shows.
    """
    from pathlib import Path

    if (shape is None) == (colour is None):
        raise ValueError("Give a concept shape or a concept colour (one of them).")
    if shape is not None and shape not in CONCEPT_SHAPES:
        raise ValueError(f"{shape!r} is not a concept shape; the renderer has {', '.join(CONCEPT_SHAPES)}.")
    if colour is not None and colour not in CONCEPT_COLOURS:
        raise ValueError(f"{colour!r} is not a concept colour; the renderer has {', '.join(CONCEPT_COLOURS)}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = []
    for index in range(count):
        rng = np.random.default_rng((seed, index))
        scene = world.sample(rng, with_motion=False)
        scene = dataclasses.replace(scene, shape=shape) if shape else dataclasses.replace(scene, colour=colour)
        frames, _ = render_clip(scene, 1, rng, resolution)
        Image.fromarray(frames[0]).save(folder / f"{index:05d}.png")
        word = shape or colour
        (folder / f"{index:05d}.txt").write_text(scene.caption.replace(f" {word} ", f" {identifier} "))
        scenes.append(scene)
    return scenes
