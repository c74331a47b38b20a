"""The MG cost benchmark on tiny settings: rows sampled, scored with their cost, cached and plotted."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import mg_cost


def test_rows_carry_their_cost_and_are_plotted(tmp_path):
    argv = ["--quick", "--output", str(tmp_path), "--rows", "MG off", "x0 gradient, alpha 40, every step"]
    rows = mg_cost.main(argv)
    assert list(rows) == ["MG off", "x0 gradient, alpha 40, every step"]
    for scores in rows.values():
        assert all(group["seconds_per_clip"]["mean"] > 0 for group in scores.values())
    assert (tmp_path / "mg_cost.png").is_file() and "vs T2I" not in (tmp_path / "table.md").read_text()
    assert mg_cost.main(argv) == rows  # cached
