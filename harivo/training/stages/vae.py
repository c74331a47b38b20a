"""The Shapes world's autoencoder (`VAEStage`)."""

import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL
from torch.utils.data import Dataset

from ...data import FULL_WORLD, ShapesImageDataset
from ...video_io import contact_sheet
from ..config import TrainConfig
from .base import Stage


class VAEStage(Stage):
    """An `AutoencoderKL` from scratch on Shapes images: L2 + L1 reconstruction and a small KL term."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator, generator: torch.Generator):
        super().__init__(config, accelerator, generator)
        settings = config.vae
        levels = len(settings.block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=settings.block_out_channels,
            layers_per_block=settings.layers_per_block,
            latent_channels=settings.latent_channels,
            norm_num_groups=settings.norm_num_groups,
            sample_size=config.data.resolution,
        ).to(self.device)
        self.vae.train()
        self.validation_images = torch.stack([self.dataset()[i]["pixel_values"] for i in range(8)])

    def trainable_modules(self):
        return {"vae": self.vae}

    def dataset(self) -> Dataset:
        data = self.config.data
        return ShapesImageDataset(length=data.length, seed=data.seed, resolution=data.resolution, world=FULL_WORLD)

    def loss(self, batch):
        pixels = batch["pixel_values"].to(self.device)
        posterior = self.vae.encode(pixels).latent_dist
        reconstruction = self.vae.decode(posterior.sample(generator=self.generator)).sample
        # Pixels of saturated colour (the Shapes world's objects: a few percent of a frame) weigh more, or the
        # autoencoder learns the backgrounds first and the objects' colours very late.
        weight = 1 + self.config.vae.saturated_weight * (
            pixels.amax(1, keepdim=True) - pixels.amin(1, keepdim=True) > 0.4
        )
        weight = weight / weight.mean()
        mse = (weight * (reconstruction.float() - pixels.float()) ** 2).mean()
        l1 = (weight * (reconstruction.float() - pixels.float()).abs()).mean()
        kl = posterior.kl().mean()
        total = mse + self.config.vae.l1_weight * l1 + self.config.vae.kl_weight * kl
        return total, {"mse": mse.item(), "l1": l1.item(), "kl": kl.item(), "total": total.item()}

    @torch.no_grad()
    def validate(self, folder, num_samples):
        self.vae.eval()
        pixels = self.validation_images.to(self.device)
        reconstruction = self.vae(pixels, sample_posterior=False).sample
        self.vae.train()
        to_image = lambda x: ((x.float().cpu() + 1) / 2).clamp(0, 1)  # noqa: E731
        folder.mkdir(parents=True, exist_ok=True)
        contact_sheet([to_image(pixels), to_image(reconstruction)], ["input", "reconstruction"], scale=2).save(
            folder / "reconstructions.png"
        )

    @torch.no_grad()
    def export(self, folder):
        """Save the autoencoder with its `scaling_factor` set so that latents have unit variance (as SD's)."""
        vae = self.accelerator.unwrap_model(self.vae).eval()
        data = self.dataset()
        pixels = torch.stack([data[i]["pixel_values"] for i in range(256)]).to(self.device)
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in pixels.split(32)])
        vae.register_to_config(scaling_factor=float(1.0 / latents.float().std()))
        vae.save_pretrained(folder)
