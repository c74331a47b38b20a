import json
import os
import time

import imageio.v3 as iio
import numpy as np
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


def test_generate_along_a_given_motion(base_dir, adapter_path, tmp_path):
    common = ["generate", "a small red circle", "--base-model", str(base_dir), "--adapter", str(adapter_path),
              "--num-frames", "4", "--height", "16", "--width", "16", "--steps", "2"]  # fmt: skip
    main([*common, "-o", str(tmp_path / "still.gif")])
    main([*common, "-o", str(tmp_path / "moving.gif"), "--motion", "1", "0"])
    still, moving = (iio.imread(tmp_path / name, index=None) for name in ("still.gif", "moving.gif"))
    assert moving.shape == still.shape == (4, 16, 16, 3) and not np.array_equal(moving, still)
    options = ["--motion", "1", "0", "--motion-path-mask", "frame", "--temporal-window", "0", "0.5"]
    main([*common, "-o", str(tmp_path / "pan.gif"), *options])
    main([*common, "-o", str(tmp_path / "circle.gif"), "--motion", "1", "0", "--motion-subject", "red circle"])
    main([*common, "-o", str(tmp_path / "scene.gif"), "--motion", "1", "0", "--motion-subject", "small",
          "--motion-scene", "red circle"])  # fmt: skip
    every_step = ["--motion", "1", "0", "--motion-path-window", "0", "1"]
    main([*common, "-o", str(tmp_path / "union.gif"), *every_step])
    main([*common, "-o", str(tmp_path / "core.gif"), *every_step, "--motion-path-core-window", "0", "1"])
    pan, circle, scene, union, core = (
        iio.imread(tmp_path / f"{name}.gif", index=None) for name in ("pan", "circle", "scene", "union", "core")
    )
    assert not np.array_equal(pan, moving) and not np.array_equal(circle, moving)
    assert not np.array_equal(scene, moving) and not np.array_equal(scene, circle)
    assert not np.array_equal(core, union)


def test_generate_with_the_embedded_default_model(tmp_path, capsys):
    out = tmp_path / "default.gif"
    main(["generate", "a large green square moving up on a plain white background", "-o", str(out), "--steps", "3",
          "--num-frames", "4"])  # fmt: skip
    assert iio.imread(out, index=None).shape == (4, 64, 64, 3)


def test_an_adapter_alone_runs_on_the_embedded_base_or_says_what_to_pass(adapter_path, tmp_path, capsys):
    """An adapter trained on the embedded base (training's fallback) needs no --base-model; one trained on another
    base model is told to name it."""
    from harivo.defaults import default_model_paths

    out = tmp_path / "alone.gif"
    main(["generate", "a red circle", "-o", str(out), "--adapter", str(default_model_paths()[1]), "--steps", "2",
          "--num-frames", "4"])  # fmt: skip
    assert iio.imread(out, index=None).shape == (4, 64, 64, 3)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), "--adapter", str(adapter_path)])
    err = capsys.readouterr().err
    assert "was not trained on the embedded Shapes base model" in err and "pass --base-model" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheduler", "nope"], "Unknown --scheduler"),
        (["--height", "15"], "multiple of the VAE"),
        (["--num-frames", "0"], "from 1 to 8"),
        (["--num-frames", "12", "--context-length", "9"], "--context-length must be an integer from 1 to 8"),
        (["--prompt-at", "x", "a blue square"], "--prompt-at FRAME must be a frame number"),
        (["--prompt-at", "0", "a blue square"], "frame 0 is the positional prompt's"),
        (["--prompt-at", "2", "a", "--prompt-at", "2", "b"], "frame 2 is given twice"),
        (["--prompt-at", "4", "a blue square"], "keyframe 4 is outside"),
        (["--strength", "0.5"], "--strength needs --video or --image"),
        (["--free-init", "0"], "--free-init must be a positive number"),
        (["--ip-adapter", "ip.safetensors"], "--ip-adapter and --ip-adapter-image go together"),
        (["--ip-adapter", "ip.safetensors", "--ip-adapter-image", "x.png"], "must be a weight file in a folder"),
        (["--video-motion"], "--video-motion needs --video"),
        (["--image", "missing.png"], "missing.png does not exist"),
        (["--video", "missing.mp4"], "missing.mp4 does not exist"),
        (["--steps", "0"], "positive integer"),
        (["--motion-path-projection", "2"], "--motion-path-projection must"),
        (["--mg-energy", "motion_path", "--mg-scale", "40"], "need a path"),
        (["--mg-gradient", "x0", "--mg-energy", "attention", "--mg-scale", "10"], "energy of the clean latents"),
        (["--motion", "1", "0", "--motion-subject", "zebra"], "not among the first"),
        (["--motion", "1", "0", "--motion-scene", "zebra"], "motion scene 'zebra' is not among"),
        (["--temporal-window", "0.8", "0.2"], "--temporal-window must be"),
        (["--motion-path-core-window", "0.8", "0.2"], "--motion-path-core-window must be"),
        (["--guidance-scale", "nan"], "--guidance-scale must be"),
        (["--guidance-scale", "inf"], "--guidance-scale must be"),
        (["--mg-scale", "nan"], "--mg-scale must be"),
        (["--mg-window", "0", "nan"], "--mg-window must be"),
        (["--seed", "-1"], "--seed must be from 0"),
        (["--seed", str(2**64)], "--seed must be from 0"),
        (["--device", "bogus"], "--device 'bogus' is not a device"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device cuda"),
        (["--fps", "0"], "--fps must be a positive"),
        (["--height", "4096", "--width", "4096"], "GiB is free: lower height/width"),
        (["--num-frames", "2000"], "--num-frames 2000 is more than --max-frames (1024)"),
        (["--num-frames", "20", "--max-frames", "10"], "raise --max-frames to make it anyway"),
        (["--eta", "2", "--scheduler", "ddim"], "eta"),
    ],
)
def test_bad_arguments_exit_with_a_message_not_a_traceback(base_dir, adapter_path, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "a red circle", "-o", str(tmp_path / "x.mp4"), "--base-model", str(base_dir),
              "--adapter", str(adapter_path), "--num-frames", "4", "--height", "16", "--width", "16", *extra])  # fmt: skip
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("scheduler", ["ddpm", "euler-ancestral"])
def test_samplers_whose_noise_bypasses_the_mapping_network_are_refused(
    base_dir, mapped_adapter_path, tmp_path, capsys, scheduler
):
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", str(tmp_path / "x.gif"), "--base-model", str(base_dir), "--adapter",
              str(mapped_adapter_path), "--num-frames", "2", "--height", "16", "--width", "16", "--scheduler",
              scheduler])  # fmt: skip
    assert "bypasses this adapter's noise mapping network" in capsys.readouterr().err


def test_few_step_samplers_run_with_a_mapped_adapter_and_trailing_spacing(base_dir, mapped_adapter_path, tmp_path):
    """lcm / tcd: their fresh noise goes through the mapping network (no longer refused); --timestep-spacing alone
    re-spaces the model's own sampler."""
    common = ["--base-model", str(base_dir), "--adapter", str(mapped_adapter_path), "--num-frames", "2", "--height",
              "16", "--width", "16", "--steps", "2"]  # fmt: skip
    for extra, sampler in ((["--scheduler", "lcm"], "LCMScheduler"), (["--scheduler", "tcd", "--eta", "0.3"],
                           "TCDScheduler"), (["--timestep-spacing", "trailing"], None)):  # fmt: skip
        output = tmp_path / f"{len(extra)}-{extra[1]}.gif"
        main(["generate", "a red circle", "-o", str(output), *common, *extra])
        settings = json.loads(output.with_name(output.name + ".json").read_text())
        assert settings["resolved"]["scheduler"] == (sampler or settings["resolved"]["scheduler"])
        assert settings["options"]["timestep_spacing"] == (extra[1] if sampler is None else None)


def test_motion_scale_from_the_command_line(base_dir, mapped_adapter_path, tmp_path, capsys):
    common = ["--base-model", str(base_dir), "--adapter", str(mapped_adapter_path), "--num-frames", "2", "--height",
              "16", "--width", "16", "--steps", "2"]  # fmt: skip
    for value in ("0.5", "0,1", "down=1,up=0.5"):
        output = tmp_path / f"{value}.gif"
        main(["generate", "a red circle", "-o", str(output), *common, "--motion-scale", value])
        assert json.loads(output.with_name(output.name + ".json").read_text())["options"]["motion_scale"] == value
    capsys.readouterr()
    for value, message in (("fast", "error: --motion-scale 'fast': give a number (1.2), one per frame"),
                           ("0,1,1", "error: --motion-scale per frame needs 2 values (one per frame), got 3.")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["generate", "a red circle", "-o", str(tmp_path / "x.gif"), *common, "--motion-scale", value])
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message)


def test_pag_from_the_command_line(base_dir, mapped_adapter_path, tmp_path, capsys):
    common = ["--base-model", str(base_dir), "--adapter", str(mapped_adapter_path), "--num-frames", "2", "--height",
              "16", "--width", "16", "--steps", "2"]  # fmt: skip
    main(["generate", "a red circle", "-o", str(tmp_path / "pag.gif"), *common, "--pag-scale", "3"])
    assert json.loads((tmp_path / "pag.gif.json").read_text())["options"]["pag_scale"] == 3.0
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", str(tmp_path / "x.gif"), *common, "--pag-scale", "-1"])
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "error: --pag-scale must be a number >= 0 (0: off), got -1.0."
    )


def test_deep_cache_from_the_command_line(base_dir, mapped_adapter_path, tmp_path, capsys):
    common = ["--base-model", str(base_dir), "--adapter", str(mapped_adapter_path), "--num-frames", "2", "--height",
              "16", "--width", "16", "--steps", "4"]  # fmt: skip
    output = tmp_path / "cached.gif"
    main(["generate", "a red circle", "-o", str(output), *common, "--cache", "2"])
    assert json.loads(output.with_name(output.name + ".json").read_text())["options"]["cache"] == 2
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", str(tmp_path / "x.gif"), *common, "--cache", "0"])
    assert capsys.readouterr().err.strip().endswith("error: --cache must be a positive number of steps, got 0.")


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (".", "it is a directory"),
        ("clip.txt", "use one of"),
        ("missing-folder-is-fine/ok.mp4", None),
        ("a-file/x.mp4", "is a file, not a folder"),
    ],
)
def test_output_path_is_checked_before_any_work(tmp_path, capsys, monkeypatch, output, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    if message is None:
        from harivo.video_io import check_output_path

        assert check_output_path(output, 8).name == "ok.mp4"
        return
    start = time.perf_counter()
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", output])
    assert message in capsys.readouterr().err
    assert time.perf_counter() - start < 2  # refused before the model is loaded


def test_prompt_truncation_warns_naming_the_dropped_words(base_dir, adapter_path, tmp_path):
    long = "a small red circle moving left on a plain black background " * 8 + "then a green square"
    with pytest.warns(UserWarning, match=r"The prompt is longer than the text encoder's 77 tokens") as record:
        main(["generate", long, "-o", str(tmp_path / "x.gif"), "--base-model", str(base_dir), "--adapter",
              str(adapter_path), "--num-frames", "2", "--height", "16", "--width", "16", "--steps", "1"])  # fmt: skip
    (message,) = [str(w.message) for w in record if "longer than" in str(w.message)]
    assert message.endswith("then a green square'.") and "a small red circle moving left on a plain" in message


def test_a_clean_run_prints_progress_and_one_result_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "harivo.cli", "generate", "a small red circle moving left on a plain black background",
         "-o", str(tmp_path / "clip.gif"), "--steps", "2", "--num-frames", "4"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "default"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Wrote") and result.stdout.count("\n") == 1
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all("it/s" in line or "s/it" in line for line in lines), lines  # only the progress bar


def test_concurrent_writers_each_leave_a_complete_video(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from harivo.video_io import save_video

    path = tmp_path / "shared.mp4"
    videos = [np.full((6, 16, 16, 3), level, dtype=np.uint8) for level in (0, 120, 240)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda frames: save_video(frames, path), videos * 3))
    written = iio.imread(path, index=None)
    assert written.shape == (6, 16, 16, 3)
    assert any(np.abs(written.astype(int) - v).max() <= 3 for v in videos)  # one complete video, not a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.mp4"]  # no temporary file left


def test_eval_checks_its_arguments_before_generating(tmp_path, capsys):
    start = time.perf_counter()
    with pytest.raises(SystemExit):
        main(["eval", "-o", str(tmp_path), "--prompts-per-group", "1", "--seeds", "0"])
    assert "at least two clips per prompt group" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "-o", str(tmp_path), "--device", "nope"])
    assert "--device 'nope'" in capsys.readouterr().err
    assert time.perf_counter() - start < 5


def test_missing_adapter_folder(base_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "x", "--base-model", str(base_dir), "--adapter", str(tmp_path / "missing")])
    assert "does not exist" in capsys.readouterr().err
    assert torch.__version__  # the CLI ran in-process, no subprocess needed


@pytest.mark.parametrize("extra", [[], ["--frame-by-frame"]])
def test_eval_writes_results_table_and_contact_sheet(tmp_path, capsys, extra):
    import json

    out = tmp_path / "eval"
    arguments = ["--seeds", "0", "1", "--prompts-per-group", "1", "--num-frames", "4", "--steps", "2"]
    main(["eval", "-o", str(out), *arguments, *extra])
    results = json.loads((out / "results.json").read_text())
    ((label, row),) = results["rows"].items()
    assert label.endswith("(frame by frame)") == bool(extra)
    assert set(row) == {"in video distribution", "outside video distribution", "textured backgrounds"}
    assert row["in video distribution"]["num_clips"] == 2 and "fvd" in row["in video distribution"]
    assert (out / "samples.png").is_file() and "| method" in (out / "table.md").read_text()
    assert "Wrote" in capsys.readouterr().out


def test_eval_of_rendered_clips_is_perfect(tmp_path):
    import json

    main(["eval", "--real", "-o", str(tmp_path), "--seeds", "0", "--prompts-per-group", "4", "--num-frames", "8"])
    row = json.loads((tmp_path / "results.json").read_text())["rows"]["rendered clips"]
    assert all(row[g]["fidelity"]["mean"] == 1.0 and row[g]["motion_correct"]["mean"] == 1.0 for g in row)
    assert all(row[g]["background_flicker"]["mean"] == 0.0 for g in row)
    floor = tmp_path / "floor"
    main(["eval", "--real", "--through-vae", "-o", str(floor), "--seeds", "0", "--prompts-per-group", "2"])
    row = json.loads((floor / "results.json").read_text())["rows"]["rendered clips through the VAE"]
    assert all(row[g]["motion_correct"]["mean"] == 1.0 and row[g]["background_flicker"]["mean"] > 0 for g in row)


def test_through_vae_needs_real(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--through-vae", "-o", str(tmp_path)])
    assert "pass it with --real" in capsys.readouterr().err


def test_eval_videos_needs_something_to_compute(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval-videos", "--generated", str(tmp_path)])
    assert "Nothing to compute" in capsys.readouterr().err


def test_eval_videos_fvd_and_clip_score_on_files(tmp_path, capsys):
    import json

    import numpy as np

    from harivo.data import FULL_WORLD, render_clip
    from harivo.video_io import save_video
    from tests.evaluation.test_fvd import TinyI3D
    from tests.helpers import save_tiny_clip

    rng = np.random.default_rng(0)
    rows = ["path,name"]
    for folder in ("generated", "reference"):
        (tmp_path / folder).mkdir()
        for index in range(3):
            scene = FULL_WORLD.sample(rng)
            save_video(render_clip(scene, 8, rng)[0], tmp_path / folder / f"{index}.gif", fps=8)
            if folder == "generated":
                rows.append(f"{index}.gif,{scene.caption}")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    torch.jit.script(TinyI3D()).save(str(tmp_path / "i3d.pt"))
    out = tmp_path / "numbers.json"
    clip_dir = save_tiny_clip(tmp_path / "clip")
    main(["eval-videos", "--generated", str(tmp_path / "generated"), "--reference", str(tmp_path / "reference"),
          "--i3d", str(tmp_path / "i3d.pt"), "--clip", str(clip_dir), "--captions", str(tmp_path / "captions.csv"),
          "--num-frames", "8", "-o", str(out)])  # fmt: skip
    numbers = json.loads(out.read_text())
    assert numbers["num_generated"] == 3 and numbers["num_reference"] == 3 and numbers["fvd"] >= 0
    assert 0 <= numbers["clip_score"] <= 100


@pytest.fixture(scope="module")
def controlnet_path(tiny_sd, tmp_path_factory):
    from tests.pipelines.test_pipeline_controlnet import make_controlnet

    path = tmp_path_factory.mktemp("cli") / "controlnet"
    make_controlnet(tiny_sd.unet).save_pretrained(path)
    return path


def _condition_folder(folder, count, size=16):
    folder.mkdir()
    for index in range(count):
        mask = np.zeros((size, size, 3), dtype=np.uint8)
        mask[2 + index : 8 + index, 3 + 2 * index : 9 + 2 * index] = 255
        iio.imwrite(folder / f"{index:03d}.png", mask)
    return folder


def test_generate_with_a_controlnet_on_every_frame_or_keyframes(base_dir, adapter_path, controlnet_path, tmp_path):
    common = ["generate", "a small red circle", "--base-model", str(base_dir), "--adapter", str(adapter_path),
              "--num-frames", "4", "--height", "16", "--width", "16", "--steps", "2",
              "--controlnet", str(controlnet_path)]  # fmt: skip
    dense = _condition_folder(tmp_path / "dense", 4)
    main([*common, "--control", str(dense), "-o", str(tmp_path / "dense.gif")])
    main([*common, "--control", str(dense), "--control-scale", "0", "-o", str(tmp_path / "zero.gif")])
    main(["generate", "a small red circle", "--base-model", str(base_dir), "--adapter", str(adapter_path),
          "--num-frames", "4", "--height", "16", "--width", "16", "--steps", "2", "-o", str(tmp_path / "plain.gif")])  # fmt: skip
    dense_video, zero, plain = (iio.imread(tmp_path / n, index=None) for n in ("dense.gif", "zero.gif", "plain.gif"))
    assert np.array_equal(zero, plain) and not np.array_equal(dense_video, plain)
    keys = _condition_folder(tmp_path / "keys", 2)
    main([*common, "--control", str(keys), "--control-frames", "0,3", "--control-path", "-o", str(tmp_path / "k.gif")])
    assert iio.imread(tmp_path / "k.gif", index=None).shape == (4, 16, 16, 3)
    # Keyframes of a video longer than a window: each window's net reads the conditions of its own frames
    longer = [*common[:7], "8", *common[8:], "--context-length", "4"]
    main([*longer, "--control", str(keys), "--control-frames", "0,7", "--control-path", "-o", str(tmp_path / "l.gif")])
    assert iio.imread(tmp_path / "l.gif", index=None).shape == (8, 16, 16, 3)
    # A video file works as the condition too, and two nets take one --control each
    iio.imwrite(tmp_path / "masks.mp4", iio.imread(tmp_path / "dense.gif", index=None), fps=8, macro_block_size=1)
    main([*common, "--controlnet", str(controlnet_path), "--control", str(dense), "--control",
          str(tmp_path / "masks.mp4"), "--control-scale", "0.5", "1", "-o", str(tmp_path / "two.gif")])  # fmt: skip
    assert iio.imread(tmp_path / "two.gif", index=None).shape == (4, 16, 16, 3)
    # DDIM's eta: fresh noise per step (through the mapping network), reproducible by seed
    for name, eta in (("eta0.gif", "0"), ("eta1.gif", "1"), ("eta1-again.gif", "1")):
        main([*common[:-2], "--scheduler", "ddim", "--eta", eta, "-o", str(tmp_path / name)])
    eta0, eta1, again = (iio.imread(tmp_path / n, index=None) for n in ("eta0.gif", "eta1.gif", "eta1-again.gif"))
    assert np.array_equal(eta1, again) and not np.array_equal(eta0, eta1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--controlnet", "{cn}"], "--controlnet needs --control"),
        (["--control-frames", "0,3"], "--control-frames needs --control"),
        (["--control", "{empty}", "--controlnet", "{cn}"], "holds no images"),
        (["--control", "{missing}", "--controlnet", "{cn}"], "does not exist"),
        (["--control", "{dense}"], "--control needs --controlnet"),
        (["--control", "{dense}", "--controlnet", "{cn}", "--control-frames", "0,x"], "frame numbers separated"),
        (["--control", "{dense}", "--controlnet", "{cn}", "--control-frames", "0,3"], "needs as many as"),
        (["--control", "{dense}", "--controlnet", "{cn}", "--control-frames", "0,0,1,2"], "repeats frames"),
        (["--control", "{dense}", "--controlnet", "{cn}", "--controlnet", "{cn}"], "one --control per --controlnet"),
        (["--control", "{dense}", "--controlnet", "{cn}", "--control-scale", "1", "2"], "values for 1 ControlNet(s)"),
        (["--control", "{dense}", "--controlnet", "{cn}", "--control-path", "--motion", "1", "0"], "at most one"),
        (
            ["--control", "{dense}", "--controlnet", "{cn}", "--num-frames", "12"],
            "--control has 4 images; it needs as many as --num-frames (12)",  # long videos run in windows
        ),
    ],
)
def test_bad_control_arguments_are_one_line_errors(
    base_dir, adapter_path, controlnet_path, tmp_path, capsys, extra, message
):
    (tmp_path / "empty").mkdir()
    dense = _condition_folder(tmp_path / "dense", 4)
    names = {"cn": controlnet_path, "empty": tmp_path / "empty", "missing": tmp_path / "nope", "dense": dense}
    extra = [item.format(**{k: str(v) for k, v in names.items()}) for item in extra]
    with pytest.raises(SystemExit):
        main(["generate", "a small red circle", "-o", str(tmp_path / "x.gif"), "--base-model", str(base_dir),
              "--adapter", str(adapter_path), "--num-frames", "4", "--height", "16", "--width", "16", "--steps", "2",
              *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_generate_with_the_embedded_shapes_controlnet(tmp_path):
    from harivo.data.shapes import ShapeScene
    from harivo.evaluation.control import control_path, silhouette_clip

    masks = silhouette_clip(ShapeScene("star", "yellow", "large", "black", "plain"), control_path("arc", 4))
    iio.imwrite(tmp_path / "masks.gif", masks)
    out = tmp_path / "star.gif"
    main(["generate", "a large yellow star on a plain black background", "--control", str(tmp_path / "masks.gif"),
          "--steps", "3", "--num-frames", "4", "-o", str(out)])  # fmt: skip
    assert iio.imread(out, index=None).shape == (4, 64, 64, 3)
    # keyframes: the path between the two silhouettes is on by default with the Shapes ControlNet
    (tmp_path / "keys").mkdir()
    for index in (0, 3):
        iio.imwrite(tmp_path / "keys" / f"{index}.png", masks[index])
    keys = ["generate", "a large yellow star on a plain black background", "--control", str(tmp_path / "keys"),
            "--control-frames", "0,3", "--steps", "3", "--num-frames", "4"]  # fmt: skip
    main([*keys, "-o", str(tmp_path / "path.gif")])
    main([*keys, "--no-control-path", "-o", str(tmp_path / "nopath.gif")])
    main([*keys, "--control-path", "-o", str(tmp_path / "explicit.gif")])
    path, no_path, explicit = (
        iio.imread(tmp_path / n, index=None) for n in ("path.gif", "nopath.gif", "explicit.gif")
    )
    assert np.array_equal(path, explicit) and not np.array_equal(path, no_path)


def _frames(path):
    return iio.imread(path, index=None)


def test_generate_from_a_single_file_base_and_loras(tiny_sd, base_dir, adapter_path, tmp_path, capsys):
    from safetensors.torch import save_file

    from harivo.single_file import save_single_file
    from tests.helpers import kohya_lora

    checkpoint = save_single_file(tiny_sd, tmp_path / "tiny.safetensors")
    save_file(kohya_lora(tiny_sd.unet, tiny_sd.text_encoder), tmp_path / "style.safetensors")
    common = ["generate", "a small red circle moving left", "--adapter", str(adapter_path), "--num-frames", "4",
              "--height", "16", "--width", "16", "--steps", "2"]  # fmt: skip
    main([*common, "--base-model", str(base_dir), "-o", str(tmp_path / "folder.gif")])
    main([*common, "--base-model", str(checkpoint), "--base-config", str(base_dir), "-o", str(tmp_path / "file.gif")])
    assert np.array_equal(_frames(tmp_path / "file.gif"), _frames(tmp_path / "folder.gif"))
    lora = str(tmp_path / "style.safetensors")
    main([*common, "--base-model", str(base_dir), "--lora", f"{lora}:0", "-o", str(tmp_path / "zero.gif")])
    assert np.array_equal(_frames(tmp_path / "zero.gif"), _frames(tmp_path / "folder.gif"))  # scale 0: no LoRA
    main(
        [
            *common,
            "--base-model",
            str(base_dir),
            "--lora",
            lora,
            "--lora",
            f"{lora}:-0.5",
            "-o",
            str(tmp_path / "l.gif"),
        ]
    )
    assert not np.array_equal(_frames(tmp_path / "l.gif"), _frames(tmp_path / "folder.gif"))
    # the embedded adapter does not fit another architecture: one line that says what to pass
    with pytest.raises(SystemExit):
        main(
            [
                "generate",
                "x",
                "--base-model",
                str(checkpoint),
                "--base-config",
                str(base_dir),
                "-o",
                str(tmp_path / "e.gif"),
            ]
        )
    assert "is not a Shapes-world base model, so the embedded adapter does not fit it" in capsys.readouterr().err


def test_a_single_file_of_the_embedded_base_uses_the_embedded_adapter(tmp_path):
    from diffusers import StableDiffusionPipeline

    from harivo.defaults import DEFAULT_MODEL_DIR
    from harivo.single_file import save_single_file

    checkpoint = save_single_file(
        StableDiffusionPipeline.from_pretrained(DEFAULT_MODEL_DIR / "base"), tmp_path / "s.safetensors"
    )
    common = [
        "generate",
        "a large red circle moving right on a plain black background",
        "--steps",
        "2",
        "--num-frames",
        "4",
    ]
    main([*common, "-o", str(tmp_path / "embedded.gif")])
    main([*common, "--base-model", str(checkpoint), "-o", str(tmp_path / "file.gif")])
    assert np.array_equal(_frames(tmp_path / "file.gif"), _frames(tmp_path / "embedded.gif"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lora", "missing/style.safetensors"], "--lora missing/style.safetensors: no such file or folder"),
        (["--lora", "style.safetensors:inf"], "--lora style.safetensors:inf: the scale must be a number from -10 to 10"),
        (["--base-config", "somewhere"], "--base-config is for a single-file --base-model"),
        (["--base-model", "missing/model.safetensors"], "The single-file checkpoint 'missing/model.safetensors' does not exist"),
    ],
)  # fmt: skip
def test_bad_model_options_are_one_line_errors(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", str(tmp_path / "x.gif"), *extra])
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_generate_with_prompt_travel_a_long_video_and_video_and_image_inputs(base_dir, adapter_path, tmp_path):
    import PIL.Image

    common = ["--base-model", str(base_dir), "--adapter", str(adapter_path), "--height", "16", "--width", "16",
              "--steps", "2"]  # fmt: skip
    main(["generate", "a small red circle", "-o", str(tmp_path / "travel.gif"), "--num-frames", "4", *common,
          "--prompt-at", "3", "a small blue square"])  # fmt: skip
    assert iio.imread(tmp_path / "travel.gif", index=None).shape == (4, 16, 16, 3)
    main(["generate", "a small red circle", "-o", str(tmp_path / "long.gif"), "--num-frames", "11", *common,
          "--context-stride", "2", "--free-init", "2"])  # the adapter takes 8 frames: windows  # fmt: skip
    assert iio.imread(tmp_path / "long.gif", index=None).shape == (11, 16, 16, 3)
    main(["generate", "a small blue circle", "-o", str(tmp_path / "v2v.gif"), *common, "--video",
          str(tmp_path / "long.gif"), "--strength", "0.5", "--video-motion", "--free-init", "2"])  # fmt: skip
    assert iio.imread(tmp_path / "v2v.gif", index=None).shape == (11, 16, 16, 3)  # the input's length
    PIL.Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "first.png")
    main(["generate", "a small red circle moving left", "-o", str(tmp_path / "i2v.gif"), "--num-frames", "4",
          *common, "--image", str(tmp_path / "first.png")])  # fmt: skip
    assert iio.imread(tmp_path / "i2v.gif", index=None).shape == (4, 16, 16, 3)


def test_generate_with_an_ip_adapter(base_dir, adapter_path, tmp_path):
    import PIL.Image

    from harivo import HarivoPipeline
    from tests.helpers import save_tiny_ip_adapter

    unet = HarivoPipeline.from_pretrained(base_dir, adapter=adapter_path).unet
    weight_name = save_tiny_ip_adapter(unet, tmp_path)
    PIL.Image.new("RGB", (32, 32), (30, 30, 200)).save(tmp_path / "look.png")
    main(["generate", "a small red circle", "-o", str(tmp_path / "ip.gif"), "--base-model", str(base_dir),
          "--adapter", str(adapter_path), "--num-frames", "4", "--height", "16", "--width", "16", "--steps", "2",
          "--ip-adapter", str(tmp_path / weight_name), "--ip-adapter-image", str(tmp_path / "look.png"),
          "--ip-adapter-scale", "0.5"])  # fmt: skip
    assert iio.imread(tmp_path / "ip.gif", index=None).shape == (4, 16, 16, 3)
