"""ControlNets for a base model (`ControlNetStage`)."""

import math

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.data import Dataset

from ...data import ShapesImageDataset
from ...losses import diffusion_target
from ...utils.text import encode_captions
from ...video_io import contact_sheet
from ..config import TrainConfig
from .base import Stage, freeze


class ControlNetStage(Stage):
    """A ControlNet on a frozen text-to-image model (`ControlNetModel.from_unet`: a trainable copy of the U-Net's
    encoder plus a condition encoder, zero-initialised outputs), trained with the base model's diffusion loss on
    images and their condition (the Shapes world: the object's silhouette)."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator, generator: torch.Generator):
        super().__init__(config, accelerator, generator)
        settings = config.controlnet
        unet = self._load_frozen_base("controlnet.base_model", settings.base_model)
        channels = settings.conditioning_embedding_out_channels
        if 2 ** (len(channels) - 1) != self.vae_scale_factor:
            raise ValueError(
                f"controlnet.conditioning_embedding_out_channels has {len(channels)} entries, so it shrinks the"
                f" condition {2 ** (len(channels) - 1)}x, but this base model's latents are {self.vae_scale_factor}x"
                f" smaller than its images: give {round(math.log2(self.vae_scale_factor)) + 1} entries."
            )
        self.controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
        self.controlnet.to(self.device).train()
        self.unet = freeze(unet, accelerator)

    def trainable_modules(self):
        return {"controlnet": self.controlnet}

    def dataset(self) -> Dataset:
        data = self.config.data
        if data.kind != "shapes":
            raise ValueError("The controlnet stage trains on the Shapes world (data.kind: shapes) for now.")
        return ShapesImageDataset(length=data.length, seed=data.seed, resolution=data.resolution, silhouettes=True)

    def loss(self, batch):
        settings = self.config.controlnet
        pixels = batch["pixel_values"].to(self.device, dtype=self.vae.dtype)
        condition = batch["conditioning_pixel_values"].to(self.device)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample(generator=self.generator).float()
            latents = latents * self.vae.config.scaling_factor
        captions = self._add_motion_phrases(batch["caption"], settings.motion_phrase_probability)
        captions = self._drop_captions(captions, settings.caption_dropout)
        text = encode_captions(self.tokenizer, self.text_encoder, captions).float()
        noise = randn_tensor(latents.shape, generator=self.generator, device=self.device)
        timesteps = self._random_timesteps(self.noise_scheduler, len(latents))
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        down, mid = self.controlnet(
            noisy, timesteps, text, controlnet_cond=condition, conditioning_scale=settings.conditioning_scale,
            return_dict=False,
        )  # fmt: skip
        prediction = self.unet(
            noisy, timesteps, text, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        loss = F.mse_loss(prediction.float(), diffusion_target(self.noise_scheduler, latents, noise, timesteps))
        return loss, {"diffusion": loss.item(), "total": loss.item()}

    def pipeline(self) -> StableDiffusionControlNetPipeline:
        return StableDiffusionControlNetPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            controlnet=self.accelerator.unwrap_model(self.controlnet),
            scheduler=self._sampler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    @torch.no_grad()
    def validate(self, folder, num_samples):
        settings = self.config.controlnet
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        self.controlnet.eval()
        data = self.dataset()
        rows, labels = [], []
        for index, prompt in enumerate(settings.validation_prompts):
            conditions = torch.stack([data[index * 7 + seed]["conditioning_pixel_values"] for seed in range(4)])
            images = pipe(
                [prompt] * len(conditions), image=conditions, num_inference_steps=settings.validation_steps,
                guidance_scale=settings.validation_guidance_scale, controlnet_conditioning_scale=settings.conditioning_scale,
                generator=torch.Generator().manual_seed(index), output_type="np",
            ).images  # fmt: skip
            rows += [conditions.permute(0, 2, 3, 1).numpy(), images]
            labels += ["condition", prompt]
        self.controlnet.train()
        folder.mkdir(parents=True, exist_ok=True)
        contact_sheet(rows, labels, scale=2).save(folder / "samples.png")

    def export(self, folder):
        self.accelerator.unwrap_model(self.controlnet).save_pretrained(folder)
