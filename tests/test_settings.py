"""Outputs remember how they were made (`<output>.json` and the video's metadata; `harivo generate --from`), and the
command line starts without the heavy libraries."""

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from harivo.cli import main
from harivo.models import HarivoAdapter
from harivo.request import SCHEDULER_NAMES
from harivo.settings import settings_path
from harivo.video_io import VIDEO_SUFFIXES, read_video_comment, save_video


@pytest.fixture(scope="module")
def model_args(tiny_sd, base_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("settings") / "adapter"
    HarivoAdapter.from_unet(tiny_sd.unet, max_frames=8, motion_num_attention_heads=2).save_pretrained(path)
    return ["--base-model", str(base_dir), "--adapter", str(path)]


def frames_of(path):
    return iio.imread(path, index=None, plugin="pyav") if path.suffix != ".gif" else iio.imread(path, index=None)


def test_a_video_made_again_from_its_settings_is_the_same_video(model_args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "clips" / "first.mp4"
    main(["generate", "a small red circle moving left", "-o", str(first), *model_args, "--num-frames", "4",
          "--height", "16", "--width", "16", "--steps", "2", "--seed", "5", "--prompt-at", "2", "a blue square",
          "--mg-scale", "10", "--motion", "1", "0"])  # fmt: skip
    stored = json.loads(settings_path(first).read_text())
    assert stored["options"]["seed"] == 5 and stored["options"]["prompt_at"] == [["2", "a blue square"]]
    assert stored["options"]["adapter"] == model_args[3]  # absolute paths
    assert stored["resolved"]["frames"] == 4 and stored["resolved"]["scheduler"]
    assert json.loads(read_video_comment(first)) == stored  # the video says it too

    main(["generate", "--from", str(settings_path(first))])  # from another folder: paths are absolute
    again = first.with_name("first-again.mp4")
    assert np.array_equal(frames_of(again), frames_of(first))

    settings_path(first).unlink()  # the metadata alone is enough
    main(["generate", "--from", str(first), "-o", str(tmp_path / "meta.mp4")])
    main(["generate", "--from", str(first), "-o", str(tmp_path / "seed6.mp4"), "--seed", "6"])  # options override
    assert np.array_equal(frames_of(tmp_path / "meta.mp4"), frames_of(first))
    assert json.loads(settings_path(tmp_path / "seed6.mp4").read_text())["options"]["seed"] == 6
    assert not np.array_equal(frames_of(tmp_path / "seed6.mp4"), frames_of(first))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not json", "not a settings file"),
        ('{"format": "other"}', "not a harivo generate settings file"),
        ('{"format": "harivo-generate/1", "options": {"sharpness": 3}}', "unknown option(s) sharpness"),
    ],
)
def test_bad_settings_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit):
        main(["generate", "--from", str(path)])
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_video_without_settings_and_a_missing_prompt_are_one_line_errors(tmp_path, capsys):
    video = save_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "plain.mp4")
    with pytest.raises(SystemExit):
        main(["generate", "--from", str(video)])
    assert "no plain.mp4.json beside it and no settings in its metadata" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "-o", str(tmp_path / "x.mp4")])
    assert "Give a prompt" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [*VIDEO_SUFFIXES, ".gif"])
def test_every_container_keeps_the_frames_and_the_comment(tmp_path, suffix):
    frames = np.zeros((3, 16, 24, 3), np.uint8)
    frames[:, 4:12, 6:18] = (200, 40, 40)
    path = save_video(frames, tmp_path / f"clip{suffix}", comment='{"prompt": "a \\"red\\" square"}')
    assert json.loads(read_video_comment(path)) == {"prompt": 'a "red" square'}
    assert np.abs(frames_of(path).astype(int) - frames).mean() < 8  # .webm was a 262-byte empty file before


def test_help_imports_neither_torch_nor_diffusers():
    """`harivo --help` and each command's answer at once: the heavy libraries load only when a command runs."""
    code = (
        "import sys\nfrom harivo.cli import main\n"
        "for argv in (['--help'], ['generate', '--help'], ['ui', '--help'], ['train', '--help'], ['eval', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = sorted({'torch', 'diffusers', 'transformers', 'gradio'} & set(sys.modules))\n"
        "print('HEAVY', heavy)\n"
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in result.stdout, result.stdout[-500:] + result.stderr[-2000:]
    assert "--from SETTINGS" in result.stdout and "--host HOST" in result.stdout


def test_the_cli_names_every_sampler():
    from harivo.request import TIMESTEP_SPACINGS as cli_spacings
    from harivo.schedulers import SCHEDULERS, TIMESTEP_SPACINGS

    assert tuple(SCHEDULERS) == SCHEDULER_NAMES
    assert cli_spacings == TIMESTEP_SPACINGS


def test_generate_samples_as_the_adapter_recommends_unless_told(tmp_path):
    """The embedded adapter recommends DPM-Solver++ in 15 steps (model card, "Fewer steps"); options override it."""
    main(["generate", "a large red circle moving right", "-o", str(tmp_path / "a.gif"), "--num-frames", "2"])
    resolved = json.loads(settings_path(tmp_path / "a.gif").read_text())["resolved"]
    assert (resolved["scheduler"], resolved["steps"]) == ("DPMSolverMultistepScheduler", 15)
    main(["generate", "a large red circle moving right", "-o", str(tmp_path / "b.gif"), "--num-frames", "2",
          "--steps", "3", "--scheduler", "ddim"])  # fmt: skip
    resolved = json.loads(settings_path(tmp_path / "b.gif").read_text())["resolved"]
    assert (resolved["scheduler"], resolved["steps"]) == ("DDIMScheduler", 3)


def test_a_settings_file_never_chooses_where_to_write_or_an_opt_in(model_args, tmp_path, monkeypatch, recwarn):
    """Anyone can write a settings file or a video's metadata: its output and opt-ins are ignored, with a warning."""
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "made" / "first.mp4"
    main(["generate", "a small red circle", "-o", str(first), *model_args, "--num-frames", "2", "--height", "16",
          "--width", "16", "--steps", "1"])  # fmt: skip
    stored = json.loads(settings_path(first).read_text())
    assert not {"output", "allow_pickle", "skip_memory_check"} & set(stored["options"])
    outside = tmp_path / "elsewhere" / "x.mp4"
    outside.parent.mkdir()
    outside.write_bytes(b"precious")
    stored["options"].update(output=str(outside), allow_pickle=True, skip_memory_check=True)
    hostile = tmp_path / "made" / "hostile.json"
    hostile.write_text(json.dumps(stored))
    main(["generate", "--from", str(hostile)])
    assert outside.read_bytes() == b"precious"
    assert (tmp_path / "made" / "hostile-again.mp4").is_file()  # beside the file it came from
    warned = " ".join(str(warning.message) for warning in recwarn)
    assert "ignored allow_pickle, output, skip_memory_check" in warned


def test_settings_too_long_for_ffmpeg_leave_the_video_without_its_comment(tmp_path):
    comment = json.dumps({"prompt": "x" * 200_000})
    with pytest.warns(UserWarning, match="written without it"):
        path = save_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "long.mp4", comment=comment)
    assert frames_of(path).shape == (2, 8, 8, 3) and read_video_comment(path) is None
    gif = save_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "long.gif", comment=comment)
    assert read_video_comment(gif) == comment  # a GIF takes any length


def test_an_unknown_sampler_is_refused_before_the_model_loads(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), "--base-model", str(tmp_path / "nothing"),
              "--scheduler", "foo"])  # fmt: skip
    assert "Unknown --scheduler 'foo'" in capsys.readouterr().err


def test_ctrl_c_during_generate_ends_in_one_line_and_leaves_no_file(tmp_path):
    """SIGINT while sampling: exit 130, one line, the output that was there before untouched, no partial file."""
    import re
    import signal
    import threading
    import time

    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous video")
    # as a terminal delivers it: SIGINT not ignored (a test run started with `&` in a script ignores it, and
    # children inherit that)
    process = subprocess.Popen(
        [sys.executable, "-m", "harivo.cli", "generate", "a small red circle", "-o", str(out), "--num-frames", "8",
         "--steps", "400"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: process.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not re.search(r"\b[1-9]\d*/400", "".join(err)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # until sampling has begun
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(err)
    assert process.returncode == 130, err
    assert err.rstrip().splitlines()[-1] == "error: interrupted (harivo generate stopped)." and "Traceback" not in err
    assert out.read_bytes() == b"the previous video"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.mp4"]


def test_ctrl_c_while_writing_finishes_the_write_then_stops(tmp_path):
    import os
    import signal

    from harivo.video_io import interrupts_deferred

    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        path = save_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "whole.mp4")
    assert frames_of(path).shape == (2, 8, 8, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.mp4"]
