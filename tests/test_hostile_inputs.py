"""Inputs a careless or hostile user gives (issue 31's list): each ends in one line before anything heavy runs, reads
no more than the memory check allows, and a settings file is checked like typed options."""

import json
import os

import numpy as np
import PIL.Image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harivo.cli import build_parser, main, parse_generate
from harivo.video_io import read_frames, read_image, save_video


def one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_video_larger_than_the_budget_is_refused_from_its_header_and_while_decoding(tmp_path):
    clip = save_video(np.zeros((6, 64, 48, 3), np.uint8), tmp_path / "clip.mp4")
    assert len(read_frames(clip, budget=None)) == 6
    per_frame = 64 * 48 * 15
    with pytest.raises(MemoryError, match=r"6 frame\(s\) of 48x64 .*MiB.*--skip-memory-check"):
        read_frames(clip, budget=5 * per_frame)  # the header's frame count
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):
        PIL.Image.new("RGB", (48, 64)).save(folder / f"{index}.png")
    with pytest.raises(MemoryError, match="1 frame"):
        read_frames(folder, budget=2 * per_frame + 1)  # the third image passes the rest of the budget
    assert len(read_frames(folder, budget=3 * per_frame)) == 3


def test_the_cli_checks_input_sizes_against_the_memory_check(tmp_path, capsys, monkeypatch):
    import harivo.video_io

    clip = save_video(np.zeros((4, 64, 64, 3), np.uint8), tmp_path / "clip.mp4")
    monkeypatch.setattr(harivo.video_io, "input_budget", lambda check=True: 1000 if check else None)
    for flag in ("--video", "--control"):
        err = one_line_error(capsys, ["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), flag, str(clip)])
        assert "more than the 0.0 MiB inputs may take" in err


def test_a_decompression_bomb_image_is_one_line(tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    PIL.Image.new("1", (20000, 20000)).save(bomb)  # 400 M pixels in a few kB
    with pytest.raises(ValueError, match="too large an image to read safely"):
        read_image(bomb)
    err = one_line_error(capsys, ["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), "--image", str(bomb)])
    assert "too large an image" in err


def test_folders_pipes_and_missing_files_are_named_for_what_they_are(tmp_path, capsys):
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    out = ["-o", str(tmp_path / "x.mp4")]
    assert "is not a regular file" in one_line_error(capsys, ["generate", "a", *out, "--video", str(fifo)])
    assert "is a folder: give an image file" in one_line_error(
        capsys, ["generate", "a", *out, "--image", str(tmp_path)]
    )
    assert "does not exist" in one_line_error(capsys, ["generate", "a", *out, "--image", str(tmp_path / "no.png")])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lora", "style.safetensors:-1e9"], "the scale must be a number from -10 to 10"),
        (["--prompt-at", "\N{ARABIC-INDIC DIGIT THREE}", "a blue square"], "--prompt-at FRAME must be a frame number"),
    ],
)
def test_values_that_only_make_garbage_are_refused(tmp_path, capsys, monkeypatch, extra, message):
    (tmp_path / "style.safetensors").write_bytes(b"")
    argv = ["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), *extra]
    monkeypatch.chdir(tmp_path)
    assert message in one_line_error(capsys, argv)


def settings_file(tmp_path, options: dict | str) -> str:
    path = tmp_path / "s.json"
    content = options if isinstance(options, str) else json.dumps({"format": "harivo-generate/1", "options": options})
    path.write_text(content)
    return str(path)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prompt_at": 5}, "prompt_at is 5, which --prompt-at does not take (expected a list"),
        ({"prompt_at": [["2"]]}, "expected a list of 2 values"),
        ({"seed": 1.5}, "seed is 1.5, which --seed does not take (expected a whole number)"),
        ({"seed": "x"}, "invalid literal"),
        ({"mg_window": [0, "a"]}, "--mg-window does not take"),
        ({"scheduler": ["ddim"]}, "expected a number or a string"),
        ({"video_motion": "yes"}, "expected true or false"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_settings_files_are_checked_like_typed_options(tmp_path, capsys, options, message):
    err = one_line_error(capsys, ["generate", "--from", settings_file(tmp_path, options)])
    assert message in err


def test_a_settings_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_bytes(b'{"format": "harivo-generate/1", "options": {"prompt": "\xff"}}')
    assert "not UTF-8 text" in one_line_error(capsys, ["generate", "--from", str(path)])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    name=st.sampled_from(sorted(action.dest for action in build_parser().subcommands["generate"]._actions)),
    value=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)),
        lambda inner: st.lists(inner, max_size=3),
        max_leaves=6,
    ),
)
def test_any_settings_value_parses_or_is_one_line(tmp_path_factory, name, value):
    """Whatever a settings file holds for any option: the parsed options are what the typed flag would give, or a
    one-line error; where to write and the opt-ins never come from it."""
    parser = build_parser()
    path = settings_file(tmp_path_factory.mktemp("sweep"), {"prompt": "a red circle", name: value})
    argv = ["generate", "--from", path]
    try:
        with pytest.warns() if name in ("output", "allow_pickle", "skip_memory_check", "command") else _nothing():
            args = parse_generate(parser, argv, parser.parse_args(argv))
    except ValueError as error:
        assert "\n" not in str(error) and str(error).startswith(f"--from {path}: ")
        return
    assert not args.allow_pickle and not args.skip_memory_check
    assert os.path.dirname(args.output) == os.path.dirname(path)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_an_output_folder_that_is_a_file_is_said_plainly(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    err = one_line_error(
        capsys, ["train", "--config", "configs/shapes/vae.yaml", f"output_dir={taken}", "max_steps=1"]
    )
    assert f"{taken} is a file, not a folder" in err
    err = one_line_error(capsys, ["eval", "--real", "--prompts-per-group", "2", "--seeds", "0", "--output-dir",
                                  str(taken / "sub")])  # fmt: skip
    assert f"{taken} is a file, not a folder" in err


def test_dreambooth_on_a_single_file_says_to_convert_it(tmp_path, capsys):
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"")
    err = one_line_error(capsys, ["dreambooth", "--instance-data", str(tmp_path), "--identifier", "v", "--base-model",
                                  str(single), "-o", str(tmp_path / "run")])  # fmt: skip
    assert "is a single file; DreamBooth trains a diffusers folder or hub id" in err


def test_a_controlnet_for_another_architecture_is_blamed_on_the_controlnet(tiny_sd, tmp_path, capsys):
    from tests.pipelines.test_pipeline_controlnet import make_controlnet

    make_controlnet(tiny_sd.unet).save_pretrained(tmp_path / "net")  # the tiny model's, not the embedded base's
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(4):
        PIL.Image.new("RGB", (64, 64)).save(frames / f"{index}.png")
    err = one_line_error(capsys, ["generate", "a red circle", "--controlnet", str(tmp_path / "net"), "--control",
                                  str(frames), "--num-frames", "4", "-o", str(tmp_path / "x.gif")])  # fmt: skip
    assert "The ControlNet was built for another base model: its cross_attention_dim" in err
    assert "Could not load the base model" not in err


def test_a_folder_given_for_a_file_is_called_a_folder(tmp_path, capsys):
    assert "--from" in one_line_error(capsys, ["generate", "--from", str(tmp_path)])
    assert "is a folder" in one_line_error(capsys, ["generate", "--from", str(tmp_path)])
    assert "is a folder: give a YAML file" in one_line_error(capsys, ["train", "--config", str(tmp_path)])


def _valid_file(kind: str, path) -> None:
    """A small valid file of each input kind, to truncate."""
    frames = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    if kind in ("mp4", "gif"):
        save_video(frames, path)
    elif kind == "png":
        PIL.Image.fromarray(frames[0]).save(path)
    elif kind == "safetensors":
        import torch
        from safetensors.torch import save_file

        save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 32)}, path)


CORRUPTIONS = {
    "empty": lambda data: b"",
    "random bytes": lambda data: np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "truncated": lambda data: data[: len(data) // 2],
    "huge header": lambda data: (2**62).to_bytes(8, "little") + b"{}",
}
SURFACES = {  # flag, file kind, what a user passes
    "--video": "mp4", "--image": "png", "--control": "mp4", "--lora": "safetensors", "--base-model": "safetensors",
    "--ip-adapter-image": "png", "--from": "mp4",
}  # fmt: skip


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("flag", sorted(SURFACES))
def test_damaged_files_on_every_input_end_in_one_line_and_write_nothing(
    tmp_path, capsys, monkeypatch, flag, corruption
):
    kind = SURFACES[flag]
    path = tmp_path / f"input.{kind}"
    _valid_file(kind, path)
    path.write_bytes(CORRUPTIONS[corruption](path.read_bytes()))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "x.mp4"
    argv = ["generate", "a red circle", "-o", str(out), "--steps", "1", "--num-frames", "2", flag, str(path)]
    if flag == "--control":
        from harivo.defaults import DEFAULT_MODEL_DIR

        argv += ["--controlnet", str(DEFAULT_MODEL_DIR / "controlnet")]
    if flag == "--ip-adapter-image":  # the IP-Adapter's layout only: the image is read before any model loads
        (tmp_path / "ip" / "image_encoder").mkdir(parents=True)
        (tmp_path / "ip" / "ip.safetensors").write_bytes(b"")
        argv += ["--ip-adapter", str(tmp_path / "ip" / "ip.safetensors")]
    if flag == "--from":
        argv = ["generate", "--from", str(path), "-o", str(out)]
    err = one_line_error(capsys, argv)
    assert str(path) in err or path.name in err, err  # the message names the file
    assert not out.parent.exists() or not any(out.parent.iterdir())
