"""Kill a training run with SIGKILL mid-step, resume it, and check it continues the very same loss curve."""

import json
import os
import signal
import subprocess
import sys
import time

from tests.training.test_trainer import TINY


def harivo_train(output_dir, base_dir, *extra):
    overrides = [
        *TINY["harivo"],
        f"harivo.base_model={base_dir}",
        f"output_dir={output_dir}",
        "max_steps=8",
        "batch_size=2",
        "checkpoint_every=3",
        "log_every=1",
        "optim.lr_warmup_steps=2",
        "optim.learning_rate=1e-3",
    ]
    command = [sys.executable, "-m", "harivo.cli", "train", *overrides, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def losses(output_dir):
    records = [json.loads(line) for line in (output_dir / "logs.jsonl").read_text().splitlines()]
    return {r["step"]: (r["total"], r["diffusion"], r["reg"], r["trsa"], r["dc"]) for r in records if "total" in r}


def last_logged_step(output_dir):
    path = output_dir / "logs.jsonl"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


def test_sigkill_mid_run_then_resume_continues_the_same_loss_curve(base_dir, tmp_path):
    reference = harivo_train(tmp_path / "reference", base_dir)
    output, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, output

    killed_dir = tmp_path / "killed"
    killed = harivo_train(killed_dir, base_dir)
    deadline = time.monotonic() + 300
    while last_logged_step(killed_dir) < 4 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)  # no chance to clean up: mid-step (or mid-checkpoint)
    killed.communicate()
    killed_at = last_logged_step(killed_dir)
    assert 4 <= killed_at < 8, "the run was not killed mid-way"

    resumed = harivo_train(killed_dir, base_dir, "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    resumed_from = int(output.split("(step ")[1].split(")")[0])
    assert killed_at - resumed_from <= 3  # at most the steps since the last checkpoint are lost

    expected, got = losses(tmp_path / "reference"), losses(killed_dir)
    assert sorted(got) == list(range(1, 9))
    for step in expected:
        assert got[step] == expected[step], f"step {step}: {got[step]} != {expected[step]}"
    assert (killed_dir / "final" / "harivo_adapter.json").is_file()
