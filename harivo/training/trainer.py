"""A thin, resumable training loop on Accelerate, shared by every stage.

Accelerate owns devices, mixed precision, gradient accumulation and distribution. The stage (`stages/`) owns
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
from accelerate.utils import DistributedDataParallelKwargs, send_to_device, set_seed
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader, IterableDataset, Sampler
from tqdm.auto import tqdm

from ..errors import CheckpointFileError, PickledStateError, ShardError, TrainingDivergedError
from . import engines
from .config import TrainConfig
from .stages import Stage, build_stage
from .state_io import load_tree, rng_states, save_tree, set_rng_states

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


STREAM_PATIENCE = 50  # batches of only skipped samples in a row before a stream is declared unusable


def _reasons(skipped: Counter) -> str:
    """Skipped samples' counts by reason: "1 corrupt, 2 too short"."""
    return ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))


def _as_is(batch: dict) -> dict:
    return batch


def _worker_errors_in_one_line(loader: DataLoader):
    """`loader`'s batches; a `ShardError` a loader worker raised (which PyTorch re-raises with the worker's traceback
    in its message) comes back with its own message only."""
    try:
        yield from loader
    except ShardError as error:
        message = str(error)
        if "Original Traceback" in message:
            message = message.strip().splitlines()[-1].split("ShardError: ", 1)[-1]
            raise ShardError(message) from None
        raise


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
        if "generator" in state:  # checkpoints from before per-process files
            self.generator.set_state(state["generator"])


def is_whole_checkpoint(path: Path) -> bool:
    """Whether `path` holds what `save_checkpoint` writes (its weights and the training state, or the pickled state
    of harivo < 0.1.1): a folder that does not is damaged and is never counted as one of the newest checkpoints."""
    state = path / "state"
    saved = (state / "training_state.json").is_file() or (state / "custom_checkpoint_0.pkl").is_file()
    return saved and (path / "weights").is_dir()


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
        allow_pickle (`bool`, defaults to `False`): Also resume checkpoints written by harivo before 0.1.1, whose
            training state is pickled (unpickling can run code): only for checkpoints you made yourself.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, allow_pickle: bool = False):
        self.config = config
        self.allow_pickle = allow_pickle
        self.output_dir = Path(config.output_dir)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=config.report_to,
            project_dir=str(self.output_dir),
            # a step may leave some trainable parts without a gradient (e.g. L_dc's head when its weight is 0)
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        engines.check_engine(self.accelerator, config.stage)
        if config.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
        set_seed(config.seed)
        self.resume = resume
        # Each process draws its own noise and timesteps (the models start identical: `set_seed` is not per process).
        self.state = TrainingState(config.seed + self.accelerator.process_index)
        self.stage: Stage = build_stage(config, self.accelerator, self.state.generator)
        if config.gradient_checkpointing:
            self.stage.enable_gradient_checkpointing()
        # what the engine wraps: the trainable modules, whose forward is the stage's loss
        self.module = engines.TrainedModules(self.stage.trainable_modules(), self.stage.loss)
        self._weightless = {}  # under FSDP: copies that the main process fills with the gathered weights to save
        if engines.is_sharded(self.accelerator) and self.accelerator.is_main_process:
            self._weightless = {name: engines.meta_copy(m) for name, m in self.stage.trainable_modules().items()}
        self.optimizer = make_optimizer(self.stage.trainable_parameters(), config)
        self.lr_scheduler = get_scheduler(
            config.optim.lr_scheduler,
            optimizer=self.optimizer,
            num_warmup_steps=config.optim.lr_warmup_steps * self.accelerator.num_processes,
            num_training_steps=config.max_steps * self.accelerator.num_processes,
        )
        self.dataset = self.stage.dataset()
        if isinstance(self.dataset, IterableDataset):  # a stream (shards): each process reads its own shards
            self.dataset.check_readers(config.data.num_workers, config.batch_size)
            self.sampler = None
            bucketed = bool(getattr(self.dataset, "buckets", None))  # the stream gives whole batches
            self.loader = DataLoader(
                self.dataset, batch_size=None if bucketed else config.batch_size,
                collate_fn=_as_is if bucketed else self.stage.collate, num_workers=config.data.num_workers,
                drop_last=not bucketed,
                generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched
            )  # fmt: skip
            self.module, self.optimizer, self.lr_scheduler = self.accelerator.prepare(
                self.module, self.optimizer, self.lr_scheduler
            )
        else:
            self._check_dataset_size()
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
            self.module, self.optimizer, self.loader, self.lr_scheduler = self.accelerator.prepare(
                self.module, self.optimizer, loader, self.lr_scheduler
            )
        # the parameters as the engine holds them (under FSDP: this process's shards)
        self.parameters = [p for p in self.module.parameters() if p.requires_grad]
        # State that differs between processes (the L_dc queue of negatives): each process checkpoints its own.
        self.process_state = self.stage.checkpointed_state()
        self.log_path = self.output_dir / "logs.jsonl"
        self._unverified_checkpoint: Path | None = None  # written, but its weights not yet run by a finite step

    def _check_dataset_size(self) -> None:
        """Refuse a dataset that cannot fill one batch per process (every epoch would be empty: a hang)."""
        needed = self.config.batch_size * self.accelerator.num_processes
        if len(self.dataset) < needed:
            raise ValueError(
                f"The dataset has {len(self.dataset)} samples, fewer than one batch ({self.config.batch_size} x"
                f" {self.accelerator.num_processes} processes); lower batch_size or add data (data.length / the CSV)."
            )

    # ----------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write `checkpoint-{step}` atomically (temporary folder, then rename); old ones are pruned once a later
        step has run these weights to a finite loss (`_prune_checkpoints`)."""
        final = self.output_dir / f"checkpoint-{self.state.step}"
        temporary = self.output_dir / f"checkpoint-{self.state.step}.tmp"
        accelerator = self.accelerator
        self._check_finite_weights()
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        # Safetensors + JSON only (nothing pickled): every process its own RNG states, its generator of noise and
        # timesteps and its `process_state`; the main process also the optimizer, LR scheduler and step counters.
        folder = temporary / "state"
        folder.mkdir(parents=True, exist_ok=True)
        own = {
            "rng": rng_states(),
            "generator": self.state.generator.get_state(),
            "extra": [m.state_dict() for m in self.process_state],
        }
        save_tree(own, folder, f"process_{accelerator.process_index}")
        optimizer = engines.optimizer_state(accelerator, self.module, self.optimizer)  # under FSDP: gathered
        weights = engines.full_weights(accelerator, self.module, self._weightless)
        if accelerator.is_main_process:
            shared = {
                "training": {k: v for k, v in self.state.state_dict().items() if k != "generator"},
                "optimizer": optimizer,
                "lr_scheduler": self.lr_scheduler.state_dict(),
            }
            if accelerator.scaler is not None:
                shared["scaler"] = accelerator.scaler.state_dict()
            save_tree(shared, folder, "training_state")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self.stage.save_trainable(temporary / "weights", weights)
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
        self.accelerator.wait_for_everyone()
        self._unverified_checkpoint = final
        return final

    def _prune_checkpoints(self) -> None:
        """Keep the newest `checkpoints_total_limit` whole checkpoints (a damaged one, e.g. an empty folder, neither
        counts nor is deleted)."""
        if self.accelerator.is_main_process:
            whole = [path for _, path in find_checkpoints(self.output_dir) if is_whole_checkpoint(path)]
            for old in whole[: -self.config.checkpoints_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        self._unverified_checkpoint = None

    def load_checkpoint(self, path: Path) -> None:
        """
        Restore a checkpoint. Every file is read before anything is applied, so a damaged checkpoint changes nothing.

        Raises:
            `CheckpointFileError`: A file of the checkpoint is missing, truncated or malformed (named in the message).
        """
        state = path / "state"
        own_name = f"process_{self.accelerator.process_index}"
        if not (state / "training_state.json").is_file() and (state / "custom_checkpoint_0.pkl").is_file():
            return self._load_legacy_checkpoint(path)
        weights = self.stage.read_trainable(path / "weights")
        shared = load_tree(state, "training_state")
        own = load_tree(state, own_name) if (state / f"{own_name}.json").is_file() else None
        if own is None and self.accelerator.process_index == 0:
            raise CheckpointFileError(f"{state / own_name}.json: missing")
        try:
            if engines.is_sharded(self.accelerator):
                engines.load_full_weights(self.module, weights)
            else:
                self.stage.apply_trainable(weights)
            engines.load_optimizer_state(self.accelerator, self.module, self.optimizer, shared["optimizer"])
            self.lr_scheduler.load_state_dict(shared["lr_scheduler"])
            if "scaler" in shared and self.accelerator.scaler is not None:
                self.accelerator.scaler.load_state_dict(shared["scaler"])
            self.state.load_state_dict(shared["training"])
            if own is not None:  # a process the checkpoint did not have keeps its fresh randomness
                set_rng_states(own["rng"])
                self.state.generator.set_state(own["generator"])
                for module, extra in zip(self.process_state, own["extra"], strict=True):
                    module.load_state_dict(extra)
        except (KeyError, ValueError, TypeError, RuntimeError) as error:
            raise CheckpointFileError(f"{state}: does not match this run ({type(error).__name__}: {error})") from error
        self._truncate_log(self.state.step)

    def _load_legacy_checkpoint(self, path: Path) -> None:
        """A checkpoint from before safetensors-only state: Accelerate's pickles, loaded only with `allow_pickle`."""
        if not self.allow_pickle:
            raise PickledStateError(
                f"{path / 'state'} holds pickled training state (harivo < 0.1.1); unpickling can run code. If you"
                " wrote this checkpoint yourself, resume with --allow-pickle."
            )
        self.accelerator.print(f"warning: loading pickled training state from {path / 'state'} (--allow-pickle).")
        self.stage.apply_trainable(self.stage.read_trainable(path / "weights"))
        self.accelerator.register_for_checkpointing(self.state)
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

    def _resume(self) -> None:
        """Load the newest checkpoint that reads back whole, saying which were damaged and skipped."""
        for step, path in reversed(find_checkpoints(self.output_dir)):
            try:
                self.load_checkpoint(path)
            except PickledStateError:
                raise  # not damaged: an older checkpoint would not be the one asked for
            except CheckpointFileError as error:
                self.accelerator.print(f"warning: checkpoint-{step} is damaged ({error}); trying an older one.")
                continue
            self.accelerator.print(f"Resumed from {path} (step {self.state.step}).")
            return
        raise CheckpointFileError(
            f"No checkpoint in {self.output_dir} reads back whole (see the warnings above); move the folder away to"
            " start from scratch."
        )

    def _stream_batches(self):
        """Endless batches of a stream (shards): `batches_in_epoch` counts the stream's batches, the same number on
        every process, and a resumed run continues after them; skipped samples are reported with the log."""
        self.dataset.start_at(self.state.batches_in_epoch)
        skipped, empty_in_a_row, streak = Counter(), 0, Counter()
        for batch in _worker_errors_in_one_line(self.loader):
            self.state.batches_in_epoch += 1
            dropped = batch.pop("skipped", {}) or {}
            skipped.update(dropped)
            streak.update(dropped)
            if skipped and self.state.batches_in_epoch % self.config.log_every == 0:
                self._report_skipped(
                    skipped, f"Batch {self.state.batches_in_epoch}", batches=self.state.batches_in_epoch
                )
            if not batch:  # every sample of the batch was skipped
                empty_in_a_row += 1
                if empty_in_a_row == STREAM_PATIENCE:
                    raise ValueError(
                        f"{STREAM_PATIENCE} batches in a row had only skipped samples ({_reasons(streak)}); check the data"
                        " (data.shards) and data.num_frames x data.frame_stride, the frames each clip needs."
                    )
                continue
            empty_in_a_row, streak = 0, Counter()
            yield send_to_device(batch, self.accelerator.device)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint by the run that was interrupted."""
        if not self.log_path.is_file() or not self.accelerator.is_main_process:
            return
        kept = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line the killed run did not finish writing
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        self.log_path.write_text("".join(line + "\n" for line in kept))

    # ---------------------------------------------------------------------------------------------------- loop
    def _batches(self):
        """Endless batches; resumes mid-epoch by skipping the batches the checkpoint already consumed."""
        if self.sampler is None:
            yield from self._stream_batches()
            return
        skipped = Counter()
        while True:
            self.sampler.set_epoch(self.state.epoch)
            # accelerate's loader sets its sampler's epoch to its own count of passes when iterated (and a resumed
            # process counts from 0): give it ours, or an epoch after the first replays the first's order
            self.loader.set_epoch(self.state.epoch)
            loader = self.loader
            resumed_mid_epoch = self.state.batches_in_epoch > 0
            if resumed_mid_epoch:
                loader = self.accelerator.skip_first_batches(self.loader, self.state.batches_in_epoch)
            yielded = 0
            for batch in loader:
                self.state.batches_in_epoch += 1
                skipped.update(batch.pop("skipped", {}) or {})
                if batch:  # empty when every video of the batch was skipped
                    yielded += 1
                    yield batch
            if not yielded and not resumed_mid_epoch:
                raise ValueError(
                    f"Epoch {self.state.epoch} gave no batch to train on"
                    + (f": every sample was skipped ({_reasons(skipped)})" if skipped else "")
                    + "; check the data (data.csv / data.root) and batch_size."
                )
            if skipped:
                self._report_skipped(skipped, f"Epoch {self.state.epoch}", epoch=self.state.epoch)
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    def _report_skipped(self, skipped: Counter, where: str, **record) -> None:
        """Print and log the skipped samples' counts by reason (`where`: "Epoch 3", "Batch 40"), then clear them."""
        self.accelerator.print(f"{where}: skipped {sum(skipped.values())} videos ({_reasons(skipped)}).")
        self._log({"step": self.state.step, **record, "skipped": dict(skipped)})
        skipped.clear()

    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _first_non_finite(self, value: torch.Tensor) -> float | None:
        """The first NaN / inf of `value` on any process (each process passes its own; every process gets the same
        answer, so all stop together instead of the others waiting for the one that stopped)."""
        value = engines.local(value.detach()).flatten().float()
        bad = value[~value.isfinite()][:1]
        found = torch.stack([torch.tensor(float(len(bad))), bad[0].cpu() if len(bad) else torch.tensor(0.0)])
        if self.accelerator.num_processes > 1:
            found = self.accelerator.gather(found.to(self.accelerator.device)).cpu().view(-1, 2)
            found = next((row for row in found if row[0] > 0), found[0])
        return found[1].item() if found[0] > 0 else None

    def _check_finite(self, value: torch.Tensor, what: str, logs: dict) -> None:
        first = self._first_non_finite(value)
        if first is None:
            return
        suspect = ""
        if self._unverified_checkpoint is not None and self.accelerator.is_main_process:
            # its weights are the ones that just gave a non-finite value: never offer it as a resume point
            bad = self._unverified_checkpoint
            diverged = bad.with_name(bad.name + ".diverged")
            shutil.rmtree(diverged, ignore_errors=True)
            if bad.exists():
                os.replace(bad, diverged)
                suspect = f"; {bad.name} holds the weights that gave it and was renamed {diverged.name}"
        self._unverified_checkpoint = None
        checkpoints = find_checkpoints(self.output_dir)
        last = f"the last good checkpoint is {checkpoints[-1][1]}" if checkpoints else "no good checkpoint exists"
        raise TrainingDivergedError(
            f"The {what} became {first} at step {self.state.step + 1} (terms: "
            + ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
            + f"){suspect}; nothing was saved from this step, {last}. Lower optim.learning_rate or use "
            "mixed_precision=bf16 / no, then resume with --resume."
        )

    def _check_finite_weights(self) -> None:
        """Never keep (or save) NaN / inf weights: stop with the step that made them."""
        shards = [engines.local(p.detach()) for p in self.parameters]  # under FSDP each process checks its own
        finite = torch.stack([p.isfinite().all() for p in shards])  # one device sync, not one per parameter
        bad = shards[int((~finite).int().argmax())] if not finite.all() else shards[0].new_zeros(1)
        self._check_finite(bad, "weights after the optimizer step", {})

    def train(self) -> Path:
        """Run to `max_steps`; returns the folder with the exported final weights."""
        config, accelerator = self.config, self.accelerator
        checkpoints = find_checkpoints(self.output_dir)
        if not self.resume and (checkpoints or (self.output_dir / "final").is_dir()):  # nothing of it is touched
            held = "checkpoints" if checkpoints else "a finished run (final/)"
            raise FileExistsError(
                f"{self.output_dir} already has {held}; pass --resume to continue it, or choose another output_dir."
            )
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(config.to_yaml())
        if self.resume and checkpoints:
            self._resume()
        elif self.resume:
            accelerator.print(f"No checkpoint in {self.output_dir}; starting from scratch.")
        if config.report_to:
            accelerator.init_trackers(
                f"harivo-{config.stage}", config=json.loads(json.dumps(vars(config), default=str))
            )

        if accelerator.num_processes > 1:
            accelerator.print(
                f"Training on {accelerator.num_processes} processes ({engines.engine_name(accelerator)})."
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
                with accelerator.accumulate(self.module), accelerator.autocast():
                    loss, logs = self.module(batch)
                    self._check_finite(loss.detach(), "loss", logs)
                    if self._unverified_checkpoint is not None:  # its weights ran to a finite loss: keep it
                        self._prune_checkpoints()
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(self.parameters, config.optim.max_grad_norm)
                        if config.mixed_precision != "fp16":  # fp16's scaler skips inf steps by design
                            self._check_finite(torch.as_tensor(grad_norm), "gradient norm", logs)
                    self.optimizer.step()
                    self.lr_scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    if accelerator.sync_gradients:
                        self._check_finite_weights()
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
        self._prune_checkpoints()
        if not config.validate_every or config.max_steps % config.validate_every:
            self.validate()
        final = self.output_dir / "final"
        weights = engines.full_weights(accelerator, self.module, self._weightless) if self._sharded else None
        if accelerator.is_main_process:
            temporary = self.output_dir / "final.tmp"
            shutil.rmtree(temporary, ignore_errors=True)
            if self._sharded:
                self.stage.export(temporary, weights)
            else:
                self.stage.export(temporary)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
        accelerator.end_training()
        return final

    @property
    def _sharded(self) -> bool:
        return engines.is_sharded(self.accelerator)

    def validate(self) -> None:
        if self.config.num_validation_samples == 0:
            return
        with engines.gathered(self.accelerator, self.module):  # the main process runs the stage's own modules
            if self.accelerator.is_main_process:
                folder = self.output_dir / "validation" / f"step-{self.state.step:06d}"
                self.stage.validate(folder, self.config.num_validation_samples)
            self.accelerator.wait_for_everyone()
