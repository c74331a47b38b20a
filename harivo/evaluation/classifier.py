"""A small video classifier of the Shapes world: the feature network of the FVD-analog.

FVD embeds clips with I3D, a video classifier trained on Kinetics, and compares the feature statistics of real
and generated clips. Here the same construction is made for this world: a 3-D convolutional network trained to
read every attribute of a rendered clip (shape, colour, size, background, style, and the direction of motion,
which only the temporal axis reveals); its pooled penultimate layer is the feature. The trained weights ship
with the package (`harivo/default_model/shapes_classifier`), and `train_shapes_classifier` rebuilds them.
"""

from pathlib import Path

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..data.shapes import BACKGROUNDS, COLOURS, DIRECTIONS, FULL_WORLD, SHAPES, SIZES, STYLES, render_clip

HEADS = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": tuple(SIZES),
    "background": tuple(BACKGROUNDS),
    "style": STYLES,
    "direction": tuple(DIRECTIONS),
}
CLASSIFIER_DIR = Path(__file__).resolve().parent.parent / "default_model" / "shapes_classifier"


class ShapesVideoClassifier(ModelMixin, ConfigMixin):
    r"""
    3-D CNN over `(N, 3, F, H, W)` clips in `[-1, 1]`, one linear head per attribute of the world.

    The network sees each frame and its difference to the previous frame (the two streams of classic action
    recognition, with frame differences for optical flow), and pools both the mean and the max over space and
    time, so that a small object is not averaged away.

    Args:
        channels (`tuple[int, ...]`): Width of each convolution stage (each halves height and width).
        feature_dim (`int`, defaults to 32): Width of the pooled feature used by the FVD-analog. Keep it below the
            number of clips compared, so that the feature covariance is well estimated.
    """

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (12, 24, 48, 48), feature_dim: int = 32):
        super().__init__()
        layers, previous = [], 6  # RGB + temporal difference
        for index, width in enumerate(channels):
            temporal_stride = 2 if index >= 2 else 1  # keep the early frames apart: motion lives there
            layers += [
                nn.Conv3d(previous, width, 3, stride=(temporal_stride, 2, 2), padding=1),
                nn.GroupNorm(4, width),
                nn.SiLU(),
            ]
            previous = width
        self.backbone = nn.Sequential(*layers)
        self.feature = nn.Linear(2 * previous, feature_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(classes)) for name, classes in HEADS.items()})

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """`(N, 3, F, H, W)` clips in `[-1, 1]` to `(N, feature_dim)` features."""
        difference = torch.cat([torch.zeros_like(clips[:, :, :1]), clips.diff(dim=2)], dim=2)
        hidden = self.backbone(torch.cat([clips, difference], dim=1))  # (N, C, F', h, w)
        pooled = torch.cat([hidden.mean(dim=(2, 3, 4)), hidden.amax(dim=(2, 3, 4))], dim=1)  # (N, 2C)
        return self.feature(pooled)

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head, `{name: (N, classes)}`."""
        features = F.silu(self.features(clips))
        return {name: head(features) for name, head in self.heads.items()}


def clips_to_tensor(clips: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """`uint8` `(N, F, H, W, 3)` (or a list of `(F, H, W, 3)`) to float `(N, 3, F, H, W)` in `[-1, 1]`."""
    array = np.stack(list(clips)) if isinstance(clips, list) else np.asarray(clips)
    if array.ndim != 5 or array.shape[-1] != 3:
        raise ValueError(f"Expected clips of shape (N, F, H, W, 3), got {array.shape}.")
    return torch.from_numpy(array).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3).contiguous()


def render_labelled_batch(
    rng: np.random.Generator, batch_size: int, num_frames: int, resolution: int = 64
) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """Random clips of the full world (every attribute) with the index of each attribute's class."""
    clips, labels = [], {name: [] for name in HEADS}
    for _ in range(batch_size):
        scene = FULL_WORLD.sample(rng, with_motion=True)
        frames, _ = render_clip(scene, num_frames, rng, resolution)
        clips.append(frames)
        for name, classes in HEADS.items():
            labels[name].append(classes.index(getattr(scene, name)))
    return np.stack(clips), {name: torch.tensor(values) for name, values in labels.items()}


def train_shapes_classifier(
    steps: int = 2000,
    batch_size: int = 16,
    num_frames: tuple[int, ...] = (8, 16),
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> ShapesVideoClassifier:
    """Train the classifier on freshly rendered clips (no dataset on disk); clip length alternates over `num_frames`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ShapesVideoClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
    bar = tqdm(range(steps), desc="train shapes classifier", disable=not progress)
    for step in bar:
        clips, labels = render_labelled_batch(rng, batch_size, num_frames[step % len(num_frames)])
        logits = model(clips_to_tensor(clips))
        loss = sum(F.cross_entropy(logits[name], labels[name]) for name in HEADS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: ShapesVideoClassifier, clips: np.ndarray, labels: dict[str, torch.Tensor]) -> dict:
    """Share of clips each head labels right."""
    logits = model(clips_to_tensor(clips))
    return {name: float((logits[name].argmax(-1) == labels[name]).float().mean()) for name in HEADS}


def load_shapes_classifier(path: str | Path | None = None) -> ShapesVideoClassifier:
    """The shipped classifier (or one saved with `save_pretrained` at `path`), in eval mode."""
    folder = Path(path) if path is not None else CLASSIFIER_DIR
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"No Shapes classifier at {folder}. Train one with `python scripts/train_shapes_classifier.py`."
        )
    return ShapesVideoClassifier.from_pretrained(folder).eval()
