"""The Shapes world's text-to-image model (`TextToImageStage`): the frozen base the HARIVO stage trains on."""

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.data import Dataset
from transformers import CLIPTextConfig, CLIPTextModel

from ...data import ShapesImageDataset, build_shapes_tokenizer
from ...losses import diffusion_target
from ...utils.text import tokenize_captions
from ...video_io import contact_sheet
from ..caption_content import CaptionContentHead
from ..config import TrainConfig
from .base import SD_NOISE_SCHEDULE, Stage, freeze, load_component, resolve_base_model


class TextToImageStage(Stage):
    """A Shapes-world text-to-image model from scratch: U-Net + CLIP text encoder, on a frozen autoencoder."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator, generator: torch.Generator):
        super().__init__(config, accelerator, generator)
        settings = config.t2i
        vae_path = resolve_base_model(settings.vae, "t2i.vae", accelerator)
        self.vae = freeze(load_component(AutoencoderKL, "t2i.vae", vae_path), accelerator)
        self.tokenizer = build_shapes_tokenizer(model_max_length=settings.tokenizer_max_length)
        self.text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(self.tokenizer),
                hidden_size=settings.text_hidden_size,
                intermediate_size=4 * settings.text_hidden_size,
                num_hidden_layers=settings.text_layers,
                num_attention_heads=settings.text_heads,
                max_position_embeddings=settings.tokenizer_max_length,
                bos_token_id=self.tokenizer.bos_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        ).to(self.device)
        levels = len(settings.block_out_channels)
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.unet = UNet2DConditionModel(
            sample_size=config.data.resolution // vae_factor,
            in_channels=self.vae.config.latent_channels,
            out_channels=self.vae.config.latent_channels,
            block_out_channels=settings.block_out_channels,
            layers_per_block=settings.layers_per_block,
            norm_num_groups=settings.norm_num_groups,
            down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
            cross_attention_dim=settings.text_hidden_size,
            attention_head_dim=settings.attention_head_dim,
        ).to(self.device)
        self.unet.train()
        self.text_encoder.train()
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=1000, **self._schedule())
        self.caption_head = (
            CaptionContentHead(settings.text_hidden_size).to(self.device)
            if settings.caption_content_weight > 0
            else None
        )

    def trainable_modules(self):
        modules = {"unet": self.unet, "text_encoder": self.text_encoder}
        if self.caption_head is not None:  # training-only; checkpointed, never exported
            modules["caption_content_head"] = self.caption_head
        return modules

    def dataset(self) -> Dataset:
        data = self.config.data
        return ShapesImageDataset(length=data.length, seed=data.seed, resolution=data.resolution)

    def loss(self, batch):
        pixels = batch["pixel_values"].to(self.device, dtype=self.vae.dtype)
        with torch.no_grad():
            posterior = self.vae.encode(pixels).latent_dist
            latents = posterior.sample(generator=self.generator).float() * self.vae.config.scaling_factor
        captions = self._add_motion_phrases(batch["caption"], self.config.t2i.motion_phrase_probability)
        captions = self._drop_captions(captions, self.config.t2i.caption_dropout)
        noise = randn_tensor(latents.shape, generator=self.generator, device=self.device)
        timesteps = self._random_timesteps(self.noise_scheduler, len(latents))
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        text = self.text_encoder(tokenize_captions(self.tokenizer, captions).to(self.device))
        prediction = self.unet(noisy, timesteps, text.last_hidden_state).sample
        diffusion = F.mse_loss(prediction.float(), diffusion_target(self.noise_scheduler, latents, noise, timesteps))
        terms = {"diffusion": diffusion.item()}
        loss = diffusion
        if self.caption_head is not None:
            content = self.caption_head.loss(text.pooler_output, captions)
            loss = loss + self.config.t2i.caption_content_weight * content
            terms["caption_content"] = content.item()
        return loss, {**terms, "total": loss.item()}

    def _schedule(self, inference: bool = False) -> dict:
        """The noise schedule's scheduler arguments (with those of DDIM sampling if `inference`)."""
        settings = self.config.t2i
        schedule = {**SD_NOISE_SCHEDULE, "prediction_type": settings.prediction_type}
        if settings.zero_terminal_snr:  # sampling must start at the pure-noise step: trailing spacing
            schedule.update(rescale_betas_zero_snr=True)
            if inference:
                schedule.update(timestep_spacing="trailing", set_alpha_to_one=True)
        elif inference:  # Stable Diffusion 1.5's sampling settings
            schedule.update(set_alpha_to_one=False, steps_offset=1)
        return schedule

    def pipeline(self) -> StableDiffusionPipeline:
        unwrap = self.accelerator.unwrap_model
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=unwrap(self.text_encoder),
            tokenizer=self.tokenizer,
            unet=unwrap(self.unet),
            scheduler=DDIMScheduler(num_train_timesteps=1000, clip_sample=False, **self._schedule(inference=True)),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    @torch.no_grad()
    def validate(self, folder, num_samples):
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        self.unet.eval()
        self.text_encoder.eval()
        prompts = list(self.config.t2i.validation_prompts)
        rows = []
        for seed in range(num_samples * 4):
            generator = torch.Generator().manual_seed(seed)
            rows.append(pipe(prompts, num_inference_steps=25, generator=generator, output_type="np").images)
        self.unet.train()
        self.text_encoder.train()
        folder.mkdir(parents=True, exist_ok=True)
        columns = [[row[i] for row in rows] for i in range(len(prompts))]  # one row per prompt, one image per seed
        contact_sheet([np.stack(c) for c in columns], prompts, scale=2).save(folder / "samples.png")

    def export(self, folder):
        pipe = self.pipeline()
        pipe.vae.to(torch.float32)
        pipe.save_pretrained(folder)
