"""`harivo train` in two CPU processes (torchrun; Accelerate makes them one data-parallel gloo group), resumed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def stopped_at_step_2(run: Path, copy: Path) -> Path:
    """A copy of a finished 4-step run as it stood when it had written checkpoint-2: what a run killed after
    step 2 leaves (its checkpoint-4 and final removed; `--resume` cuts its log back to the checkpoint)."""
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoint-4")
    shutil.rmtree(copy / "final")
    return copy


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

    resumed = launch(stopped_at_step_2(tmp_path / "reference", tmp_path / "stopped"), base_dir, 4, "--resume")
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
    stopped = stopped_at_step_2(tmp_path / "reference", tmp_path / "stopped")
    resumed = launch(stopped, base_dir, 4, *data, "--resume")
    assert [resumed[step] for step in (3, 4)] == pytest.approx([reference[step] for step in (3, 4)], rel=1e-5)


LAUNCHER = Path(__file__).with_name("launch_on_cpu.py")
ACCELERATE_CONFIGS = Path(__file__).parents[2] / "configs" / "accelerate"


def accelerate_launch(config_file, output_dir, base_dir, max_steps, *extra, check=True):
    """`accelerate launch --config_file CONFIG` of `harivo train` on 2 CPU processes (FSDP included: see the
    launcher); returns the logged loss per step, or with `check=False` the finished process."""
    overrides = [
        *TINY["harivo"], f"harivo.base_model={base_dir}", f"output_dir={output_dir}", f"max_steps={max_steps}",
        "batch_size=2", "checkpoint_every=2", "log_every=1", "num_validation_samples=0", "optim.lr_warmup_steps=0",
    ]  # fmt: skip
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
               "--num_processes", "2", "--main_process_port", "0", str(LAUNCHER), "train"]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([*command, *overrides, *extra], env=env, capture_output=True, text=True, timeout=300)
    if not check:
        return result
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Training on 2 processes ({'FSDP' if 'fsdp' in config_file.name else 'DDP'})." in result.stdout
    records = [json.loads(line) for line in (output_dir / "logs.jsonl").read_text().splitlines()]
    return {r["step"]: r["total"] for r in records if "total" in r}


def test_fsdp_trains_like_ddp_checkpoints_safetensors_and_resumes_the_same_loss_curve(base_dir, tmp_path):
    """configs/accelerate/fsdp.yaml (Accelerate's FSDP2 preparation; the adapter and its AdamW states sharded over 2
    processes) gives DDP's loss curve and weights; its checkpoints are whole safetensors + JSON; validation runs on
    the gathered weights; kill + resume continues the same curve."""
    ddp = accelerate_launch(ACCELERATE_CONFIGS / "ddp.yaml", tmp_path / "ddp", base_dir, 4)
    fsdp = accelerate_launch(
        ACCELERATE_CONFIGS / "fsdp.yaml", tmp_path / "fsdp", base_dir, 4, "num_validation_samples=1",
        "validate_every=2",
    )  # fmt: skip
    assert list(fsdp) == [1, 2, 3, 4]
    assert [fsdp[step] for step in fsdp] == pytest.approx([ddp[step] for step in fsdp], rel=1e-5)
    trained = {name: HarivoAdapter.from_pretrained(tmp_path / name / "final").state_dict() for name in ("ddp", "fsdp")}
    assert trained["fsdp"].keys() == trained["ddp"].keys()
    for key, value in trained["ddp"].items():
        torch.testing.assert_close(trained["fsdp"][key], value, rtol=1e-4, atol=1e-6)
    assert (tmp_path / "fsdp" / "validation" / "step-000002" / "samples.png").is_file()
    state = find_checkpoints(tmp_path / "fsdp")[-1][1] / "state"
    assert not [p for p in state.iterdir() if p.suffix not in (".json", ".safetensors")]

    stopped = stopped_at_step_2(tmp_path / "fsdp", tmp_path / "stopped")
    resumed = accelerate_launch(ACCELERATE_CONFIGS / "fsdp.yaml", stopped, base_dir, 4, "--resume")
    assert [resumed[step] for step in (3, 4)] == pytest.approx([fsdp[step] for step in (3, 4)], rel=1e-5)


@pytest.mark.parametrize(
    ("change", "extra", "message"),
    [
        (
            {"fsdp_version": 1, "fsdp_sync_module_states": False},
            [],
            "error: FSDP: harivo trains with FSDP version 2; set fsdp_version: 2",
        ),
        ({"fsdp_auto_wrap_policy": "SIZE_BASED_WRAP"}, [], "set fsdp_auto_wrap_policy: NO_WRAP"),
        ({}, TINY["vae"], "error: FSDP shards the harivo stage's adapter; train the vae stage with DDP"),
    ],
)
def test_fsdp_settings_harivo_cannot_train_get_one_line(base_dir, tmp_path, change, extra, message):
    import yaml

    config = yaml.safe_load((ACCELERATE_CONFIGS / "fsdp.yaml").read_text())
    config["fsdp_config"].update(change)
    config_file = tmp_path / "fsdp.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = accelerate_launch(config_file, tmp_path / "run", base_dir, 2, *extra, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout
