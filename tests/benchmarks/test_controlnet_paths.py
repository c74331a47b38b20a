"""The ControlNet path benchmark on the embedded default model and Shapes ControlNet, on tiny settings."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import controlnet_paths


def test_rows_are_scored_cached_and_drawn(tmp_path, capsys):
    rows = ["HARIVO + ControlNet", "HARIVO + ControlNet, keyframes only", "HARIVO + the ControlNet twice (0.5 + 0.5)"]
    argv = ["--quick", "--output", str(tmp_path), "--rows", *rows]
    results = controlnet_paths.main(argv)
    assert list(results) == rows
    dense, keyframes, twice = (results[name]["groups"]["inside"] for name in rows)
    assert "keyframe_error" in keyframes and "keyframe_error" not in dense
    for scores in (dense, keyframes):
        assert 0 <= scores["follow"] <= 1 and scores["position_error"] >= 0
    # the same net twice at half scale adds up to it once at full scale
    assert abs(twice["position_error"] - dense["position_error"]) < 0.5
    cached = {path: path.stat().st_mtime_ns for path in tmp_path.glob("row-*")}
    assert controlnet_paths.main(argv).keys() == results.keys()  # a rerun reads every row from its cache
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("row-*")} == cached
    assert (tmp_path / "figure.png").is_file() and "ControlNet step (every frame)" in (
        tmp_path / "results.md"
    ).read_text()
    assert "| HARIVO + ControlNet |" in capsys.readouterr().out
