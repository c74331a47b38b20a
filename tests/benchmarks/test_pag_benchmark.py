"""The PAG benchmark on tiny settings: a row's `pag_scale` reaches the pipeline and is scored."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import pag


def test_a_pag_row_is_sampled_and_scored(tmp_path, capsys):
    rows = pag.main(["--quick", "--output", str(tmp_path), "--rows", "pag_scale 3"])
    assert list(rows) == ["pag_scale 3"] and "fidelity" in rows["pag_scale 3"]["in video distribution"]
    assert "| pag_scale 3 |" in capsys.readouterr().out
