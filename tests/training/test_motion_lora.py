"""Motion LoRAs from reference clips (`harivo motion-lora`, MotionDirector on HARIVO) on the embedded model: the
LoRA and the path it carries, an exactly resumed run, `--lora` following the path, and one-line refusals."""

import json

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from harivo.cli import main
from harivo.data.shapes import ShapeScene, render_frame
from harivo.loras import MOTION_CONFIG, carried_motion_path
from harivo.video_io import save_video

VELOCITY = 2.0  # pixels a frame, down-right: 0.5 latent pixels of the embedded model


def clips(folder, count=2, frames=6, captions=True):
    folder.mkdir(parents=True, exist_ok=True)
    for index, caption in enumerate(["a large red circle on a plain black background",
                                     "a large blue square on a plain white background"][:count]):  # fmt: skip
        scene = ShapeScene.from_caption(caption)
        video = [render_frame(scene, (16 + VELOCITY * t, 16 + VELOCITY * t)) for t in range(frames)]
        save_video(np.stack(video), folder / f"clip{index}.mp4")
        if captions:
            (folder / f"clip{index}.txt").write_text(caption)
    return folder


def train(videos, output, *extra):
    try:
        main(["motion-lora", "--videos", str(videos), "--num-frames", "4", "--lora-rank", "2", "--spatial-lora-rank",
              "2", "--batch-size", "2", "-o", str(output), "num_validation_samples=0", "checkpoint_every=1", *extra])  # fmt: skip
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return output / "final"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("motion-lora")
    videos = clips(folder / "clips")
    return videos, train(videos, folder / "run", "--max-steps", "2")


def test_the_lora_is_temporal_and_carries_the_clips_path(trained):
    _, final = trained
    assert sorted(p.name for p in final.iterdir()) == [MOTION_CONFIG, "pytorch_lora_weights.safetensors"]
    keys = load_file(final / "pytorch_lora_weights.safetensors")
    assert keys and all(".motion_modules." in key and ".lora" in key for key in keys)  # the appearance LoRA is dropped
    path = torch.tensor(json.loads((final / MOTION_CONFIG).read_text())["motion_path"])
    assert path.shape == (4, 2)
    torch.testing.assert_close(path[-1], torch.full((2,), 3 * VELOCITY / 4), atol=0.1, rtol=0)  # latent pixels


def test_a_resumed_run_ends_with_the_same_lora(trained, tmp_path):
    videos, final = trained
    train(videos, tmp_path, "--max-steps", "1")
    again = train(videos, tmp_path, "--max-steps", "2", "--resume")
    expected = load_file(final / "pytorch_lora_weights.safetensors")
    for key, value in load_file(again / "pytorch_lora_weights.safetensors").items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_generate_with_the_lora_follows_its_path(trained, tmp_path):
    _, final = trained
    main(["generate", "a large yellow star on a striped black background", "--lora", str(final), "--num-frames", "6",
          "--steps", "2", "-o", str(tmp_path / "star.gif")])  # fmt: skip
    assert (tmp_path / "star.gif").is_file()
    # past the clips' frames the path goes on at its mean velocity; within them it is theirs
    path = carried_motion_path([str(final)], 6)
    steps = path.diff(dim=0)
    torch.testing.assert_close(steps[-1], steps[-2]) and torch.testing.assert_close(
        path[:4], carried_motion_path([str(final)], 4)
    )
    assert carried_motion_path([str(final / "pytorch_lora_weights.safetensors")], 2).shape == (2, 2)  # the file too
    with pytest.raises(ValueError, match="both carry a motion path; choose one with --motion"):
        carried_motion_path([str(final), f"{final}:0.5"], 4)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "no clips in it"),
        ("many", "more than motion_lora.max_videos (1)"),
        ("short", "has 3 frames, fewer than motion_lora.num_frames (4)"),
        ("uncaptioned", "has no caption: pass --prompt"),
        ("missing", "is not a folder"),
    ],
)
def test_bad_reference_clips_are_one_line(tmp_path, capsys, setup, message):
    videos = tmp_path / "clips"
    extra = []
    if setup == "many":
        clips(videos, count=2)
        extra = ["motion_lora.max_videos=1"]
    elif setup == "short":
        clips(videos, count=1, frames=3)
    elif setup == "uncaptioned":
        clips(videos, count=1, captions=False)
    elif setup == "empty":
        videos.mkdir()
    with pytest.raises(SystemExit):
        train(videos, tmp_path / "run", *extra, "--max-steps", "1")
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
