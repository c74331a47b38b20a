"""The loop benchmark on tiny settings: the seam and the neighbours' changes side by side for every row."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import loops


def test_every_row_measures_the_seam(capsys):
    results = loops.main(["--quick"])
    assert set(results) == set(loops.ROWS)
    assert all(row["neighbours"] > 0 and row["seam"] >= 0 for row in results.values())
    assert "| loop, gaussian |" in capsys.readouterr().out
