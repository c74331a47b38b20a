"""The signal-leak benchmark on the embedded default model, on tiny settings."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import signal_leak


def test_signal_leak_scores_every_start_and_the_leak_is_what_the_schedule_leaves(tmp_path, capsys):
    output = tmp_path / "leak.json"
    results = signal_leak.main(["--clips", "2", "--num-frames", "4", "--steps", "3", "--output", str(output)])
    assert output.is_file() and "| clip at the first step |" in capsys.readouterr().out
    assert list(results["rows"]) == list(signal_leak.CONDITIONS)
    rows = results["rows"]
    # the clip's copy in the first input changes the result exactly when the schedule leaves one there
    leaked = rows["clip at the first step"] != rows["pure noise"]
    assert leaked == (results["alpha_bar"] > 0)
    assert all(set(row) == set(signal_leak.METRICS) for row in rows.values())
