"""A motion LoRA from a few reference clips (`MotionLoraStage`): MotionDirector (Zhao et al. 2024) on HARIVO.

A LoRA on the adapter's temporal attention learns how the clips move; a second LoRA on the frozen image model's
spatial attention, trained on single frames with the temporal layers off, absorbs what the clips look like, so that
the motion LoRA need not. Only the motion LoRA is exported: it moves other subjects the clips' way. HARIVO also
steers motion with a path (predicted from the prompt, or given): the export carries the clips' mean motion path,
measured from their frames, which `generate` follows with the LoRA unless told another [ours].
"""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from ...loras import MOTION_CONFIG
from ...losses import HarivoLoss, LossWeights, diffusion_target
from ...models import HarivoAdapter, HarivoUNet, estimate_displacements
from ...pipelines import HarivoPipeline
from ...video_io import VIDEO_SUFFIXES, contact_sheet, read_frames
from ..config import TrainConfig
from .base import Stage, load_component, resolve_base_model

MOTION, APPEARANCE = "motion", "appearance"  # the two LoRAs' names on the video U-Net
PROJECTIONS = r"(to_q|to_k|to_v|to_out\.0)"
TEMPORAL_TARGETS = rf".*motion_modules\..*\.{PROJECTIONS}"
SPATIAL_TARGETS = rf".*\.attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.{PROJECTIONS}"


def read_reference_clips(folder: str, prompt: str, resolution: int, num_frames: int, max_videos: int):
    """The clips of `folder` (video files and GIFs, sorted by name) as `(F, 3, R, R)` tensors in [-1, 1] (centre-cropped
    square, resized to `resolution`) with their captions (`<clip>.txt` beside one, else `prompt`); one-line
    `ValueError`s for a folder without clips, too many, a clip too short or one without a caption."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (*VIDEO_SUFFIXES, ".gif"))
    if not files:
        raise ValueError(f"motion_lora.videos {folder}: no clips in it ({', '.join((*VIDEO_SUFFIXES, '.gif'))}).")
    if len(files) > max_videos:
        raise ValueError(
            f"motion_lora.videos {folder}: {len(files)} clips, more than motion_lora.max_videos ({max_videos}); a"
            " motion LoRA learns from 1 to 5 clips of one motion."
        )
    clips, captions = [], []
    for file in files:
        frames = read_frames(file)
        if len(frames) < num_frames:
            raise ValueError(
                f"{file.name} has {len(frames)} frames, fewer than motion_lora.num_frames ({num_frames}): lower"
                " --num-frames or give a longer clip."
            )
        beside = file.with_suffix(".txt")
        caption = beside.read_text(encoding="utf-8").strip() if beside.is_file() else prompt
        if not caption:
            raise ValueError(f"{file.name} has no caption: pass --prompt, or write {beside.name} beside it.")
        clips.append(torch.stack([_square(frame, resolution) for frame in frames]))
        captions.append(caption)
    return clips, captions


def _square(image: PIL.Image.Image, resolution: int) -> torch.Tensor:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), PIL.Image.BICUBIC)
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1.0


class ClipWindows(Dataset):
    """Every window of `num_frames` consecutive frames of every clip, with the clip's caption."""

    def __init__(self, clips: list[torch.Tensor], captions: list[str], num_frames: int):
        self.clips, self.captions, self.num_frames = clips, captions, num_frames
        self.windows = [(c, s) for c, clip in enumerate(clips) for s in range(len(clip) - num_frames + 1)]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        clip, start = self.windows[index]
        return {"pixel_values": self.clips[clip][start : start + self.num_frames], "caption": self.captions[clip]}


class MotionLoraStage(Stage):
    """Train a motion LoRA (and the appearance LoRA it is trained beside) on a HARIVO model from reference clips."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator, generator: torch.Generator):
        super().__init__(config, accelerator, generator)
        from ...defaults import default_model_paths

        settings = config.motion_lora
        base, adapter = default_model_paths()
        unet = self._load_frozen_base("motion_lora.base_model", settings.base_model or str(base))
        path = resolve_base_model(settings.adapter or str(adapter), "motion_lora.adapter", accelerator)
        self.adapter = load_component(HarivoAdapter, "motion_lora.adapter", path)
        try:
            self.adapter.check_compatible(unet.config)
        except ValueError as error:
            raise ValueError(f"motion_lora.adapter {path}: {error}") from error
        if settings.num_frames > self.adapter.max_frames:
            raise ValueError(
                f"motion_lora.num_frames ({settings.num_frames}) is more than the adapter's max_frames"
                f" ({self.adapter.max_frames})."
            )
        self.clips, self.captions = read_reference_clips(
            settings.videos, settings.prompt, config.data.resolution, settings.num_frames, settings.max_videos
        )
        self.adapter.requires_grad_(False).eval().to(self.device)
        self.model = HarivoUNet.from_unet2d(unet, self.adapter).to(self.device)
        self.model.requires_grad_(False)
        self.unet = self.model.unet
        self.names = [MOTION] + ([APPEARANCE] if settings.spatial_lora_rank else [])
        from peft import LoraConfig

        for name, rank, targets in ((MOTION, settings.lora_rank, TEMPORAL_TARGETS),
                                    (APPEARANCE, settings.spatial_lora_rank, SPATIAL_TARGETS)):  # fmt: skip
            if rank:
                lora = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets)
                self.unet.add_adapter(lora, adapter_name=name)
        self.unet.set_adapters(self.names)  # both active, both trainable; the rest stays frozen
        self.model.train()
        self.loss_fn = HarivoLoss(LossWeights(1.0, 0.0, 0.0, 0.0, path=0.0)).to(self.device)
        self.path = self._mean_path()

    def _mean_path(self) -> list[list[float]]:
        """The clips' mean motion path over their first `num_frames` frames: offsets from the first frame in latent
        pixels `(F, 2)`, measured by phase correlation (what the adapter's path is in)."""
        frames = torch.stack([clip[: self.config.motion_lora.num_frames] for clip in self.clips])
        paths = estimate_displacements(frames) / self.vae_scale_factor  # (clips, F, 2)
        return [[round(x, 4), round(y, 4)] for x, y in paths.mean(0).tolist()]

    def trainable_modules(self):
        return {"unet": self.unet}

    def dataset(self) -> Dataset:
        return ClipWindows(self.clips, self.captions, self.config.motion_lora.num_frames)

    def save_trainable(self, folder: Path, modules: dict[str, torch.nn.Module] | None = None) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        unet = self.accelerator.unwrap_model((modules or self.trainable_modules())["unet"])
        for name in self.names:
            (folder / "unet" / name).mkdir(parents=True, exist_ok=True)
            state = get_peft_model_state_dict(unet, adapter_name=name)
            save_file({k: v.contiguous() for k, v in state.items()}, folder / "unet" / name / "lora.safetensors")

    def apply_trainable(self, states):
        from peft import set_peft_model_state_dict

        unet = self.accelerator.unwrap_model(self.unet)
        for name in self.names:
            state = {k.removeprefix(f"{name}."): v for k, v in states["unet"].items() if k.startswith(f"{name}.")}
            result = set_peft_model_state_dict(unet, state, adapter_name=name)
            if result.unexpected_keys or not state:
                raise RuntimeError(f"Checkpoint weights of the {name} LoRA do not match the U-Net.")

    def loss(self, batch):
        settings = self.config.motion_lora
        pixels = batch["pixel_values"]
        with torch.no_grad():
            latents = self._latents(pixels)
            text = self._text(list(batch["caption"]))
            displacements = estimate_displacements(pixels).to(self.device) / self.vae_scale_factor
        video, logs = self.loss_fn(self.model, self.noise_scheduler, latents, text, generator=self.generator,
                                   displacements=displacements)  # fmt: skip
        logs = {"motion": logs["diffusion"]}
        total = video
        if APPEARANCE in self.names and settings.spatial_loss_weight:
            appearance = self._frame_loss(latents, text)
            total = video + settings.spatial_loss_weight * appearance
            logs["appearance"] = appearance.item()
        logs["total"] = total.item()
        return total, logs

    def _frame_loss(self, latents: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The image model's diffusion loss on one random frame of each clip, temporal layers off: what the clips
        look like goes into the appearance LoRA (the motion LoRA is not in this path)."""
        batch_size, num_frames = latents.shape[0], latents.shape[2]
        pick = torch.randint(num_frames, (batch_size,), generator=self.generator)
        frames = latents[torch.arange(batch_size), :, pick][:, :, None]  # (B, C, 1, h, w)
        noise = torch.randn(frames.shape, generator=self.generator).to(frames)
        steps = self._random_timesteps(self.noise_scheduler, batch_size)
        noisy = self.noise_scheduler.add_noise(frames, noise, steps)
        with self.model.temporal_layers_disabled():
            output = self.model(noisy, steps, text).float()
        return (output - diffusion_target(self.noise_scheduler, frames, noise, steps)).pow(2).mean()

    def _latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """`(B, F, 3, H, W)` pixels in [-1, 1] to scaled latents `(B, C, F, h, w)` (the VAE posterior's mean)."""
        batch_size, num_frames = pixels.shape[:2]
        flat = pixels.flatten(0, 1).to(self.device, self.vae.dtype)
        latents = self.vae.encode(flat).latent_dist.mean.float() * self.vae.config.scaling_factor
        return latents.unflatten(0, (batch_size, num_frames)).transpose(1, 2)

    def _text(self, captions: list[str]) -> torch.Tensor:
        from ...utils.text import encode_captions

        return encode_captions(self.tokenizer, self.text_encoder, captions).float()

    def pipeline(self) -> HarivoPipeline:
        """The model sampling as the adapter recommends; `validate` turns the appearance LoRA off around it."""
        from ...schedulers import make_scheduler

        recommended = self.adapter.sampling_defaults
        scheduler = make_scheduler(
            recommended.get("scheduler", "dpm-solver++"), self._sampler(), recommended.get("timestep_spacing")
        )
        unet = self.accelerator.unwrap_model(self.unet)
        return HarivoPipeline(self.vae, self.text_encoder, self.tokenizer, unet, self.adapter, scheduler)

    @torch.no_grad()
    def validate(self, folder, num_samples):
        from ...schedulers import default_guidance_rescale
        from ...video_io import save_video

        settings = self.config.motion_lora
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        unet = self.accelerator.unwrap_model(self.unet)
        unet.set_adapters([MOTION])
        self.model.eval()
        path = torch.tensor(self.path)
        videos, labels = [], []
        try:
            for index, prompt in enumerate(settings.validation_prompts or dict.fromkeys(self.captions)):
                for seed in range(num_samples):
                    frames = pipe(
                        prompt, num_frames=settings.num_frames, num_inference_steps=settings.validation_steps,
                        guidance_scale=settings.validation_guidance_scale, motion_path=path,
                        guidance_rescale=default_guidance_rescale(pipe.scheduler),
                        generator=torch.Generator().manual_seed(seed), output_type="np",
                    ).frames[0]  # fmt: skip
                    save_video(frames, folder / f"{index:02d}-seed{seed}.gif", fps=8)
                    videos.append(frames)
                    labels.append(f"{prompt} (seed {seed}, motion LoRA)")
        finally:
            unet.set_adapters(self.names)
            self.model.train()
        if videos:
            contact_sheet(videos, labels, scale=2).save(folder / "samples.png")

    def export(self, folder):
        """`folder`: the motion LoRA (diffusers' `pytorch_lora_weights.safetensors`, for `--lora` or
        `load_lora_weights`) and `harivo_motion.json`: the clips' mean motion path, which `generate` follows."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft import get_peft_model_state_dict

        unet = self.accelerator.unwrap_model(self.unet)
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=MOTION))
        HarivoPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
        motion = {"motion_path": self.path, "num_frames": self.config.motion_lora.num_frames,
                  "captions": self.captions}  # fmt: skip
        (folder / MOTION_CONFIG).write_text(json.dumps(motion, indent=2) + "\n")
