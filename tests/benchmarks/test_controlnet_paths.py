"""The ControlNet path benchmark on the embedded default model and Shapes ControlNet, on tiny settings."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import controlnet_paths


def test_rows_are_scored_cached_and_drawn(tmp_path, capsys):
    # (two nets adding up is checked exactly on tiny nets: tests/pipelines/test_pipeline_controlnet.py)
    rows = ["HARIVO + ControlNet", "HARIVO + ControlNet, keyframes only, twice as long in windows"]
    argv = ["--quick", "--output", str(tmp_path), "--rows", *rows]
    results = controlnet_paths.main(argv)
    assert list(results) == rows
    dense, long = (results[name]["groups"]["inside"] for name in rows)
    assert "keyframe_error" in long and "keyframe_error" not in dense
    assert np.load(controlnet_paths.row_file(tmp_path, rows[-1], ".npz"))["clips"].shape[1] == 8  # 2 x --num-frames
    for scores in (dense, long):
        assert 0 <= scores["follow"] <= 1 and scores["position_error"] >= 0
    cached = {path: path.stat().st_mtime_ns for path in tmp_path.glob("row-*")}
    assert controlnet_paths.main(argv).keys() == results.keys()  # a rerun reads every row from its cache
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("row-*")} == cached
    assert (tmp_path / "figure.png").is_file() and "ControlNet step (every frame)" in (
        tmp_path / "results.md"
    ).read_text()
    assert "| HARIVO + ControlNet |" in capsys.readouterr().out
