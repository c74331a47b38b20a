"""Few-step distillation of a whole HARIVO video model (`DistillStage`) [ours]: a LoRA on the video U-Net that takes
the teacher's multi-step path in a few deterministic steps, with classifier-free guidance folded in."""

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import DDIMScheduler
from torch.utils.data import Dataset

from ...loras import FAST_CONFIG
from ...models import HarivoAdapter, HarivoUNet
from ...pipelines import HarivoPipeline
from ...pipelines.mg_sampling import in_window
from ...utils.text import encode_captions
from ...video_io import contact_sheet
from ..config import DistillStageConfig, TrainConfig
from .base import Stage, load_component, resolve_base_model

FAST_SCHEDULER = "ddim"
FAST_TIMESTEP_SPACING = "trailing"


def student_scheduler(base) -> DDIMScheduler:
    """The deterministic DDIM sampler with "trailing" timesteps that a distilled model samples with."""
    from ...schedulers import make_scheduler

    return make_scheduler(FAST_SCHEDULER, base, FAST_TIMESTEP_SPACING)


def implied_clean_latents(x_t, x_next, alpha_t, alpha_next) -> torch.Tensor:
    """The clean latents `x0` with which one deterministic DDIM step from `x_t` (signal level `alpha_t`, i.e.
    `alpha_bar`) lands on `x_next` (level `alpha_next`): `x_next = sqrt(a_n) x0 + sqrt(1 - a_n) eps` with
    `eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)`, solved for `x0`. Levels broadcast against the latents."""
    ratio = ((1 - alpha_next) / (1 - alpha_t)).sqrt()
    return (x_next - ratio * x_t) / (alpha_next.sqrt() - ratio * alpha_t.sqrt())


def predicted_clean_latents(output, x_t, alpha_t, prediction_type: str) -> torch.Tensor:
    """The model's clean-latent prediction from its output at `x_t` (epsilon, v or sample prediction)."""
    if prediction_type == "v_prediction":
        return alpha_t.sqrt() * x_t - (1 - alpha_t).sqrt() * output
    if prediction_type == "epsilon":
        return (x_t - (1 - alpha_t).sqrt() * output) / alpha_t.sqrt().clamp(min=1e-4)
    return output


class TrajectoryPipeline(HarivoPipeline):
    """`HarivoPipeline` that keeps the latents it starts from and those after every `record_every`-th step (on the
    CPU, float32): the teacher's path."""

    record_every = 1
    states: list[torch.Tensor]

    def _initial_latents(self, latents, timesteps):
        latents = super()._initial_latents(latents, timesteps)
        self.states = [latents.float().cpu()]
        return latents

    def _after_step(self, latents, step, timesteps):
        latents = super()._after_step(latents, step, timesteps)
        if (step + 1) % self.record_every == 0:
            self.states.append(latents.float().cpu())
        return latents


class TrajectoryDataset(Dataset):
    """One student step of one teacher path per item: the latents at its start and end, which step, the prompt."""

    def __init__(self, folder: Path, count: int, steps: int):
        self.folder, self.count, self.steps = folder, count, steps

    def __len__(self) -> int:
        return self.count * self.steps

    def __getitem__(self, index: int) -> dict:
        from safetensors import safe_open

        path, step = self.folder / f"{index // self.steps:05d}.safetensors", index % self.steps
        with safe_open(path, "pt") as file:
            states, prompt = file.get_tensor("states"), file.metadata()["prompt"]
        return {"start": states[step], "end": states[step + 1], "step": step, "prompt": prompt}


class DistillStage(Stage):
    """Distil a HARIVO model (frozen base + adapter, sampled with its recommended settings) into a LoRA on its video
    U-Net for `distill.num_inference_steps` DDIM steps without classifier-free guidance. Each student step is trained
    to land where the teacher's `teacher_steps / num_inference_steps` steps landed: its clean-latent prediction is
    regressed onto the one that DDIM's update maps from the teacher's start to the teacher's end latents. The
    sampling-time parts the teacher ran (temporal layers only in their window, the motion-path projection, the
    mapping network's noise) stay the pipeline's: the student runs the temporal layers in the same fraction of its
    steps, and the pipeline projects its predictions as it does the teacher's."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator, generator: torch.Generator):
        super().__init__(config, accelerator, generator)
        settings = config.distill
        unet = self._load_frozen_base("distill.base_model", settings.base_model)
        self.adapter = self._load_adapter(settings, accelerator)
        self.adapter.check_compatible(unet.config)
        self.adapter.requires_grad_(False).eval().to(self.device)
        self.model = HarivoUNet.from_unet2d(unet, self.adapter).to(self.device)
        self.model.requires_grad_(False).eval()
        self.unet = self.model.unet  # the UNetMotionModel, whose temporal layers are the adapter's
        self.sampler = student_scheduler(self.noise_scheduler)
        self.sampler.set_timesteps(settings.num_inference_steps)
        self._check_teacher_timesteps()
        self.trajectories = self._teacher_trajectories()  # by the teacher as it is, before the LoRA exists
        from peft import LoraConfig

        self.unet.add_adapter(
            LoraConfig(
                r=settings.lora_rank, lora_alpha=settings.lora_rank, init_lora_weights=True,
                target_modules=list(settings.lora_targets),
            )
        )  # fmt: skip
        self.unet.train()

    @staticmethod
    def _load_adapter(settings: DistillStageConfig, accelerator: Accelerator) -> HarivoAdapter:
        """The teacher's adapter; the Shapes recipe's path, when that stage has not written it, falls back to the
        embedded adapter (saying so)."""
        path = settings.adapter
        if path == DistillStageConfig.adapter and not Path(path).exists():
            from ...defaults import default_model_paths

            path = str(default_model_paths()[1])
            accelerator.print(
                f"distill.adapter {settings.adapter} does not exist: distilling the embedded adapter {path} instead."
            )
        path = resolve_base_model(path, "distill.adapter", accelerator)
        return load_component(HarivoAdapter, "distill.adapter", path)

    def _teacher_scheduler(self):
        from ...schedulers import make_scheduler

        return make_scheduler(self.config.distill.teacher_scheduler, self.noise_scheduler, FAST_TIMESTEP_SPACING)

    def _check_teacher_timesteps(self) -> None:
        settings = self.config.distill
        teacher = self._teacher_scheduler()
        teacher.set_timesteps(settings.teacher_steps)
        every = settings.teacher_steps // settings.num_inference_steps
        if not torch.equal(teacher.timesteps[::every].cpu(), self.sampler.timesteps.cpu()):
            raise ValueError(
                f"distill.teacher_scheduler {settings.teacher_scheduler} with {settings.teacher_steps} steps does not"
                f" pass through the student's timesteps {self.sampler.timesteps.tolist()}: choose a sampler whose"
                " trailing timesteps do (dpm-solver++, ddim, unipc)."
            )

    def _prompts(self, count: int) -> list[str]:
        """The prompt of each teacher path, by index (an interrupted run makes the same ones again)."""
        settings = self.config.distill
        listed = list(settings.prompts)
        if settings.prompts_file:
            lines = Path(settings.prompts_file).read_text(encoding="utf-8").splitlines()
            listed = [line.strip() for line in lines if line.strip()]
            if not listed:
                raise ValueError(f"distill.prompts_file {settings.prompts_file} has no prompts (one per line).")
        if listed:
            return [listed[index % len(listed)] for index in range(count)]
        from ...data.shapes import FULL_WORLD

        rng = np.random.default_rng(self.config.seed)
        return [FULL_WORLD.sample(rng).caption for _ in range(count)]

    def teacher_pipeline(self) -> TrajectoryPipeline:
        pipe = TrajectoryPipeline(
            self.vae, self.text_encoder, self.tokenizer, self.unet, self.adapter, self._teacher_scheduler()
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def _teacher_trajectories(self) -> Path:
        """Sample every missing teacher path into `<output_dir>/trajectories/NNNNN.safetensors` (its latents at the
        student's step boundaries, the prompt in the metadata), seeded by index; the main process writes them."""
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        from ...schedulers import default_guidance_rescale

        settings = self.config.distill
        folder = Path(self.config.output_dir) / "trajectories"
        folder.mkdir(parents=True, exist_ok=True)
        prompts = self._prompts(settings.num_trajectories)
        missing = [i for i in range(settings.num_trajectories) if not (folder / f"{i:05d}.safetensors").is_file()]
        if missing and self.accelerator.is_main_process:
            pipe = self.teacher_pipeline()
            pipe.record_every = settings.teacher_steps // settings.num_inference_steps
            rescale = settings.teacher_guidance_rescale
            rescale = default_guidance_rescale(pipe.scheduler) if rescale is None else rescale
            batch = settings.trajectory_batch
            for start in tqdm(range(0, len(missing), batch), desc="teacher paths", unit="batch"):
                indices = missing[start : start + batch]
                pipe(
                    [prompts[i] for i in indices], num_frames=settings.num_frames,
                    num_inference_steps=settings.teacher_steps, guidance_scale=settings.teacher_guidance_scale,
                    guidance_rescale=rescale, generator=[torch.Generator().manual_seed(i) for i in indices],
                    output_type="latent",
                )  # fmt: skip
                states = torch.stack(pipe.states, dim=1)  # (B, steps + 1, C, F, h, w)
                for index, path in zip(indices, states):
                    temporary = folder / f"{index:05d}.tmp"  # whole files only: a killed run leaves no half path
                    save_file({"states": path.contiguous()}, temporary, metadata={"prompt": prompts[index]})
                    temporary.replace(folder / f"{index:05d}.safetensors")
        self.accelerator.wait_for_everyone()
        return folder

    def trainable_modules(self):
        return {"unet": self.unet}

    def save_trainable(self, folder: Path, modules: dict[str, torch.nn.Module] | None = None) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        (folder / "unet").mkdir(parents=True, exist_ok=True)
        unet = (modules or self.trainable_modules())["unet"]
        state = get_peft_model_state_dict(self.accelerator.unwrap_model(unet))
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "unet" / "lora.safetensors")

    def apply_trainable(self, states):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.accelerator.unwrap_model(self.unet), states["unet"])
        if result.unexpected_keys:
            raise RuntimeError(f"Checkpoint LoRA weights do not match the U-Net: extra {result.unexpected_keys}.")

    def dataset(self) -> Dataset:
        settings = self.config.distill
        return TrajectoryDataset(self.trajectories, settings.num_trajectories, settings.num_inference_steps)

    def _temporal(self, step: int) -> bool:
        """Whether the student runs its temporal layers at `step`, as the adapter recommends for the teacher."""
        window = tuple(self.adapter.sampling_defaults.get("temporal_window", (0.0, 1.0)))
        return in_window(step, self.config.distill.num_inference_steps, window)

    def _levels(self, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The timesteps of student steps `steps` and the signal levels at their start and end."""
        timesteps = self.sampler.timesteps.cpu()[steps]
        alphas = self.sampler.alphas_cumprod
        following = timesteps - self.sampler.config.num_train_timesteps // self.sampler.num_inference_steps
        ends = torch.where(following >= 0, alphas[following.clamp(min=0)], self.sampler.final_alpha_cumprod)
        shape = (-1, 1, 1, 1, 1)
        return timesteps, alphas[timesteps].view(shape), ends.view(shape)

    def loss(self, batch):
        start = batch["start"].to(self.device)
        end = batch["end"].to(self.device)
        steps = batch["step"].cpu()
        with torch.no_grad():
            text = encode_captions(self.tokenizer, self.text_encoder, list(batch["prompt"])).float()
        timesteps, alpha_t, alpha_next = self._levels(steps)
        alpha_t, alpha_next = alpha_t.to(self.device), alpha_next.to(self.device)
        target = implied_clean_latents(start, end, alpha_t, alpha_next)
        prediction = torch.empty_like(target)
        temporal = torch.tensor([self._temporal(int(step)) for step in steps])
        for runs in (True, False):  # the steps with and without the temporal layers, each in one pass
            rows = (temporal == runs).nonzero().flatten().tolist()
            if not rows:
                continue
            with contextlib.nullcontext() if runs else self.model.temporal_layers_disabled():
                output = self.model(start[rows], timesteps[rows].to(self.device), text[rows]).float()
            prediction[rows] = predicted_clean_latents(
                output, start[rows], alpha_t[rows], self.noise_scheduler.config.prediction_type
            )
        errors = (prediction - target).pow(2).flatten(1).mean(dim=1)
        loss = errors.mean()
        per_step = {f"step_{int(k)}": errors[steps == k].mean().item() for k in steps.unique()}
        return loss, {**per_step, "total": loss.item()}

    def pipeline(self) -> HarivoPipeline:
        """The student: the video U-Net with the LoRA, DDIM with trailing timesteps."""
        unet = self.accelerator.unwrap_model(self.unet)
        return HarivoPipeline(self.vae, self.text_encoder, self.tokenizer, unet, self.adapter, student_scheduler(
            self.noise_scheduler
        ))  # fmt: skip

    @torch.no_grad()
    def validate(self, folder, num_samples):
        from ...video_io import save_video

        settings = self.config.distill
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        self.unet.eval()
        videos, labels = [], []
        for index, prompt in enumerate(settings.validation_prompts):
            for seed in range(num_samples):
                frames = pipe(
                    prompt, num_frames=settings.num_frames, num_inference_steps=settings.num_inference_steps,
                    guidance_scale=1.0, generator=torch.Generator().manual_seed(seed), output_type="np",
                ).frames[0]  # fmt: skip
                save_video(frames, folder / f"{index:02d}-seed{seed}.gif", fps=8)
                videos.append(frames)
                labels.append(f"{prompt} (seed {seed}, {settings.num_inference_steps} steps)")
        self.unet.train()
        if videos:
            contact_sheet(videos, labels, scale=2).save(folder / "samples.png")

    def export(self, folder):
        """`folder`: the LoRA (diffusers' `pytorch_lora_weights.safetensors`, loadable with `--lora` or
        `load_lora_weights`) and `harivo_fast.json`, how it samples (read by `--fast`)."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft import get_peft_model_state_dict

        settings = self.config.distill
        unet = self.accelerator.unwrap_model(self.unet)
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        HarivoPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
        fast = {
            "num_inference_steps": [settings.num_inference_steps],
            "scheduler": FAST_SCHEDULER,
            "timestep_spacing": FAST_TIMESTEP_SPACING,
            "guidance_scale": 1.0,
            "teacher": {
                "scheduler": settings.teacher_scheduler,
                "num_inference_steps": settings.teacher_steps,
                "guidance_scale": settings.teacher_guidance_scale,
                "num_trajectories": settings.num_trajectories,
            },
        }
        (folder / FAST_CONFIG).write_text(json.dumps(fast, indent=2) + "\n")
