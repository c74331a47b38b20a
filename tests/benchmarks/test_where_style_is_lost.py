"""The sampling ablation on the embedded default model, on tiny settings."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import where_style_is_lost


def test_every_row_is_scored_cached_and_compared_with_the_image_model(tmp_path, capsys):
    argv = [
        "--quick",
        "--output",
        str(tmp_path),
        "--rows",
        "T2I frame by frame",
        "+ temporal layers in the first half",
        "rendered clips through the VAE (the floor)",
    ]
    rows = where_style_is_lost.main(argv)
    assert list(rows) == argv[4:]
    floor = rows["rendered clips through the VAE (the floor)"]["in video distribution"]
    assert floor["motion_correct"]["mean"] == 1.0 and floor["background_flicker"]["mean"] > 0
    assert rows["T2I frame by frame"]["textured backgrounds"]["vs T2I"]["mean"] == 1.0
    assert "texture_contrast" in rows["+ temporal layers in the first half"]["textured backgrounds"]
    cached = {path: path.stat().st_mtime_ns for path in tmp_path.glob("row-*")}
    assert where_style_is_lost.main(argv) == rows  # a rerun reads every row from its cache
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("row-*")} == cached
    assert "| T2I frame by frame |" in capsys.readouterr().out


def test_a_cached_row_is_reused_only_for_the_same_model(tmp_path):
    import json
    import shutil

    from harivo.defaults import default_model_paths

    copy = tmp_path / "adapter"
    shutil.copytree(default_model_paths()[1], copy)
    embedded = where_style_is_lost.model_fingerprint(None, None)
    assert where_style_is_lost.model_fingerprint(None, str(copy)) == embedded  # same files, same model
    manifest = json.loads((copy / "harivo_adapter.json").read_text())
    manifest["sampling_defaults"]["temporal_window"] = [0.0, 1.0]
    (copy / "harivo_adapter.json").write_text(json.dumps(manifest))
    assert where_style_is_lost.model_fingerprint(None, str(copy)) != embedded
    assert where_style_is_lost.model_fingerprint(None, "org/some-adapter") != embedded
