"""The motion-LoRA benchmark on tiny settings: the reference clips, a LoRA trained through the CLI, every row scored,
and a rerun that reuses the LoRA."""

import argparse
import sys
from pathlib import Path

from accelerate.state import AcceleratorState

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import motion_lora


def test_every_row_is_sampled_and_scored_and_the_lora_is_reused(tmp_path, capsys):
    try:
        results = motion_lora.main(["--quick", "--output", str(tmp_path)])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert list(results) == list(motion_lora.ROWS)
    for row in results.values():
        for scores in row["groups"].values():
            assert scores["path_error"] >= 0 and 0 <= scores["follow"] <= 1 and 0 <= scores["fidelity"] <= 1
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 3 and (tmp_path / "figure.png").is_file()
    lora = tmp_path / "lora" / "final" / "pytorch_lora_weights.safetensors"
    trained = lora.stat().st_mtime_ns
    assert "| motion LoRA (--lora) |" in capsys.readouterr().out
    motion_lora.train_lora(tmp_path, argparse.Namespace(steps=2, num_frames=4, quick=True))  # the --quick settings
    assert lora.stat().st_mtime_ns == trained
