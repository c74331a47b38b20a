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
        (["--motion-path-projection", "2"], "motion_path_projection"),
        (["--mg-energy", "motion_path", "--mg-scale", "40"], "need a path"),
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


@pytest.mark.parametrize("extra", [[], ["--frame-by-frame"]])
def test_eval_writes_results_table_and_contact_sheet(tmp_path, capsys, extra):
    import json

    out = tmp_path / "eval"
    arguments = ["--seeds", "0", "1", "--prompts-per-group", "1", "--num-frames", "4", "--steps", "2"]
    main(["eval", "-o", str(out), *arguments, *extra])
    results = json.loads((out / "results.json").read_text())
    ((label, row),) = results["rows"].items()
    assert label.endswith("(frame by frame)") == bool(extra)
    assert set(row) == {"in video distribution", "outside video distribution"}
    assert row["in video distribution"]["num_clips"] == 2 and "fvd" in row["in video distribution"]
    assert (out / "samples.png").is_file() and "| method" in (out / "table.md").read_text()
    assert "Wrote" in capsys.readouterr().out


def test_eval_of_rendered_clips_is_perfect(tmp_path):
    import json

    main(["eval", "--real", "-o", str(tmp_path), "--seeds", "0", "--prompts-per-group", "4", "--num-frames", "8"])
    row = json.loads((tmp_path / "results.json").read_text())["rows"]["rendered clips"]
    assert all(row[g]["fidelity"]["mean"] == 1.0 and row[g]["motion_correct"]["mean"] == 1.0 for g in row)


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
