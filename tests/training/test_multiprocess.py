"""`harivo train` in two CPU processes (torchrun; Accelerate makes them one data-parallel gloo group), resumed."""

import json
import os
import subprocess
import sys

import pytest

from harivo import HarivoAdapter
from harivo.training import find_checkpoints
from tests.training.test_trainer import TINY


def launch(output_dir, base_dir, max_steps, *extra):
    overrides = [
        *TINY["harivo"], f"harivo.base_model={base_dir}", f"output_dir={output_dir}", f"max_steps={max_steps}",
        "batch_size=2", "checkpoint_every=2", "log_every=1", "num_validation_samples=0", "optim.lr_warmup_steps=0",
    ]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "harivo.cli", "train"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([*command, *overrides, *extra], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Done:") == 1
    records = [json.loads(line) for line in (output_dir / "logs.jsonl").read_text().splitlines()]
    return {r["step"]: r["total"] for r in records if "total" in r}


def test_two_processes_checkpoint_every_rank_and_resume_the_same_loss_curve(base_dir, tmp_path):
    reference = launch(tmp_path / "reference", base_dir, 4)
    assert list(reference) == [1, 2, 3, 4]  # one process logs
    checkpoints = find_checkpoints(tmp_path / "reference")
    assert [step for step, _ in checkpoints] == [2, 4]
    state = checkpoints[-1][1] / "state"
    # each rank's own RNG states, noise generator and L_dc queue, as safetensors + JSON; nothing pickled
    assert all((state / f"process_{rank}.safetensors").is_file() for rank in (0, 1))
    assert (state / "training_state.json").is_file()
    assert not [p for p in state.iterdir() if p.suffix not in (".json", ".safetensors")]
    HarivoAdapter.from_pretrained(tmp_path / "reference" / "final")

    stopped = launch(tmp_path / "stopped", base_dir, 2)
    assert stopped == {step: reference[step] for step in (1, 2)}
    resumed = launch(tmp_path / "stopped", base_dir, 4, "--resume")
    assert list(resumed) == [1, 2, 3, 4]
    assert [resumed[step] for step in (3, 4)] == pytest.approx([reference[step] for step in (3, 4)], rel=1e-5)


def test_two_processes_stream_their_own_shards_and_resume_the_same_loss_curve(base_dir, tmp_path):
    """data.kind webdataset under DDP: each rank reads its own shards; a stopped run resumes the same curve."""
    from harivo.data.shards import shapes_samples, write_shards

    shards = tmp_path / "shards"
    shards.mkdir()
    write_shards(shapes_samples(16, num_frames=4, resolution=32), str(shards / "%05d.tar"), per_shard=4)
    data = ["data.kind=webdataset", f"data.shards={shards}/{{00000..00003}}.tar", "data.frame_stride=1",
            "data.shuffle_buffer=4"]  # fmt: skip
    reference = launch(tmp_path / "reference", base_dir, 4, *data)
    assert list(reference) == [1, 2, 3, 4]
    stopped = launch(tmp_path / "stopped", base_dir, 2, *data)
    assert stopped == {step: reference[step] for step in (1, 2)}
    resumed = launch(tmp_path / "stopped", base_dir, 4, *data, "--resume")
    assert [resumed[step] for step in (3, 4)] == pytest.approx([reference[step] for step in (3, 4)], rel=1e-5)
