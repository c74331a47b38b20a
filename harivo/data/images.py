"""Folders of captioned images (DreamBooth's instance and class images).

A folder holds `.png` / `.jpg` / `.jpeg` / `.webp` images; a `.txt` file of the same name beside an image is its
caption (the kohya convention), else the folder's default caption is used.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .shapes import to_model_range

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class CaptionedImage:
    path: Path
    caption: str


def read_image_folder(
    folder: str | os.PathLike, default_caption: str = "", what: str = "image folder"
) -> list[CaptionedImage]:
    """
    The images of `folder` (sorted by name) and their captions.

    Raises:
        `FileNotFoundError`: The folder does not exist.
        `ValueError`: An image has neither a caption file nor a default caption.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"The {what} {str(folder)!r} does not exist (or is not a folder).")
    images = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        sidecar = path.with_suffix(".txt")
        caption = read_caption(sidecar) if sidecar.is_file() else default_caption
        if not caption:
            raise ValueError(f"{path.name} in the {what} has no caption: add {sidecar.name} or a default prompt.")
        images.append(CaptionedImage(path, caption))
    return images


MAX_CAPTION_BYTES = 16_384  # far past what a text encoder reads (77 tokens): a larger file is not a caption


def read_caption(path: Path) -> str:
    """The caption in a `.txt` file, checked for size and encoding before it is read in full."""
    size = path.stat().st_size
    if size > MAX_CAPTION_BYTES:
        raise ValueError(
            f"The caption file {path} has {size} bytes; a caption is a line of text (at most {MAX_CAPTION_BYTES})."
        )
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as error:
        raise ValueError(f"The caption file {path} is not UTF-8 text ({error.reason}).") from None


def read_pixels(path: Path, resolution: int) -> np.ndarray:
    """`(resolution, resolution, 3)` `uint8`: the shorter side resized to `resolution`, then centre-cropped."""
    try:
        image = Image.open(path).convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ValueError(f"Cannot read the image {path}: {error}") from None
    scale = resolution / min(image.size)
    if image.size != (resolution, resolution):
        size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    return np.array(image, dtype=np.uint8)


class DreamBoothDataset(Dataset):
    """
    Each item pairs one instance image with one class (prior-preservation) image, as DreamBooth trains on both in
    every batch: `{"pixel_values", "caption"}` and, with class images, `{"class_pixel_values", "class_caption"}`.
    Images are decoded once and kept as 8-bit (200 class images of 512 px: 157 MB).
    """

    def __init__(
        self, instance: list[CaptionedImage], classes: list[CaptionedImage], resolution: int, min_length: int = 1
    ):
        self.instance = [(read_pixels(item.path, resolution), item.caption) for item in instance]
        self.classes = [(read_pixels(item.path, resolution), item.caption) for item in classes]
        self.min_length = min_length  # a few images still fill a batch (each epoch repeats them)

    def __len__(self) -> int:
        return max(len(self.instance), len(self.classes), self.min_length)

    def __getitem__(self, index: int) -> dict:
        pixels, caption = self.instance[index % len(self.instance)]
        item = {"pixel_values": to_model_range(pixels), "caption": caption}
        if self.classes:
            pixels, caption = self.classes[index % len(self.classes)]
            item.update(class_pixel_values=to_model_range(pixels), class_caption=caption)
        return item
