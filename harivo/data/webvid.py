"""A folder of captioned videos in the WebVid layout, decoded with PyAV.

The CSV has one row per video: an id, a caption and where the file is. WebVid's own CSVs (`videoid`, `name`,
`page_dir`) work as they are (`{root}/{page_dir}/{videoid}.mp4`); a `path` column (relative to `root`) takes
precedence when present. A video that is missing, corrupt or too short is skipped, never a crash: the item
comes back as `{"skipped": reason, "video_id": ...}`, `collate_videos` drops it from the batch and keeps the
reason, and the trainer reports the counts at the end of each epoch.
"""

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from ..video_io import rgb_frames

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov")


@dataclass(frozen=True)
class VideoRecord:
    video_id: str
    caption: str | None
    path: Path


def read_webvid_csv(
    csv_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    id_column: str = "videoid",
    caption_column: str = "name",
    path_column: str = "path",
    folder_column: str = "page_dir",
) -> list[VideoRecord]:
    """
    Read the records of a WebVid-layout CSV.

    Args:
        csv_path (`str` or `os.PathLike`): The CSV file.
        root (`str` or `os.PathLike`, *optional*): Folder the paths are relative to; defaults to the CSV's folder.
        id_column, caption_column (`str`): Column names of the video id and the caption.
        path_column (`str`, defaults to `"path"`): Column with the file path relative to `root`, if any.
        folder_column (`str`, defaults to `"page_dir"`): Otherwise the file is `{root}/{folder}/{id}.mp4`.
    """
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    if not csv_path.is_file():
        raise FileNotFoundError(f"The video CSV {csv_path} does not exist (data.csv).")
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = csv_path.read_bytes()[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{csv_path} line {line} is not UTF-8 text (byte {error.object[error.start]:#x}); save the CSV as UTF-8."
        ) from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        missing = {id_column, caption_column} - columns
        if missing:
            raise ValueError(
                f"{csv_path} has no column {', '.join(sorted(missing))} (it has {', '.join(sorted(columns))}); "
                "set the dataset's id_column / caption_column to the right names."
            )
        records = []
        for row in reader:
            video_id = row[id_column]
            if row.get(path_column):
                path = root / row[path_column]
            elif row.get(folder_column) is not None:
                path = root / row[folder_column] / f"{video_id}.mp4"
            else:
                path = root / f"{video_id}.mp4"
            records.append(VideoRecord(video_id, row[caption_column], path))  # a missing caption is None
    return records


def decode_frames(
    source: str | os.PathLike | BinaryIO, num_frames: int, stride: int, start: int = 0, at_least: int | None = None
) -> np.ndarray:
    """Decode frames `start, start + stride, ...` (`num_frames` of them; with `at_least`, as many as there are, up to
    `num_frames`) of a video file or of an open binary file (a video held in memory) as `(F, H, W, 3)` `uint8`."""
    import av

    wanted = set(range(start, start + num_frames * stride, stride))
    last = max(wanted)
    frames = []
    with av.open(str(source) if isinstance(source, str | os.PathLike) else source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(rgb_frames(container, stream)):  # not PyAV's per-thread converter: see there
            if index in wanted:
                frames.append(frame.to_ndarray())
            if index >= last:
                break
    if len(frames) < (num_frames if at_least is None else at_least):
        raise ValueError(f"too short: {len(frames)} of the {num_frames} frames at stride {stride}")
    return np.stack(frames)


def decode_clip(
    source: str | os.PathLike | BinaryIO, num_frames: int, stride: int, at_least: int | None = None
) -> torch.Tensor | str:
    """`decode_frames` as `(F, 3, H, W)` floats in [0, 255], or why it cannot be used: `"too short"` or `"corrupt"`."""
    try:
        frames = decode_frames(source, num_frames, stride, at_least=at_least)
    except ValueError as error:
        return "too short" if "too short" in str(error) else "corrupt"
    except Exception:  # PyAV raises a family of errors on damaged files
        return "corrupt"
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float()


def resize_cover_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize `(F, 3, h, w)` frames until they cover `height` x `width` (the smaller scale that does: nothing is
    stretched), then crop the centre."""
    scale = max(height / frames.shape[-2], width / frames.shape[-1])
    size = (max(height, round(frames.shape[-2] * scale)), max(width, round(frames.shape[-1] * scale)))
    frames = F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return frames[..., top : top + height, left : left + width]


def resize_center_crop(frames: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize the short side to `resolution`, then centre-crop a square: `(F, 3, H, W)` to `(F, 3, r, r)`."""
    return resize_cover_crop(frames, resolution, resolution)


def model_pixels(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Decoded frames in [0, 255] at `height` x `width` (`resize_cover_crop`), in the models' range [-1, 1]."""
    return resize_cover_crop(frames, height, width).clamp(0, 255) / 127.5 - 1


class WebVidDataset(Dataset):
    """
    Captioned clips from a folder of videos: `{"pixel_values": (F, 3, r, r) in [-1, 1], "caption": str}`.

    Args:
        csv_path (`str` or `os.PathLike`): The WebVid-layout CSV.
        root (`str` or `os.PathLike`, *optional*): Folder the video paths are relative to (default: the CSV's).
        num_frames (`int`, defaults to 16): Frames per clip.
        frame_stride (`int`, defaults to 4): Take every `frame_stride`-th frame.
        resolution (`int`, defaults to 64): Side of the square output frames (resize + centre crop).
        **csv_kwargs: Column names, passed to `read_webvid_csv`.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        root: str | os.PathLike | None = None,
        num_frames: int = 16,
        frame_stride: int = 4,
        resolution: int = 64,
        **csv_kwargs,
    ):
        self.records = read_webvid_csv(csv_path, root, **csv_kwargs)
        if not self.records:
            raise ValueError(f"{csv_path} lists no videos.")
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        if not record.caption or not record.caption.strip():
            return {"skipped": "no caption", "video_id": record.video_id}
        if not record.path.is_file():
            return {"skipped": "missing", "video_id": record.video_id}
        if record.path.suffix.lower() not in VIDEO_EXTENSIONS:
            return {"skipped": "unsupported format", "video_id": record.video_id}
        frames = decode_clip(record.path, self.num_frames, self.frame_stride)
        if isinstance(frames, str):
            return {"skipped": frames, "video_id": record.video_id}
        return {"pixel_values": model_pixels(frames, self.resolution, self.resolution), "caption": record.caption}


def collate_videos(items: list[dict]) -> dict:
    """Batch the good items; the skipped ones are counted by reason under `"skipped"` (a `Counter`)."""
    skipped = Counter(item["skipped"] for item in items if "skipped" in item)
    good = [item for item in items if "skipped" not in item]
    batch = default_collate(good) if good else {}
    batch["skipped"] = skipped
    return batch
