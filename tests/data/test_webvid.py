import csv

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from harivo.data import WebVidDataset, collate_videos, read_webvid_csv

CODECS = {".mp4": "libx264", ".webm": "libvpx", ".avi": "mpeg4"}


def write_video(path, num_frames, height=24, width=40):
    """A small video whose frame `i` is a uniform grey of level `10 * i` (so the decoded index is checkable)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[path.suffix], rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(num_frames):
            frame = np.full((height, width, 3), 10 * index, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_csv(path, rows, columns=("videoid", "name", "path")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)


@pytest.fixture
def video_folder(tmp_path):
    (tmp_path / "clips").mkdir()
    for name in ("a.mp4", "b.webm", "c.avi"):
        write_video(tmp_path / "clips" / name, num_frames=12)
    write_video(tmp_path / "clips" / "short.mp4", num_frames=3)
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    rows = [
        ("a", "a red ball rolls", "clips/a.mp4"),
        ("b", "waves at sea", "clips/b.webm"),
        ("c", "a dog runs", "clips/c.avi"),
        ("short", "too short", "clips/short.mp4"),
        ("broken", "corrupt", "clips/broken.mp4"),
        ("gone", "missing", "clips/gone.mp4"),
    ]
    write_csv(tmp_path / "videos.csv", rows)
    return tmp_path


@pytest.mark.parametrize("index", [0, 1, 2])
def test_decodes_every_container_with_stride_resize_and_crop(video_folder, index):
    dataset = WebVidDataset(video_folder / "videos.csv", num_frames=4, frame_stride=3, resolution=16)
    item = dataset[index]
    assert item["pixel_values"].shape == (4, 3, 16, 16)
    levels = (item["pixel_values"].mean(dim=(1, 2, 3)) + 1) * 127.5  # frames 0, 3, 6, 9 -> levels 0, 30, 60, 90
    assert torch.allclose(levels, torch.tensor([0.0, 30.0, 60.0, 90.0]), atol=6)
    assert item["caption"] == ["a red ball rolls", "waves at sea", "a dog runs"][index]


def test_bad_videos_are_skipped_counted_and_never_crash(video_folder):
    dataset = WebVidDataset(video_folder / "videos.csv", num_frames=4, frame_stride=3, resolution=16)
    assert [dataset[i].get("skipped") for i in range(3, 6)] == ["too short", "corrupt", "missing"]
    batches = list(DataLoader(dataset, batch_size=3, collate_fn=collate_videos))
    assert batches[0]["pixel_values"].shape == (3, 4, 3, 16, 16) and not batches[0]["skipped"]
    assert "pixel_values" not in batches[1]
    assert batches[1]["skipped"] == {"too short": 1, "corrupt": 1, "missing": 1}


def test_webvid_page_dir_layout(tmp_path):
    (tmp_path / "000001_000050").mkdir()
    write_video(tmp_path / "000001_000050" / "1066.mp4", num_frames=6)
    write_csv(tmp_path / "results.csv", [("1066", "clouds", "000001_000050")], ("videoid", "name", "page_dir"))
    records = read_webvid_csv(tmp_path / "results.csv")
    assert records[0].path == tmp_path / "000001_000050" / "1066.mp4"
    assert (
        WebVidDataset(tmp_path / "results.csv", num_frames=3, frame_stride=2, resolution=8)[0]["caption"] == "clouds"
    )


def test_missing_columns_are_named(tmp_path):
    write_csv(tmp_path / "bad.csv", [("1", "x")], ("id", "text"))
    with pytest.raises(ValueError, match="no column name, videoid"):
        read_webvid_csv(tmp_path / "bad.csv")


def test_rows_without_a_caption_are_skipped_and_counted(video_folder):
    with open(video_folder / "videos.csv", "a") as handle:
        handle.write("nocap\n")  # the caption field is missing altogether
        handle.write("empty,,clips/a.mp4\n")
    dataset = WebVidDataset(video_folder / "videos.csv", num_frames=4, frame_stride=2, resolution=16)
    loader = DataLoader(dataset, batch_size=len(dataset), collate_fn=collate_videos)
    batch = next(iter(loader))
    assert batch["skipped"]["no caption"] == 2
    assert all(isinstance(caption, str) and caption for caption in batch["caption"])


def test_a_csv_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "videos.csv"
    path.write_bytes("videoid,name,path\n1,a red ball,a.mp4\n2,caf\xe9 scene,b.mp4\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path} line 3 is not UTF-8 text \(byte 0xe9\)"):
        read_webvid_csv(path)


def test_loader_workers_decode_after_the_parent_wrote_and_read_a_video(tmp_path):
    """PyAV's shared RGB converter, made in the parent by writing and reading a video, has scaling threads that a
    forked DataLoader worker does not have; decoding there must not wait for them (it hung before)."""
    import subprocess
    import sys

    code = f"""
import numpy as np, torch
from torch.utils.data import DataLoader, Dataset
from harivo.data.webvid import decode_frames
from harivo.video_io import save_video
save_video(np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8), {str(tmp_path / "c.mp4")!r})
decode_frames({str(tmp_path / "c.mp4")!r}, 4, 1)
class Clips(Dataset):
    def __len__(self): return 4
    def __getitem__(self, i): return torch.from_numpy(decode_frames({str(tmp_path / "c.mp4")!r}, 4, 1))
print(sum(len(b) for b in DataLoader(Clips(), batch_size=2, num_workers=2)))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "4", done.stderr
