"""The DeepCache step benchmark on tiny settings: whole and cached U-Net steps timed side by side."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import deep_cache


def test_whole_and_cached_steps_are_timed_side_by_side(capsys):
    results = deep_cache.main(["--quick"])
    (seconds,) = results.values()
    assert set(seconds) == {"whole", "cached, branch 0", "cached, branch 1"} and min(seconds.values()) > 0
    assert "| embedded model, 64 px x 4 frames |" in capsys.readouterr().out
