"""The training-memory check on a small size: the estimate, autograd's saved bytes and the measured peak side by side."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import train_memory


def test_the_estimate_is_printed_beside_a_measured_cpu_step(capsys):
    results = train_memory.main(["--resolution", "64", "--num-frames", "4"])
    assert results["estimated"] > 0 and results["saved"] > 0 and results["measured"] > 0
    assert abs(results["estimated"] / results["saved"] - 1) < 0.15  # the meta count is the CPU forward's
    assert "| measured: peak resident growth over forward + backward |" in capsys.readouterr().out
