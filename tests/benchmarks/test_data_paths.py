"""The data-path benchmark on tiny settings: every number is measured and printed side by side."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import data_paths


def test_the_data_paths_are_measured_side_by_side(tmp_path, capsys):
    results = data_paths.main(["--quick", "--output", str(tmp_path)])
    assert results["index of 10 M samples"]["shards"] == 100_000
    assert set(results["loader clips/s"]) == {"shards, 0 workers", "shards, 2 workers", "CSV + mp4 files, 0 workers"}
    assert all(rate > 0 for rate in results["loader clips/s"].values())
    assert set(results["training seconds per step"]) == {"pixels (shards)", "cached latents"}
    assert results["VAE + text encoder share of the pixel step"] > 0
    assert "| cached latents |" in capsys.readouterr().out
