"""WebDataset shards (as video2dataset writes them): written from the Shapes world, streamed from disk and from a
local HTTP server, split between processes and workers, resumed at the same place, bad samples counted."""

import functools
import http.server
import io
import json
import tarfile
import threading

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from harivo.data.shapes import ShapesVideoDataset, render_clip
from harivo.data.shards import (
    ShardVideoDataset,
    encode_mp4,
    expand_shards,
    shapes_samples,
    write_shards,
)
from harivo.data.webvid import collate_videos
from harivo.errors import ShardError

FRAMES = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Four shards of three Shapes clips each."""
    folder = tmp_path_factory.mktemp("shards")
    write_shards(shapes_samples(12, num_frames=FRAMES), str(folder / "%05d.tar"), per_shard=3)
    return folder


def dataset(shards, **kwargs) -> ShardVideoDataset:
    options = {"num_frames": FRAMES, "frame_stride": 1, "shuffle_buffer": 1, **kwargs}
    return ShardVideoDataset(expand_shards(str(shards / "{00000..00003}.tar")), **options)


def take(stream, count: int) -> list[dict]:
    iterator = iter(stream)
    return [next(iterator) for _ in range(count)]


def test_shards_hold_the_video2dataset_layout_and_decode_to_the_rendered_clips(shards):
    with tarfile.open(shards / "00000.tar") as tar:
        names = tar.getnames()
    assert sorted(names[:3]) == ["000000000.json", "000000000.mp4", "000000000.txt"]
    world = ShapesVideoDataset(length=12, num_frames=FRAMES)
    captions = {world.world.sample(world.rng(i), with_motion=True).caption for i in range(12)}
    samples = take(dataset(shards), 12)  # one pass over the four shards
    assert {s["caption"] for s in samples} == captions
    rng = world.rng(0)
    scene = world.world.sample(rng, with_motion=True)
    rendered, _ = render_clip(scene, FRAMES, rng, 64)
    first = next(s for s in samples if s["caption"] == scene.caption)
    decoded = ((first["pixel_values"] + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    assert np.abs(decoded - rendered).mean() < 6  # H.264 at crf 18


def test_processes_and_workers_read_their_own_shards(shards):
    """2 processes x 2 workers over 4 shards: one pass of each reader covers every sample once."""
    seen = []
    for rank in (0, 1):
        for worker in (0, 1):
            data = dataset(shards, rank=rank, world_size=2)
            seen += [sample["__key__"] for sample in take(data._samples(worker, 2), 3)]
    assert len(seen) == len(set(seen)) == 12
    with pytest.raises(ValueError, match=r"4 shard\(s\) for 2 process\(es\) x 4 loader worker\(s\): give at least 8"):
        dataset(shards, world_size=2).check_readers(num_workers=4, batch_size=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_continues_where_it_stopped(shards, workers):
    def batches(start: int, count: int) -> list[list[str]]:
        data = dataset(shards, shuffle_buffer=5, seed=3)
        data.check_readers(workers, batch_size=2)
        data.start_at(start)
        loader = DataLoader(data, batch_size=2, num_workers=workers, collate_fn=collate_videos, drop_last=True)
        return [batch["caption"] for batch in take(loader, count)]

    whole = batches(0, 9)  # more than a pass: the second pass is in another order
    assert batches(5, 4) == whole[5:]
    assert whole[:6] != batches(0, 12)[6:12]  # another pass, another order


def corrupt_shard(path):
    """A shard with a good clip, a clip with no caption, a damaged video and a too-short one."""
    good, caption, _ = next(shapes_samples(1, num_frames=FRAMES))
    write_shards(iter([(good, caption, {})]), str(path.parent / "good-%05d.tar"))
    with tarfile.open(path.parent / "good-00000.tar") as tar:
        mp4 = tar.extractfile("000000000.mp4").read()
    members = {
        "a.mp4": mp4, "a.txt": caption.encode(), "b.mp4": mp4, "c.mp4": mp4[:200], "c.txt": b"broken",
        "d.mp4": encode_mp4(good[:2]),
        "d.txt": b"short",
    }  # fmt: skip
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_samples_are_skipped_and_counted(tmp_path):
    corrupt_shard(tmp_path / "bad.tar")
    data = ShardVideoDataset([str(tmp_path / "bad.tar")], num_frames=FRAMES, frame_stride=1, shuffle_buffer=1)
    samples = take(data, 4)
    assert samples[0]["caption"] and [s.get("skipped") for s in samples[1:]] == ["no caption", "corrupt", "too short"]
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes((tmp_path / "bad.tar").read_bytes()[:3000])
    data = ShardVideoDataset([str(truncated)], num_frames=FRAMES, frame_stride=1, shuffle_buffer=1)
    assert {s.get("skipped") for s in take(data, 3)} <= {"damaged shard", "no caption", None}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(shards):
    handler = functools.partial(QuietHandler, directory=str(shards))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_shards_stream_from_http_and_an_unreachable_url_stops_in_one_line(shards, server):
    urls = expand_shards(f"{server}/{{00000..00003}}.tar")
    remote = take(ShardVideoDataset(urls, num_frames=FRAMES, frame_stride=1, shuffle_buffer=1), 12)
    local = take(dataset(shards), 12)
    assert [s["caption"] for s in remote] == [s["caption"] for s in local]
    torch.testing.assert_close(remote[0]["pixel_values"], local[0]["pixel_values"])
    missing = ShardVideoDataset([f"{server}/99999.tar"], num_frames=FRAMES, retries=2)
    with pytest.raises(ShardError, match=r"could not read http://127.0.0.1:\d+/99999.tar after 2 tries") as error:
        take(missing, 1)
    assert "\n" not in str(error.value)


def test_bad_shard_lists_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"the shard .*00008.tar does not exist"):
        expand_shards(str(tmp_path / "{00008..00009}.tar"))
    with pytest.raises(ValueError, match="names no shard"):
        expand_shards([])
    with pytest.raises(IsADirectoryError, match="is a folder, not a tar file"):
        expand_shards(str(tmp_path))
    (tmp_path / "notes.tar").write_text(json.dumps({"not": "a tar"}))
    with pytest.raises(ShardError, match=r"could not read .*notes.tar after 1 tries"):
        take(ShardVideoDataset([str(tmp_path / "notes.tar")], retries=1), 1)


@pytest.mark.parametrize("workers", [0, 2])
def test_training_on_an_unreachable_shard_stops_in_one_line(base_dir, shards, server, tmp_path, capsys, workers):
    from harivo.cli import main
    from tests.training.test_trainer import TINY

    argv = ["train", *TINY["harivo"], f"harivo.base_model={base_dir}", f"output_dir={tmp_path / 'run'}",
            "data.kind=webdataset", f"data.shards=[{server}/00000.tar, {server}/gone.tar]", "data.shard_retries=1",
            f"data.num_workers={workers}", "data.frame_stride=1", "batch_size=1", "max_steps=20"]  # fmt: skip
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert line.endswith("gone.tar after 1 tries (curl: the server answered with an HTTP error, e.g. 404 not found).")
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def mixed_shards(tmp_path_factory):
    """Square clips of 8 frames, wide ones (64 x 32) of 8, and short square ones of 3, in four shards."""
    folder = tmp_path_factory.mktemp("mixed")
    samples = []
    for index, (frames, caption, meta) in enumerate(shapes_samples(18, num_frames=8)):
        kind = index % 3
        clip = frames if kind == 0 else frames[:, 16:48] if kind == 1 else frames[:3]
        samples.append((clip, caption, {**meta, "kind": kind}))
    write_shards(iter(samples), str(folder / "%05d.tar"), per_shard=5)
    return folder


BUCKETS = [(32, 32, 8, 2), (16, 32, 8, 3), (32, 32, 2, 2)]  # height, width, frames, batch size


def bucketed(folder, **kwargs) -> ShardVideoDataset:
    urls = expand_shards(str(folder / "{00000..00003}.tar"))
    return ShardVideoDataset(urls, frame_stride=1, shuffle_buffer=3, buckets=BUCKETS, **kwargs)


def test_each_clip_joins_its_nearest_bucket_and_batches_hold_one_bucket(mixed_shards):
    data = bucketed(mixed_shards)
    assert data.nearest_bucket(64, 64, 8) == 0 and data.nearest_bucket(32, 64, 8) == 1
    assert data.nearest_bucket(64, 64, 3) == 2 and data.nearest_bucket(64, 64, 1) is None
    shapes = {}
    for batch in take(data, 9):
        shape = tuple(batch["pixel_values"].shape)
        shapes[shape] = shapes.get(shape, 0) + 1
        assert len(batch["caption"]) == shape[0] and batch["pixel_values"].abs().max() <= 1
    assert set(shapes) == {(2, 8, 3, 32, 32), (3, 8, 3, 16, 32), (2, 2, 3, 32, 32)}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_bucketed_stream_continues_where_it_stopped(mixed_shards, workers):
    def batches(start: int, count: int) -> list[list[str]]:
        data = bucketed(mixed_shards)
        data.check_readers(workers, batch_size=1)
        data.start_at(start)
        loader = DataLoader(data, batch_size=None, num_workers=workers, collate_fn=lambda batch: batch)
        return [batch["caption"] for batch in take(loader, count)]

    assert batches(3, 4) == batches(0, 7)[3:]


def test_buckets_train_and_resume_the_same_loss_curve(base_dir, mixed_shards, tmp_path):
    from harivo.training import Trainer
    from tests.training.test_trainer import read_log, tiny_config

    buckets = "[" + ", ".join(
        f"{{height: {h}, width: {w}, num_frames: {f}, batch_size: {b}}}" for h, w, f, b in BUCKETS
    )
    common = [f"harivo.base_model={base_dir}", "data.kind=webdataset", f"data.shards={mixed_shards}/{{00000..00003}}.tar",
              f"data.buckets={buckets}]", "data.frame_stride=1", "data.shuffle_buffer=3", "harivo.num_frame_tokens=0",
              "checkpoint_every=3"]  # fmt: skip
    Trainer(tiny_config("harivo", tmp_path / "straight", *common, "max_steps=6")).train()
    Trainer(tiny_config("harivo", tmp_path / "resumed", *common, "max_steps=3")).train()
    Trainer(tiny_config("harivo", tmp_path / "resumed", *common, "max_steps=6"), resume=True).train()
    straight, resumed = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert len(straight) == 6
    assert [r["total"] for r in resumed] == pytest.approx([r["total"] for r in straight], rel=1e-6)


def test_a_stream_of_clips_too_short_for_the_config_stops_in_one_line(base_dir, tmp_path, capsys):
    from harivo.cli import main
    from tests.training.test_trainer import TINY

    written = write_shards(shapes_samples(4, num_frames=4), str(tmp_path / "new" / "folder" / "%05d.tar"), per_shard=4)
    assert len(written) == 1  # the folder is made
    with pytest.raises(SystemExit):
        main(["train", *TINY["harivo"], f"harivo.base_model={base_dir}", f"output_dir={tmp_path / 'run'}",
              "data.kind=webdataset", f"data.shards={written[0]}", "data.frame_stride=4", "batch_size=1",
              "max_steps=5"])  # fmt: skip
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "50 batches in a row had only skipped samples (50 too short)" in line
    assert "data.num_frames x data.frame_stride" in line
