"""Video frames in and out: conversions between PIL / numpy / torch, and mp4 / gif writing."""

import contextlib
import os
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")
CODECS = {".webm": "libvpx-vp9", ".avi": "mpeg4"}  # else H.264, which WebM cannot hold
CODEC_OPTIONS = {"libx264": {"crf": "18"}, "libvpx-vp9": {"crf": "30", "b:v": "0"}}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FrameInput = list[PIL.Image.Image] | np.ndarray | torch.Tensor
# Past this a video's comment tag is left out: players and tag readers (and the ffmpeg command line, which Linux caps at
# 128 KiB per argument) are not made for metadata this long
MAX_COMMENT_BYTES = 100_000


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C (SIGINT) until the block ends, then raise `KeyboardInterrupt`: files written inside are written
    whole (or removed) first. Only in the main thread, where Python delivers signals; elsewhere a plain block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def to_numpy_frames(frames: FrameInput) -> np.ndarray:
    """
    Frames as a `uint8` array of shape `(frames, height, width, 3)`.

    Args:
        frames: A list of PIL images; an array `(F, H, W, 3)` (`uint8`, or float in `[0, 1]`); or a tensor
            `(F, 3, H, W)` / `(F, H, W, 3)` with values in `[0, 1]`.
    """
    if isinstance(frames, list | tuple):
        if not frames or not all(isinstance(f, PIL.Image.Image) for f in frames):
            raise ValueError("Expected a non-empty list of PIL images.")
        return np.stack([np.asarray(f.convert("RGB")) for f in frames])
    if isinstance(frames, torch.Tensor):
        array = frames.detach().float().cpu()
        if array.ndim == 4 and array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.permute(0, 2, 3, 1)  # (F, C, H, W) -> (F, H, W, C)
        frames = array.numpy()
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        shape = getattr(frames, "shape", None)
        raise ValueError(f"Expected frames of shape (frames, height, width, 3), got {shape or type(frames).__name__}.")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    return frames


def to_pil_frames(frames: FrameInput) -> list[PIL.Image.Image]:
    """Frames as a list of RGB PIL images."""
    return [PIL.Image.fromarray(frame) for frame in to_numpy_frames(frames)]


def to_tensor_frames(frames: FrameInput) -> torch.Tensor:
    """Frames as a float tensor in `[0, 1]` of shape `(frames, 3, height, width)`."""
    return torch.from_numpy(to_numpy_frames(frames)).permute(0, 3, 1, 2).float() / 255.0


def check_output_path(path: str | os.PathLike, fps: int = 8) -> Path:
    """
    Check, before any work, that a video can be written to `path` at `fps`; a one-line `ValueError` otherwise.

    Returns:
        `Path`: The path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise ValueError(
            f"Cannot write the video to {path}: it is a directory; give a file name such as {path / 'out.mp4'}."
        )
    if suffix not in (*VIDEO_SUFFIXES, ".gif"):
        raise ValueError(f"Cannot write {path.name!r}: use one of {', '.join((*VIDEO_SUFFIXES, '.gif'))}.")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 1000 or fps != fps:
        raise ValueError(f"`fps` must be a positive number of frames per second (at most 1000), got {fps}.")
    parent = next((p for p in path.absolute().parents if p.exists()), None)  # the folder the file will go in
    if parent is not None and not parent.is_dir():
        raise ValueError(f"Cannot write {path}: {parent} is a file, not a folder.")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"Cannot write {path}: the folder {parent} is not writable.")
    return path


def save_video(frames: FrameInput, path: str | os.PathLike, fps: int = 8, comment: str | None = None) -> Path:
    """
    Write frames to `.mp4` (or another container: `.webm`, `.mov`, `.mkv`, `.avi`) or `.gif`.

    The file is written under a unique temporary name in the same folder and renamed at the end, so an interrupted
    write never leaves a truncated video at `path`, and concurrent writers to one path each leave a complete video.

    Args:
        frames: Any input `to_numpy_frames` accepts.
        path (`str` or `os.PathLike`): Output file; its suffix picks the format.
        fps (`int`, defaults to 8): Frames per second.
        comment (`str`, *optional*): Text stored in the file's metadata (the container's comment tag, the GIF
            comment), e.g. the settings that made the video; `read_video_comment` reads it back. Past
            `MAX_COMMENT_BYTES` a video other than a GIF is written without it (with a warning).

    Returns:
        `Path`: The written file.
    """
    path = check_output_path(path, fps)
    suffix = path.suffix.lower()
    array = to_numpy_frames(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{suffix}", dir=path.parent)
    os.close(handle)
    partial = Path(partial)
    try:
        umask = os.umask(0)
        os.umask(umask)
        partial.chmod(0o666 & ~umask)  # what a plain open() would give, not mkstemp's owner-only mode
        if suffix == ".gif":
            images = to_pil_frames(array)
            images[0].save(
                partial, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0, optimize=False,
                comment=(comment or "").encode(),
            )  # fmt: skip
        else:
            if comment and len(comment.encode()) > MAX_COMMENT_BYTES:
                warnings.warn(
                    f"The comment ({len(comment.encode())} bytes) is longer than a video's metadata should hold"
                    f" ({MAX_COMMENT_BYTES}); {path.name} is written without it.",
                    stacklevel=2,
                )
                comment = None
            encode_video(array, partial, fps=fps, codec=CODECS.get(suffix, "libx264"), comment=comment)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def encode_video(
    frames: np.ndarray,
    file: str | os.PathLike | BinaryIO,
    fps: float = 8,
    codec: str = "libx264",
    comment: str | None = None,
    format: str | None = None,
) -> None:
    """
    Encode `(F, H, W, 3)` `uint8` frames into `file` (a path, whose suffix picks the container, or a binary file
    object with `format`, e.g. `"mp4"`) with PyAV, in this process: an ffmpeg subprocess would fork, and a fork of a
    threaded process (a web server, a data loader) can hang in the child. Even sizes are encoded as 4:2:0 (what every
    player plays), odd ones as 4:4:4 where the codec has it, so no pixel is cropped.
    """
    import av

    target = str(file) if isinstance(file, str | os.PathLike) else file
    with av.open(target, "w", format=format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        even = frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
        stream.pix_fmt = "yuv420p" if even or codec == "mpeg4" else "yuv444p"
        stream.options = CODEC_OPTIONS.get(codec, {})
        if comment:
            container.metadata["comment"] = comment
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        container.mux(stream.encode())


def rgb_frames(container, stream) -> Iterator:
    """
    The decoded frames of `stream` (of the PyAV input `container`) as RGB (`rgb24`) `av.VideoFrame`s, converted by a converter of this call's own.

    PyAV's `to_ndarray` / `to_image` convert with one shared converter per thread, which keeps scaling threads alive
    with it; a process forked later (a data loader's worker, a subprocess started with `preexec_fn`) inherits the
    converter but not its threads, and hangs for ever when it frees it.
    """
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()
    for frame in container.decode(stream):
        yield reformatter.reformat(frame, format="rgb24")


def read_video_comment(path: str | os.PathLike) -> str | None:
    """The comment `save_video` stored in a video's metadata, or `None` where it has none."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        with PIL.Image.open(path) as image:
            comment = image.info.get("comment")
        return comment.decode() if comment else None
    import av

    try:
        with av.open(str(path)) as container:
            tags = {key.lower(): value for key, value in container.metadata.items()}
    except av.error.FFmpegError as error:
        raise ValueError(f"{path} is not a readable video ({_reason(error)}).") from None
    return tags.get("comment") or None


def _reason(error: Exception) -> str:
    """What went wrong, without ffmpeg's error number and the path the message names already."""
    return getattr(error, "strerror", None) or str(error)


# Bytes a decoded input pixel takes: its 8-bit RGB frame and the float copy the pipelines work on
INPUT_BYTES_PER_PIXEL = 3 + 3 * 4


def input_budget(check_memory: bool = True) -> int | None:
    """The bytes decoded inputs (videos, images) may take: a quarter of the free RAM; `None` (no limit) without the
    memory check or where the free memory is unknown."""
    if not check_memory:
        return None
    from .pipelines.checks import free_memory

    available = free_memory(torch.device("cpu"))
    return None if available is None else available // 4


def check_input_size(path: Path, frames: int, width: int, height: int, budget: int | None) -> None:
    """Raise a one-line `MemoryError` when `frames` decoded frames of `width` x `height` do not fit `budget` bytes."""
    needed = frames * width * height * INPUT_BYTES_PER_PIXEL
    if budget is not None and needed > budget:
        raise MemoryError(
            f"{path}: {frames} frame(s) of {width}x{height} take about {_size(needed)} to read, more than the"
            f" {_size(budget)} inputs may take (a quarter of the free memory): use fewer or smaller frames"
            " (--skip-memory-check reads it anyway)."
        )


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def _regular_file(path: Path, what: str) -> Path:
    """`path` if it is a regular file; else a one-line error that says what it is (missing, a folder, a pipe ...)."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give {what}.")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give {what}.")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file (a pipe or a device?): give {what}.")
    return path


def read_image(path: str | os.PathLike, budget: int | None = None) -> PIL.Image.Image:
    """An RGB image from a file (e.g. the first frame of image-to-video), or a one-line error naming what is wrong;
    its size is checked against `budget` bytes (`input_budget`) before it is decoded."""
    file = _regular_file(Path(path).expanduser(), "an image file (.png, .jpg, ...)")
    try:
        with PIL.Image.open(file) as image:
            check_input_size(file, 1, *image.size, budget)
            return image.convert("RGB")
    except PIL.Image.DecompressionBombError as error:
        raise ValueError(f"{file} is too large an image to read safely ({error}).") from None
    except (OSError, PIL.UnidentifiedImageError) as error:
        raise ValueError(f"{file} is not a readable image ({error}).") from None


def read_frames(path: str | os.PathLike, budget: int | None = None) -> list[PIL.Image.Image]:
    """
    Frames from a folder of images (sorted by file name) or from a video file (every frame), e.g. the condition
    images of a ControlNet; a GIF is read as a video. Sizes are checked against `budget` bytes (`input_budget`)
    from the container's header before decoding, and again frame by frame while decoding (a header may lie).

    Raises:
        `FileNotFoundError` / `ValueError`: One line naming what is missing or unreadable.
        `MemoryError`: The decoded frames would take more than `budget`.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give a folder of images or a video file.")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}); put one image per frame in it.")
        frames = []
        for file in files:
            frames.append(read_image(file, budget))
            if budget is not None:
                budget -= frames[-1].width * frames[-1].height * INPUT_BYTES_PER_PIXEL
        return frames
    _regular_file(path, "a folder of images or a video file")
    if path.suffix.lower() not in (*VIDEO_SUFFIXES, ".gif"):
        raise ValueError(f"{path} is neither a folder of images nor a video ({', '.join(VIDEO_SUFFIXES)}, .gif).")
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            check_input_size(path, max(stream.frames, 1), width, height, budget)
            for frame in rgb_frames(container, stream):
                check_input_size(path, len(frames) + 1, frame.width, frame.height, budget)
                frames.append(PIL.Image.fromarray(frame.to_ndarray()))
    except (av.error.FFmpegError, IndexError) as error:
        raise ValueError(f"{path} is not a readable video ({_reason(error)}).") from None
    if not frames:
        raise ValueError(f"{path} holds no video frames.")
    return frames


def contact_sheet(
    videos: list[FrameInput],
    labels: list[str] | None = None,
    scale: int = 1,
    max_frames: int | None = None,
    long_exposure: bool = False,
) -> PIL.Image.Image:
    """
    One row per video, its frames side by side, each row under an optional caption: a picture to look at.

    Args:
        videos (`list`): Videos (anything `to_numpy_frames` accepts), all of the same frame size.
        labels (`list[str]`, *optional*): A caption per row.
        scale (`int`, defaults to 1): Nearest-neighbour enlargement (Shapes-world frames are 64 pixels).
        max_frames (`int`, *optional*): Show at most this many frames per row, evenly spaced.
        long_exposure (`bool`, defaults to `False`): End each row with the mean of all its frames, after a gap: a
            moving object leaves a streak along its path, a still background stays sharp, a flickering one blurs.
    """
    if not videos:
        raise ValueError("contact_sheet needs at least one video.")
    rows = [to_numpy_frames(video) for video in videos]
    if max_frames is not None:
        shown = [row[np.linspace(0, len(row) - 1, min(max_frames, len(row))).round().astype(int)] for row in rows]
    else:
        shown = rows
    height, width = rows[0].shape[1:3]
    gap = width // 4 if long_exposure else 0
    label_height = 12 if labels else 0
    columns = max(len(row) for row in shown) + long_exposure
    size = ((columns * width + gap) * scale, len(rows) * (height * scale + label_height))
    sheet = PIL.Image.new("RGB", size, "white")
    draw = PIL.ImageDraw.Draw(sheet)
    for r, (row, frames) in enumerate(zip(rows, shown)):
        top = r * (height * scale + label_height)
        if labels:
            draw.text((2, top), labels[r], fill="black")
        lefts = [c * width for c in range(len(frames))]
        if long_exposure:  # the mean of every frame, not only the shown ones
            frames = [*frames, row.astype(np.float64).mean(axis=0).round().astype(np.uint8)]
            lefts.append(len(lefts) * width + gap)
        for left, frame in zip(lefts, frames):
            image = PIL.Image.fromarray(frame).resize((width * scale, height * scale), PIL.Image.Resampling.NEAREST)
            sheet.paste(image, (left * scale, top + label_height))
    return sheet
