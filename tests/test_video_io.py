import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import PIL.Image
import pytest
import torch

from harivo.video_io import contact_sheet, save_video, to_numpy_frames, to_pil_frames, to_tensor_frames


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    return rng.random((5, 32, 48, 3)).astype(np.float32)  # (F, H, W, 3) in [0, 1]


def test_conversions_agree(frames):
    as_uint8 = to_numpy_frames(frames)
    assert as_uint8.dtype == np.uint8 and as_uint8.shape == (5, 32, 48, 3)
    pil = to_pil_frames(frames)
    assert len(pil) == 5 and pil[0].size == (48, 32)
    tensor = to_tensor_frames(pil)
    assert tensor.shape == (5, 3, 32, 48)
    assert np.array_equal(to_numpy_frames(tensor), as_uint8)
    assert np.array_equal(to_numpy_frames(torch.from_numpy(frames).permute(0, 3, 1, 2)), as_uint8)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_writes_readable_videos(frames, tmp_path, suffix):
    path = save_video(frames, tmp_path / "sub" / f"clip{suffix}", fps=4)
    assert path.is_file() and not list(path.parent.glob(".*partial*"))
    read = iio.imread(path, index=None) if suffix == ".mp4" else None
    if suffix == ".mp4":
        assert read.shape[0] == 5 and read.shape[1:3] == (32, 48)
    else:
        with PIL.Image.open(path) as gif:
            assert gif.n_frames == 5 and gif.size == (48, 32)


def test_bad_inputs(frames, tmp_path):
    with pytest.raises(ValueError, match="use one of"):
        save_video(frames, tmp_path / "clip.txt")
    with pytest.raises(ValueError, match="fps"):
        save_video(frames, tmp_path / "clip.gif", fps=0)
    with pytest.raises(ValueError, match="shape"):
        to_numpy_frames(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="PIL"):
        to_numpy_frames([])


def test_contact_sheet_long_exposure_is_the_mean_of_every_frame():
    video = np.zeros((6, 8, 8, 3), np.uint8)
    for f in range(6):
        video[f, 2:4, f : f + 2] = 240  # a square moving right one pixel a frame
    plain = contact_sheet([video], max_frames=3)
    sheet = contact_sheet([video], max_frames=3, long_exposure=True)
    assert plain.size == (3 * 8, 8)
    assert sheet.size == (4 * 8 + 2, 8)  # a quarter-frame gap, then the exposure
    pixels = np.asarray(sheet)
    assert (pixels[:, 24:26] == 255).all()  # the gap is white
    np.testing.assert_array_equal(pixels[:, 26:], video.astype(float).mean(0).round().astype(np.uint8))
    np.testing.assert_array_equal(pixels[:, :24], np.asarray(plain))  # the frames shown are unchanged
    # the streak: the path's pixels are lit in the exposure, partly, and the rows above it are not
    assert pixels[2, 26 + 3].max() == 80 and pixels[0, 26:].max() == 0


def test_a_threaded_server_reads_and_writes_videos_without_hanging_a_fork(tmp_path):
    """
    The web UI's hang: a worker thread read an uploaded video (PyAV's per-thread converter keeps scaling threads), then
    another thread wrote a video through an ffmpeg subprocess started with `preexec_fn`; the forked child freed the
    converter of the first thread and waited for ever for threads it does not have. Reading now converts with its
    own converter and writing encodes in this process; any fork of such a process stays safe.
    """
    code = (
        "import os, subprocess, threading\nimport numpy as np\nfrom harivo.video_io import read_frames, save_video\n"
        "save_video(np.zeros((4, 16, 16, 3), np.uint8), 'in.mp4')\nread = threading.Event()\n"
        "def worker():\n    read_frames('in.mp4')\n    read.set()\n    threading.Event().wait()  # alive, as a server's\n"
        "threading.Thread(target=worker, daemon=True).start()\nread.wait()\n"
        "subprocess.run(['true'], preexec_fn=os.setpgrp, check=True)\n"
        "threading.Thread(target=save_video, args=(np.zeros((4, 16, 16, 3), np.uint8), 'out.mp4')).start()\n"
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert iio.imread(tmp_path / "out.mp4", index=None).shape == (4, 16, 16, 3)
