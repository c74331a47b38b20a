"""Captioned clips streamed from WebDataset shards, as video2dataset writes them.

A shard is a tar file whose members are grouped into samples by their name before the first dot: `KEY.mp4` (or
`.webm`, `.avi`, `.mkv`, `.mov`) is the video, `KEY.txt` its caption (else `KEY.json`'s `"caption"`), `KEY.json` the
rest of its metadata. Shards are local files, `https://` / `http://` URLs (read with curl) or `pipe:COMMAND` (a
command that writes the tar to its standard output, e.g. `pipe:aws s3 cp s3://bucket/00001.tar -`); brace patterns
such as `shards/{00000..00099}.tar` name many. Opening and reading them is webdataset's own code.

The stream is endless and deterministic: pass `p` over the shards visits them in a seeded order of `p`, each process
(rank) reads every `world_size`-th shard of that order and each of its loader workers every `num_workers`-th of
those, through a seeded shuffle buffer. Any place in the stream is reached again by counting samples, without
decoding them (`skip`), which is how a resumed run continues where it stopped. A sample whose video is missing,
corrupt or too short, or that has no caption, comes back as `{"skipped": reason}` (see `collate_videos`); a shard
that cannot be opened is tried `retries` times, then stops the run with one line.
"""

import io
import json
import math
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ShardError
from ..video_io import encode_video
from .webvid import VIDEO_EXTENSIONS, decode_clip, model_pixels

VIDEO_KEYS = tuple(suffix.lstrip(".") for suffix in VIDEO_EXTENSIONS)


def expand_shards(shards: str | list[str] | tuple[str, ...]) -> list[str]:
    """
    The shard list of `data.shards`: each entry's brace patterns expanded (`{00000..00009}`, `{a,b}`); local paths are
    checked now, so a missing shard is one line before training starts.

    Raises:
        `ValueError`: No shard is named. `FileNotFoundError`: A local shard does not exist.
    """
    from braceexpand import braceexpand

    entries = [shards] if isinstance(shards, str) else list(shards or ())
    urls = [url for entry in entries for url in braceexpand(entry)]
    if not urls:
        raise ValueError(
            "data.shards names no shard: give a path, a brace pattern (shards/{00000..00009}.tar) or URLs."
        )
    for url in urls:
        if not _is_remote(url):
            path = Path(url).expanduser()
            if path.is_dir():
                raise IsADirectoryError(
                    f"data.shards: {url} is a folder, not a tar file (shards/{{00000..00009}}.tar)."
                )
            if not path.is_file():
                raise FileNotFoundError(f"data.shards: the shard {url} does not exist.")
    return urls


def _is_remote(url: str) -> bool:
    return url.startswith(("pipe:", "http://", "https://")) or "://" in url


class ShardVideoDataset(IterableDataset):
    """
    `{"pixel_values": (F, 3, r, r) in [-1, 1], "caption": str}` streamed from shards (see the module's docstring).

    Args:
        shards (`list[str]`): The shards (`expand_shards`).
        num_frames (`int`): Frames per clip.
        frame_stride (`int`): Take every `frame_stride`-th frame.
        resolution (`int`): Side of the square frames (resize the short side, centre crop).
        seed (`int`): Shard order and shuffle buffer.
        shuffle_buffer (`int`): Samples the shuffle buffer holds (1: the shards' own order).
        rank, world_size (`int`): This process and how many read the shards together.
        retries (`int`): Tries to open a shard before the run stops.
        buckets (*optional*): `(height, width, num_frames, batch_size)` buckets (`BucketConfig`s or tuples): the
            stream then gives batches, each of one bucket's clips (`nearest_bucket`), and `batch_size` is unused.
    """

    def __init__(
        self,
        shards: list[str],
        num_frames: int = 16,
        frame_stride: int = 4,
        resolution: int = 64,
        seed: int = 0,
        shuffle_buffer: int = 100,
        rank: int = 0,
        world_size: int = 1,
        retries: int = 3,
        buckets=(),
    ):
        self.shards = list(shards)
        self.num_frames, self.frame_stride, self.resolution = num_frames, frame_stride, resolution
        self.seed, self.shuffle_buffer, self.retries = seed, shuffle_buffer, retries
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.num_workers = 1, 1
        self.buckets = [
            (b.height, b.width, b.num_frames, b.batch_size) if hasattr(b, "height") else tuple(b) for b in buckets
        ]

    def check_readers(self, num_workers: int, batch_size: int) -> None:
        """Raise a one-line `ValueError` unless every process and loader worker gets a shard of its own."""
        readers = self.world_size * max(num_workers, 1)
        if len(self.shards) < readers:
            raise ValueError(
                f"data.shards has {len(self.shards)} shard(s) for {self.world_size} process(es) x"
                f" {max(num_workers, 1)} loader worker(s): give at least {readers} shards (or fewer"
                " data.num_workers), so that each reads its own."
            )
        self.num_workers, self.batch_size = max(num_workers, 1), batch_size

    def start_at(self, batches: int) -> None:
        """Continue the stream after `batches` batches this process already took (a resumed run): the loader takes
        batch `i` from worker `i % num_workers`, so each worker passes over the batches its stream already gave,
        without decoding them."""
        self.batches_done = batches

    batches_done = 0

    def single_pass(self) -> Iterator[dict]:
        """Every sample of every shard once, in the shards' order, decoded (`harivo precompute`)."""
        for url in self.shards:
            for sample in self._read_shard(url):
                yield self._decode(sample)

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def __iter__(self) -> Iterator[dict]:
        worker, workers = self._worker()
        done = self.batches_done
        # The loader takes its first batch from worker 0, which must go on with the stream of the worker whose turn
        # it was (batch `done` came from worker `done % workers`): the workers' roles turn by `done`
        role = (worker + done) % workers
        batches = done // workers + (1 if role < done % workers else 0)  # what this role's stream already gave
        if self.buckets:  # batches of buckets: which bucket a clip joins is known once it is decoded
            for index, batch in enumerate(self._bucketed(self._samples(role, workers))):
                if index >= batches:
                    yield batch
            return
        for index, sample in enumerate(self._samples(role, workers)):
            if index < batches * self.batch_size:
                continue
            yield self._decode(sample)

    def nearest_bucket(self, height: int, width: int, frames: int) -> int | None:
        """The bucket of a clip of `height` x `width` with `frames` frames (at the stride): among the buckets it has
        the frames for, the nearest in aspect ratio, then in size (area, on a log scale), then the longest; `None`
        when it is too short for every bucket."""
        fitting = [index for index, bucket in enumerate(self.buckets) if bucket[2] <= frames]

        def distance(index: int) -> tuple:
            bucket_height, bucket_width, bucket_frames, _ = self.buckets[index]
            aspect = abs(math.log((bucket_height / bucket_width) / (height / width)))
            size = abs(math.log((bucket_height * bucket_width) / (height * width)))
            return (round(aspect, 3), round(size, 3), -bucket_frames)

        return min(fitting, key=distance) if fitting else None

    def _bucketed(self, samples: Iterator[dict]) -> Iterator[dict]:
        """Batches of one bucket each (`collate_videos`), with the skipped samples since the last batch counted."""
        from .webvid import collate_videos

        pending = {index: [] for index in range(len(self.buckets))}
        skipped = Counter()
        longest = max(bucket[2] for bucket in self.buckets)
        for sample in samples:
            item = self._decode(sample, upto=longest)
            if "skipped" in item:
                skipped[item["skipped"]] += 1
                continue
            frames = item.pop("frames")  # (F, 3, H, W) uint8-valued floats
            bucket = self.nearest_bucket(frames.shape[2], frames.shape[3], len(frames))
            if bucket is None:
                skipped["too short"] += 1
                continue
            height, width, num_frames, batch_size = self.buckets[bucket]
            pixels = model_pixels(frames[:num_frames], height, width)
            pending[bucket].append({"pixel_values": pixels, "caption": item["caption"]})
            if len(pending[bucket]) == batch_size:
                batch = collate_videos(pending[bucket])
                batch["skipped"] = skipped
                yield batch
                pending[bucket], skipped = [], Counter()

    def _samples(self, worker: int, workers: int) -> Iterator[dict]:
        """This worker's raw samples (bytes), pass after pass, through the shuffle buffer."""
        from webdataset.filters import _shuffle

        rng = random.Random((self.seed * 1_000_003 + self.rank) * 1009 + worker)
        return _shuffle(
            self._passes(worker, workers), bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng
        )

    def _passes(self, worker: int, workers: int) -> Iterator[dict]:
        for epoch in range(2**62):
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
            mine = order[self.rank :: self.world_size][worker::workers]
            for shard in mine:
                yield from self._read_shard(self.shards[shard])

    def _read_shard(self, url: str) -> Iterator[dict]:
        from webdataset.gopen import gopen
        from webdataset.tariterators import group_by_keys, tar_file_iterator

        for attempt in range(1, self.retries + 1):
            yielded = 0
            try:
                with gopen(url, "rb") as stream:
                    members = ({**member, "__url__": url} for member in tar_file_iterator(stream))
                    for sample in group_by_keys(members):
                        yielded += 1
                        yield sample
                return
            except Exception as error:  # curl, tarfile and pipes raise many types
                if yielded:  # damaged after some samples: the rest of the shard is lost, counted once
                    yield {"__key__": url, "__damaged__": f"{type(error).__name__}"}
                    return
                if attempt == self.retries:
                    reason = _reason(error, url)
                    raise ShardError(
                        f"data.shards: could not read {url} after {self.retries} tries ({reason})."
                    ) from None
                time.sleep(min(2.0 ** (attempt - 1), 10.0))

    def _decode(self, sample: dict, upto: int | None = None) -> dict:
        """A raw sample decoded (or `{"skipped": reason}`); with `upto`, the first frames (at most `upto`, at least
        one) at their own size under `"frames"`, for a bucket to choose."""
        if "__damaged__" in sample:
            return {"skipped": "damaged shard"}
        video = next((sample[key] for key in VIDEO_KEYS if key in sample), None)
        caption = sample.get("txt")
        if caption is None and "json" in sample:
            try:
                caption = json.loads(sample["json"]).get("caption")
            except (ValueError, AttributeError):
                caption = None
        if isinstance(caption, bytes):
            caption = caption.decode("utf-8", errors="replace")
        if not isinstance(caption, str) or not caption.strip():
            return {"skipped": "no caption"}
        if video is None:
            return {"skipped": "missing"}
        frames = decode_clip(io.BytesIO(video), upto or self.num_frames, self.frame_stride, 1 if upto else None)
        if isinstance(frames, str):
            return {"skipped": frames}
        if upto is not None:
            return {"frames": frames, "caption": caption.strip()}
        return {"pixel_values": model_pixels(frames, self.resolution, self.resolution), "caption": caption.strip()}


CURL_EXITS = {6: "the host name does not resolve", 7: "nothing answers at that address", 22: "the server answered"
              " with an HTTP error, e.g. 404 not found", 28: "the connection timed out", 35: "the TLS handshake failed"}  # fmt: skip


def _reason(error: Exception, url: str) -> str:
    """What went wrong with a shard, in a few words: curl's exit status explained, a command's status, or the
    error's own message (webdataset's pipe errors repeat the whole command)."""
    import re

    status = re.search(r"exit (\d+)", str(error))
    if status and url.startswith(("http://", "https://")):
        return f"curl: {CURL_EXITS.get(int(status[1]), f'exit status {status[1]}')}"
    if status:
        return f"the command exited with status {status[1]}"
    return " ".join(str(error).split()) or type(error).__name__


def encode_mp4(frames: np.ndarray, fps: int = 8) -> bytes:
    """`(F, H, W, 3)` `uint8` frames as H.264 mp4 bytes (in memory)."""
    buffer = io.BytesIO()
    encode_video(frames, buffer, fps=fps, format="mp4")
    return buffer.getvalue()


def write_shards(
    samples: Iterator[tuple[np.ndarray, str, dict[str, Any]]], pattern: str, per_shard: int = 100
) -> list[str]:
    """
    Write `(frames, caption, metadata)` samples as video2dataset does (`KEY.mp4`, `KEY.txt`, `KEY.json` per sample,
    keys `SSSSSIIII`), `per_shard` to a tar; `pattern` is a `%`-format of the shard number (`shards/%05d.tar`).
    Returns the shard paths.
    """
    from webdataset import ShardWriter

    written = []
    Path(pattern % 0).parent.mkdir(parents=True, exist_ok=True)
    with ShardWriter(pattern, maxcount=per_shard, verbose=0) as writer:
        for index, (frames, caption, metadata) in enumerate(samples):
            if index % per_shard == 0:
                written.append(pattern % (index // per_shard))
            key = f"{index // per_shard:05d}{index % per_shard:04d}"
            meta = json.dumps({"key": key, "caption": caption, **metadata})
            writer.write({"__key__": key, "mp4": encode_mp4(frames), "txt": caption, "json": meta})
    return written


def shapes_samples(count: int, seed: int = 0, resolution: int = 64, num_frames: int = 16):
    """`count` captioned clips of the Shapes video world (`ShapesVideoDataset`'s, uint8), for `write_shards`."""
    from .shapes import ShapesVideoDataset, render_clip

    world = ShapesVideoDataset(length=count, seed=seed, resolution=resolution, num_frames=num_frames)
    for index in range(count):
        rng = world.rng(index)
        scene = world.world.sample(rng, with_motion=True)
        frames, _ = render_clip(scene, num_frames, rng, resolution)
        yield frames, scene.caption, {"shapes_seed": seed, "shapes_index": index}
