from .shapes import (
    FULL_WORLD,
    HELD_OUT_COMPOSITIONS,
    IMAGE_WORLD,
    VIDEO_WORLD,
    ShapeScene,
    ShapesImageDataset,
    ShapesVideoDataset,
    ShapesWorld,
    build_shapes_tokenizer,
    render_clip,
    render_frame,
    render_silhouette,
)
from .webvid import WebVidDataset, collate_videos, read_webvid_csv

__all__ = [
    "FULL_WORLD",
    "HELD_OUT_COMPOSITIONS",
    "IMAGE_WORLD",
    "VIDEO_WORLD",
    "ShapeScene",
    "ShapesImageDataset",
    "ShapesVideoDataset",
    "ShapesWorld",
    "WebVidDataset",
    "build_shapes_tokenizer",
    "collate_videos",
    "read_webvid_csv",
    "render_clip",
    "render_frame",
    "render_silhouette",
]
