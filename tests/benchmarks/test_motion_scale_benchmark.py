"""The motion-scale benchmark on tiny settings: a row's `motion_scale` reaches the pipeline and `travel` is scored."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import motion_scale


def test_a_motion_scale_row_is_sampled_and_scored(tmp_path, capsys):
    rows = motion_scale.main(["--quick", "--output", str(tmp_path), "--rows", "motion_scale 0.5"])
    assert list(rows) == ["motion_scale 0.5"]
    assert "travel" in rows["motion_scale 0.5"]["in video distribution"]
    assert "| motion_scale 0.5 |" in capsys.readouterr().out
