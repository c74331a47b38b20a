"""A thin, resumable training loop on Accelerate, shared by every stage.

Accelerate owns devices, mixed precision, gradient accumulation and distribution. The stage (`stages.py`) owns
the models and the loss. Checkpoints are written to a temporary folder and renamed, so a killed run never
leaves a half-written one; each holds the trainable weights (diffusers folders), the optimizer, the LR
scheduler, the data position and every RNG state, so a resumed run continues the same loss curve.
"""

import json
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.checkpointing import load_custom_state
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from ..errors import TrainingDivergedError
from .config import TrainConfig
from .stages import Stage, build_stage

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class EpochSampler(Sampler[int]):
    """A seeded random permutation per epoch; with `set_epoch` it replays any epoch exactly."""

    def __init__(self, length: int, seed: int):
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(self.length, generator=generator).tolist()


class TrainingState:
    """What, besides weights and optimizer, a checkpoint must hold to resume exactly."""

    def __init__(self, seed: int):
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.elapsed_s = 0.0  # training wall time, summed over resumed runs
        self.generator = torch.Generator().manual_seed(seed)  # noise, timesteps, caption dropout

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "elapsed_s": self.elapsed_s,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.epoch, self.batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]
        self.elapsed_s = state.get("elapsed_s", 0.0)
        self.generator.set_state(state["generator"])


def find_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints of a run, oldest first (half-written `*.tmp` folders are ignored)."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def make_optimizer(parameters: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    optim = config.optim
    optimizer_cls = torch.optim.AdamW
    if optim.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise ImportError(
                "optim.use_8bit_adam needs bitsandbytes (pip install bitsandbytes, on a CUDA machine)."
            ) from error
        optimizer_cls = bnb.optim.AdamW8bit
    return optimizer_cls(
        parameters,
        lr=optim.learning_rate,
        betas=(optim.adam_beta1, optim.adam_beta2),
        weight_decay=optim.weight_decay,
    )


class Trainer:
    """
    Train one stage as `config` says.

    Args:
        config ([`TrainConfig`]): The run.
        resume (`bool`, defaults to `False`): Continue from the latest checkpoint in `config.output_dir`.
    """

    def __init__(self, config: TrainConfig, resume: bool = False):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=config.report_to,
            project_dir=str(self.output_dir),
        )
        if config.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
        set_seed(config.seed)
        self.resume = resume
        # Each process draws its own noise and timesteps (the models start identical: `set_seed` is not per process).
        self.state = TrainingState(config.seed + self.accelerator.process_index)
        self.stage: Stage = build_stage(config, self.accelerator, self.state.generator)
        if config.gradient_checkpointing:
            self.stage.enable_gradient_checkpointing()
        self.parameters = self.stage.trainable_parameters()
        self.optimizer = make_optimizer(self.parameters, config)
        self.lr_scheduler = get_scheduler(
            config.optim.lr_scheduler,
            optimizer=self.optimizer,
            num_warmup_steps=config.optim.lr_warmup_steps * self.accelerator.num_processes,
            num_training_steps=config.max_steps * self.accelerator.num_processes,
        )
        self.dataset = self.stage.dataset()
        self.sampler = EpochSampler(len(self.dataset), config.data.seed)
        loader = DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=self.sampler,
            collate_fn=self.stage.collate,
            num_workers=config.data.num_workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched
        )
        self.optimizer, self.loader, self.lr_scheduler = self.accelerator.prepare(
            self.optimizer, loader, self.lr_scheduler
        )
        self.accelerator.register_for_checkpointing(self.state)
        # State that differs between processes (the L_dc queue of negatives): each process checkpoints its own.
        self.process_state = self.stage.checkpointed_state()
        self.log_path = self.output_dir / "logs.jsonl"

    # ----------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write `checkpoint-{step}` atomically (temporary folder, then rename) and prune old ones."""
        final = self.output_dir / f"checkpoint-{self.state.step}"
        temporary = self.output_dir / f"checkpoint-{self.state.step}.tmp"
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        # Every process saves its own RNG states (the main one also the optimizer and scheduler), its generator of
        # noise and timesteps, and its own `process_state`.
        (temporary / "state").mkdir(parents=True, exist_ok=True)
        accelerator.save_state(str(temporary / "state"), safe_serialization=True)
        own = {"generator": self.state.generator.get_state(), "extra": [m.state_dict() for m in self.process_state]}
        torch.save(own, temporary / "state" / f"process_{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self.stage.save_trainable(temporary / "weights")
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            for _, old in find_checkpoints(self.output_dir)[: -self.config.checkpoints_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        self.stage.load_trainable(path / "weights")
        self.accelerator.load_state(str(path / "state"))
        own = path / "state" / f"process_{self.accelerator.process_index}.pt"
        if own.is_file():
            own = torch.load(own, weights_only=True)
            self.state.generator.set_state(own["generator"])
            for module, state in zip(self.process_state, own["extra"], strict=True):
                module.load_state_dict(state)
        else:  # a checkpoint from before per-process state: the main process's, as Accelerate custom objects
            for index, module in enumerate(self.process_state, start=1):
                load_custom_state(module, str(path / "state"), index)
        self._truncate_log(self.state.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint by the run that was interrupted."""
        if not self.log_path.is_file() or not self.accelerator.is_main_process:
            return
        kept = [line for line in self.log_path.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
        self.log_path.write_text("".join(line + "\n" for line in kept))

    # ---------------------------------------------------------------------------------------------------- loop
    def _batches(self):
        """Endless batches; resumes mid-epoch by skipping the batches the checkpoint already consumed."""
        skipped = Counter()
        while True:
            self.sampler.set_epoch(self.state.epoch)
            loader = self.loader
            if self.state.batches_in_epoch:
                loader = self.accelerator.skip_first_batches(self.loader, self.state.batches_in_epoch)
            for batch in loader:
                self.state.batches_in_epoch += 1
                skipped.update(batch.pop("skipped", {}) or {})
                if batch:  # empty when every video of the batch was skipped
                    yield batch
            if skipped:
                self.accelerator.print(
                    f"Epoch {self.state.epoch}: skipped {sum(skipped.values())} videos ("
                    + ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
                    + ")."
                )
                self._log({"step": self.state.step, "epoch": self.state.epoch, "skipped": dict(skipped)})
                skipped.clear()
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _check_finite(self, value: torch.Tensor, what: str, logs: dict) -> None:
        if not torch.isfinite(value).all():
            checkpoints = find_checkpoints(self.output_dir)
            last = f"the last good checkpoint is {checkpoints[-1][1]}" if checkpoints else "no checkpoint was written"
            raise TrainingDivergedError(
                f"The {what} became {value.item()} at step {self.state.step + 1} (terms: "
                + ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
                + f"); nothing was saved from this step, {last}. Lower optim.learning_rate or use "
                "mixed_precision=bf16 / no, then resume with --resume."
            )

    def train(self) -> Path:
        """Run to `max_steps`; returns the folder with the exported final weights."""
        config, accelerator = self.config, self.accelerator
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(config.to_yaml())
        checkpoints = find_checkpoints(self.output_dir)
        if self.resume and checkpoints:
            self.load_checkpoint(checkpoints[-1][1])
            accelerator.print(f"Resumed from {checkpoints[-1][1]} (step {self.state.step}).")
        elif self.resume:
            accelerator.print(f"No checkpoint in {self.output_dir}; starting from scratch.")
        elif checkpoints:
            raise FileExistsError(
                f"{self.output_dir} already has checkpoints; pass --resume to continue it, or choose another"
                " output_dir."
            )
        if config.report_to:
            accelerator.init_trackers(
                f"harivo-{config.stage}", config=json.loads(json.dumps(vars(config), default=str))
            )

        progress = tqdm(
            total=config.max_steps,
            initial=self.state.step,
            desc=f"train {config.stage}",
            disable=not accelerator.is_local_main_process,
        )
        batches = self._batches()
        window_start, window_samples = time.perf_counter(), 0
        step_start = time.perf_counter()
        while self.state.step < config.max_steps:
            for _ in range(config.gradient_accumulation_steps):
                batch = next(batches)
                with accelerator.accumulate(), accelerator.autocast():
                    loss, logs = self.stage.loss(batch)
                    self._check_finite(loss.detach(), "loss", logs)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        self._reduce_gradients()
                        grad_norm = accelerator.clip_grad_norm_(self.parameters, config.optim.max_grad_norm)
                        if config.mixed_precision != "fp16":  # fp16's scaler skips inf steps by design
                            self._check_finite(torch.as_tensor(grad_norm), "gradient norm", logs)
                    self.optimizer.step()
                    self.lr_scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                window_samples += config.batch_size * accelerator.num_processes
            self.state.step += 1
            now = time.perf_counter()
            self.state.elapsed_s += now - step_start
            step_start = now
            progress.update(1)
            progress.set_postfix(loss=f"{logs['total']:.4f}")
            if self.state.step % config.log_every == 0 or self.state.step == config.max_steps:
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": self.state.step,
                    **logs,
                    "lr": self.lr_scheduler.get_last_lr()[0],
                    "samples_per_s": window_samples / max(elapsed, 1e-9),
                    "elapsed_s": round(self.state.elapsed_s, 2),
                }
                self._log(record)
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.state.step)
                window_start, window_samples = time.perf_counter(), 0
            if self.state.step % config.checkpoint_every == 0 or self.state.step == config.max_steps:
                self.save_checkpoint()
            if config.validate_every and self.state.step % config.validate_every == 0:
                self.validate()
            step_start = time.perf_counter()  # checkpoints and validation are not training time
        progress.close()
        if not config.validate_every or config.max_steps % config.validate_every:
            self.validate()
        final = self.output_dir / "final"
        if accelerator.is_main_process:
            temporary = self.output_dir / "final.tmp"
            shutil.rmtree(temporary, ignore_errors=True)
            self.stage.export(temporary)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
        accelerator.end_training()
        return final

    def _reduce_gradients(self) -> None:
        """Average gradients over processes (the models are not DDP-wrapped: losses call their sub-modules)."""
        if self.accelerator.num_processes == 1:
            return
        for parameter in self.parameters:
            if parameter.grad is not None:
                parameter.grad = self.accelerator.reduce(parameter.grad, reduction="mean")

    def validate(self) -> None:
        if self.accelerator.is_main_process and self.config.num_validation_samples > 0:
            folder = self.output_dir / "validation" / f"step-{self.state.step:06d}"
            self.stage.validate(folder, self.config.num_validation_samples)
        self.accelerator.wait_for_everyone()
