"""Checkpoints from elsewhere cannot run code; damaged ones fall back; empty data and validation never corrupt a run."""

import pathlib
import pickle

import pytest
import torch

from harivo.errors import CheckpointFileError
from harivo.training import Trainer
from tests.training.test_trainer import TINY, read_log, tiny_config


class Payload:
    """Unpickling this creates `marker`: the proof that a checkpoint ran code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def plant_pickles(checkpoint: pathlib.Path, marker: pathlib.Path) -> None:
    """Replace every file of `checkpoint` with a malicious pickle, and add the files Accelerate would unpickle."""
    evil = pickle.dumps(Payload(marker))
    state = checkpoint / "state"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "process_0.pt"):
        (state / name).write_bytes(evil)
    for file in checkpoint.rglob("*"):
        if file.is_file():
            file.write_bytes(evil)


def test_resume_never_unpickles_a_checkpoint(tmp_path):
    Trainer(tiny_config("vae", tmp_path, "max_steps=2")).train()
    marker = tmp_path / "code-ran"
    plant_pickles(tmp_path / "checkpoint-2", marker)
    trainer = Trainer(tiny_config("vae", tmp_path, "max_steps=3"), resume=True)
    trainer.train()  # checkpoint-2 is unreadable: it falls back to checkpoint-1 and continues
    assert not marker.exists()
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3]


def test_a_pickled_legacy_checkpoint_needs_allow_pickle(tmp_path, capsys):
    Trainer(tiny_config("vae", tmp_path, "max_steps=1", "checkpoints_total_limit=1")).train()
    marker = tmp_path / "code-ran"
    state = tmp_path / "checkpoint-1" / "state"
    for file in state.iterdir():
        file.unlink()
    (state / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload(marker)))  # Accelerate's old layout
    with pytest.raises(CheckpointFileError, match=r"pickled training state.*--allow-pickle"):
        Trainer(tiny_config("vae", tmp_path, "max_steps=2"), resume=True).train()
    assert not marker.exists()
    # the command line says it in one line, not a traceback
    from harivo.cli import main

    overrides = [*TINY["vae"], f"output_dir={tmp_path}", "max_steps=2", "batch_size=2", "optim.lr_warmup_steps=0"]
    capsys.readouterr()  # what the first run printed
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", *overrides])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "--allow-pickle" in err and not marker.exists()


@pytest.mark.parametrize("damage", ["weights", "optimizer", "process"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    reference = tmp_path / "reference"
    Trainer(tiny_config("vae", reference, "max_steps=3")).train()
    run = tmp_path / "run"
    Trainer(tiny_config("vae", run, "max_steps=2")).train()
    checkpoint = run / "checkpoint-2"
    file = {
        "weights": next((checkpoint / "weights").rglob("*.safetensors")),
        "optimizer": checkpoint / "state" / "training_state.safetensors",
        "process": checkpoint / "state" / "process_0.json",
    }[damage]
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])  # truncated
    with (run / "logs.jsonl").open("a") as handle:
        handle.write('{"step": 3, "tot')  # a line a killed run did not finish
    Trainer(tiny_config("vae", run, "max_steps=3"), resume=True).train()
    output = capsys.readouterr().out
    assert f"checkpoint-2 is damaged ({file}" in output and "Resumed from" in output and "step 1" in output
    expected = {r["step"]: r["total"] for r in read_log(reference)}
    assert {r["step"]: r["total"] for r in read_log(run)} == expected  # the same curve, from checkpoint-1


def test_validation_does_not_change_the_training_run(base_dir, tmp_path):
    common = [
        f"harivo.base_model={base_dir}", "max_steps=3", "harivo.motion_conditioning=true",
        "harivo.motion_conditioning_dim=16", "optim.learning_rate=1e-2",
    ]  # fmt: skip
    Trainer(tiny_config("harivo", tmp_path / "plain", *common, "num_validation_samples=0")).train()
    Trainer(tiny_config("harivo", tmp_path / "validated", *common, "validate_every=1")).train()
    assert (tmp_path / "validated" / "validation" / "step-000001").is_dir()
    plain, validated = read_log(tmp_path / "plain"), read_log(tmp_path / "validated")
    assert [r["total"] for r in validated] == [r["total"] for r in plain]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.length=1", "batch_size=2"], "fewer than one batch"),
        (["data.length=3", "batch_size=4"], "fewer than one batch"),
    ],
)
def test_data_that_cannot_fill_a_batch_stops_at_once(base_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_config("harivo", tmp_path, f"harivo.base_model={base_dir}", *overrides))


def test_an_epoch_of_only_bad_videos_stops_instead_of_looping(base_dir, tmp_path):
    (tmp_path / "videos.csv").write_text(
        "videoid,name,path\n1,a red circle,missing1.mp4\n2,a red circle,missing2.mp4\n"
    )
    config = tiny_config(
        "harivo", tmp_path / "run", f"harivo.base_model={base_dir}", "data.kind=webvid",
        f"data.csv={tmp_path / 'videos.csv'}",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"Epoch 0 gave no batch.*every sample was skipped \(2 missing\)"):
        Trainer(config).train()
    assert torch.tensor(1)  # reached: no hang


def test_the_documented_command_works_on_a_fresh_clone(tmp_path, capsys):
    from pathlib import Path

    from harivo.training import load_config

    recipe = Path(__file__).parents[2] / "configs" / "shapes" / "harivo.yaml"
    config = load_config(recipe, [f"output_dir={tmp_path}", "max_steps=1", "batch_size=1", "data.num_frames=2",
                                  "num_validation_samples=0", "harivo.validation_num_frames=2"])  # fmt: skip
    assert not Path(config.harivo.base_model).exists()
    Trainer(config).train()
    assert "training on the embedded Shapes base model" in capsys.readouterr().out
    assert (tmp_path / "final" / "harivo_adapter.json").is_file()


def test_a_missing_base_model_is_one_line(tmp_path):
    from harivo.errors import HarivoLoadError

    with pytest.raises(HarivoLoadError, match=r"harivo.base_model '/nowhere/sd15' does not exist; give a diffusers"):
        Trainer(tiny_config("harivo", tmp_path, "harivo.base_model=/nowhere/sd15"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarivoLoadError, match=r"Could not load the harivo.base_model \(vae\)") as error:
        Trainer(tiny_config("harivo", tmp_path, f"harivo.base_model={tmp_path / 'empty'}"))
    assert "\n" not in str(error.value)


def test_a_damaged_checkpoint_is_not_counted_as_one_of_the_newest(tmp_path, capsys):
    """An empty `checkpoint-9` beside a run must not make pruning delete good checkpoints under the limit."""
    Trainer(tiny_config("vae", tmp_path, "max_steps=2", "checkpoints_total_limit=2")).train()
    (tmp_path / "checkpoint-9").mkdir()
    Trainer(tiny_config("vae", tmp_path, "max_steps=4", "checkpoints_total_limit=2"), resume=True).train()
    assert "checkpoint-9 is damaged" in capsys.readouterr().out
    names = sorted(path.name for path in tmp_path.glob("checkpoint-*"))
    assert names == ["checkpoint-3", "checkpoint-4", "checkpoint-9"]
