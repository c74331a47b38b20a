import imageio.v3 as iio
import pytest
import torch

from harivo.cli import main
from harivo.models import HarivoAdapter


@pytest.fixture(scope="module")
def adapter_path(tiny_sd, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "adapter"
    HarivoAdapter.from_unet(
        tiny_sd.unet, num_frame_tokens=2, max_frames=8, motion_num_attention_heads=2
    ).save_pretrained(path)
    return path


def test_generate_writes_a_video(base_dir, adapter_path, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    main(["generate", "a small red circle moving left", "-o", str(out), "--base-model", str(base_dir),
          "--adapter", str(adapter_path), "--num-frames", "4", "--height", "16", "--width", "16", "--steps", "2",
          "--mg-scale", "40", "--scheduler", "euler", "--seed", "3"])  # fmt: skip
    assert iio.imread(out, index=None).shape[0] == 4
    assert "Wrote" in capsys.readouterr().out


def test_generate_with_the_embedded_default_model(tmp_path, capsys):
    out = tmp_path / "default.gif"
    main(["generate", "a large green square moving up on a plain white background", "-o", str(out), "--steps", "3",
          "--num-frames", "4"])  # fmt: skip
    assert iio.imread(out, index=None).shape == (4, 64, 64, 3)


def test_adapter_without_base_model_says_what_to_pass(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), "--adapter", str(tmp_path)])
    assert "--adapter needs --base-model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheduler", "nope"], "Unknown scheduler"),
        (["--height", "15"], "multiple of the VAE"),
        (["--num-frames", "40"], "from 1 to 8"),
        (["--steps", "0"], "positive integer"),
    ],
)
def test_bad_arguments_exit_with_a_message_not_a_traceback(base_dir, adapter_path, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), "--base-model", str(base_dir),
              "--adapter", str(adapter_path), "--num-frames", "4", "--height", "16", "--width", "16", *extra])  # fmt: skip
    assert exit_info.value.code == 1
    assert message in capsys.readouterr().err


def test_missing_adapter_folder(base_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "x", "--base-model", str(base_dir), "--adapter", str(tmp_path / "missing")])
    assert "does not exist" in capsys.readouterr().err
    assert torch.__version__  # the CLI ran in-process, no subprocess needed
