"""Seamless loops (`enable_free_noise(closed_loop=True)`, CLI --loop) and the window blends beside flat / pyramid."""

import pytest
import torch

from harivo.cli import main
from harivo.pipelines.free_noise import FreeNoiseSettings
from tests.pipelines.test_pipeline_reliability import CALL, conditioned_adapter, make_pipe


def settings(scheme="pyramid", loop=False, length=4, stride=2):
    return FreeNoiseSettings(length, stride, scheme, "shuffle_context", loop)


def test_loop_windows_wrap_and_cover_every_frame_alike():
    windows = settings(loop=True).windows(8)
    assert windows == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 0, 1]]
    counts = torch.bincount(torch.tensor([f for w in windows for f in w]), minlength=8)
    assert counts.tolist() == [2] * 8  # the seam (7 -> 0) is in as many windows as any other pair
    assert [list(w) for w in settings().windows(8)] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]


def test_window_weights():
    torch.testing.assert_close(settings("overlap-linear").weights(4), torch.tensor([1 / 3, 2 / 3, 2 / 3, 1 / 3]))
    torch.testing.assert_close(settings("overlap-linear", stride=4).weights(4), torch.ones(4))  # no overlap: flat
    gaussian = settings("gaussian", length=8).weights(8)
    torch.testing.assert_close(gaussian, gaussian.flip(0))
    assert gaussian.argmax() in (3, 4) and gaussian.min() > 0


def test_a_loop_samples_and_differs_from_the_open_clip(tiny_sd, scheme="gaussian"):
    pipe = make_pipe(tiny_sd, conditioned_adapter(tiny_sd))

    def video(loop):
        pipe.enable_free_noise(context_length=4, context_stride=2, weighting_scheme=scheme, closed_loop=loop)
        generator = torch.Generator().manual_seed(0)
        return pipe(**{**CALL, "num_frames": 8}, num_inference_steps=2, generator=generator, output_type="pt").frames

    looped = video(True)
    assert torch.isfinite(looped).all() and not torch.allclose(looped, video(False))


def test_a_loop_needs_more_frames_than_one_window(tiny_sd):
    pipe = make_pipe(tiny_sd, conditioned_adapter(tiny_sd))
    pipe.enable_free_noise(context_length=4, context_stride=2, closed_loop=True)
    with pytest.raises(ValueError, match=r"A closed loop needs more frames than one window \(4, `context_length`\)"):
        pipe(**CALL, num_inference_steps=2)


def test_loop_from_the_command_line(base_dir, mapped_adapter_path, tmp_path, capsys):
    common = ["--base-model", str(base_dir), "--adapter", str(mapped_adapter_path), "--height", "16", "--width", "16",
              "--steps", "2", "--context-length", "4", "--context-stride", "2"]  # fmt: skip
    main(["generate", "a red circle", "-o", str(tmp_path / "loop.gif"), *common, "--num-frames", "8", "--loop",
          "--window-weighting", "gaussian"])  # fmt: skip
    assert "8 frames in 4 overlapping windows of 4" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", str(tmp_path / "x.gif"), *common, "--num-frames", "4", "--loop"])
    assert "A closed loop needs more frames than one window (4, --context-length): raise --num-frames" in (
        capsys.readouterr().err
    )


def test_a_loops_path_goes_out_and_back_at_the_paths_speed():
    import math

    from harivo.pipelines.free_noise import loop_path

    num_frames = 32
    path = torch.arange(num_frames, dtype=torch.float32)[None, :, None] * torch.tensor([[[0.5, -0.25]]])  # one way
    looped = loop_path(path)
    assert looped.shape == path.shape and torch.equal(looped[:, 0], torch.zeros(1, 2))
    steps = looped.diff(dim=1).norm(dim=-1)
    assert abs(float(steps.max()) - math.hypot(0.5, 0.25)) < 0.01  # the top speed is the path's speed
    seam = float((looped[:, -1] - looped[:, 0]).norm())
    assert seam <= float(steps.max())  # the last frame is as close to the first as neighbours are
    top = looped[0, num_frames // 2]
    assert top[0] > 0 > top[1]  # out along the path's direction (right and up), then back
    torch.testing.assert_close(loop_path(torch.zeros(1, num_frames, 2)), torch.zeros(1, num_frames, 2))


def test_a_moving_loop_on_the_embedded_model_is_seamless():
    """The object travels the prompted way and comes back: the jump from the last frame to the first is no larger
    than between neighbouring frames (the open clip's is about 6 times larger; benchmarks/loops.py)."""
    import sys
    from pathlib import Path

    from harivo import load_default_pipeline

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from loops import seam_ratio

    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_free_noise(context_length=16, context_stride=8, closed_loop=True)
    frames = pipe(
        "a large red circle moving right on a plain black background", num_frames=24, num_inference_steps=6,
        guidance_rescale=0.7, output_type="np", generator=torch.Generator().manual_seed(0),
    ).frames[0]  # fmt: skip
    seam, neighbours = seam_ratio(frames)
    assert seam <= neighbours and neighbours > 1.0, (seam, neighbours)
