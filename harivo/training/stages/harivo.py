"""HARIVO itself (`HarivoStage`): the adapter (temporal layers, mapping network, frame-wise tokens, motion path) on a
frozen text-to-image model."""

from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import DDIMScheduler, MotionAdapter
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.data import Dataset

from ...data import ShapesVideoDataset, WebVidDataset, collate_videos
from ...losses import HarivoLoss, LossWeights
from ...models import HarivoAdapter, HarivoUNet, estimate_displacements
from ...models.adapter import COMPONENTS, SAMPLING_WINDOWS, check_sampling_defaults
from ...utils.text import encode_captions, substitute_tokens, tokenize_captions
from ...video_io import contact_sheet
from ..config import TrainConfig
from .base import Stage, load_component, resolve_base_model


class HarivoStage(Stage):
    """HARIVO on a frozen text-to-image model: trains the adapter with `L_diff + L_reg + L_trsa + L_dc`."""

    collate = staticmethod(collate_videos)

    def __init__(self, config: TrainConfig, accelerator: Accelerator, generator: torch.Generator):
        super().__init__(config, accelerator, generator)
        settings = config.harivo
        unet = self._load_frozen_base("harivo.base_model", settings.base_model)
        self.inference_scheduler_config = self.noise_scheduler.config
        if settings.adapter:
            self.adapter = self._load_adapter(settings, unet, accelerator)
        else:
            self.adapter = self._new_adapter(settings, unet, accelerator)
        for name in SAMPLING_WINDOWS:  # the recommended sampling, saved in the adapter
            value = getattr(settings, f"sampling_{name}")
            if value is not None:
                try:
                    self.adapter.sampling_defaults.update(check_sampling_defaults({name: value}))
                except ValueError as error:
                    raise ValueError(f"harivo.sampling_{name}: {error}") from error
        if not settings.train_mapping_network:
            self.adapter.mapping_network.requires_grad_(False)
        if settings.trained_components is not None:
            present = [name for name in COMPONENTS if getattr(self.adapter, name) is not None]
            unknown = sorted(set(settings.trained_components) - set(present))
            if unknown:
                raise ValueError(
                    f"harivo.trained_components: the adapter has no {', '.join(unknown)}; it has {', '.join(present)}."
                )
            for name in present:
                if name not in settings.trained_components:
                    getattr(self.adapter, name).requires_grad_(False)
        self.model = HarivoUNet.from_unet2d(unet, self.adapter).to(self.device)
        self.model.train()
        weights = LossWeights(
            settings.weight_diffusion,
            settings.weight_reg,
            settings.weight_trsa,
            settings.weight_dc,
            path=settings.weight_path if self.adapter.path_predictor is not None else 0.0,
        )
        self.loss_fn = HarivoLoss(
            weights,
            trsa_layers=settings.trsa_layers,
            dc_temperature=settings.dc_temperature,
            dc_queue_size=settings.dc_queue_size,
            embedding_dim=settings.projection_dim,
            timestep_bias=settings.timestep_bias,
            reg_frames=settings.reg_frames,
        ).to(self.device)

    @staticmethod
    def _load_adapter(settings, unet, accelerator) -> HarivoAdapter:
        """The saved adapter of `harivo.adapter`, checked against the base model and the losses that need a part."""
        path = resolve_base_model(settings.adapter, "harivo.adapter", accelerator)
        adapter = load_component(HarivoAdapter, "harivo.adapter", path)
        try:
            adapter.check_compatible(unet.config)
        except ValueError as error:
            raise ValueError(f"harivo.adapter {settings.adapter}: {error}") from error
        if settings.weight_dc > 0 and adapter.projection_head is None:
            raise ValueError(
                f"harivo.adapter {settings.adapter} has no projection head, which L_dc needs: set harivo.weight_dc=0."
            )
        return adapter

    @staticmethod
    def _new_adapter(settings, unet, accelerator) -> HarivoAdapter:
        motion_adapter = None
        if settings.motion_adapter:
            path = resolve_base_model(settings.motion_adapter, "harivo.motion_adapter", accelerator)
            if Path(path).expanduser().is_file():  # AnimateDiff's own checkpoint, or a diffusers-layout file
                from ...models.motion_checkpoint import motion_adapter_from_file

                motion_adapter = motion_adapter_from_file(
                    path, norm_num_groups=unet.config.norm_num_groups,
                    num_attention_heads=settings.motion_num_attention_heads,
                )  # fmt: skip
            else:
                motion_adapter = load_component(MotionAdapter, "harivo.motion_adapter", path)
        return HarivoAdapter.from_unet(
            unet,
            motion_adapter=motion_adapter,
            num_frame_tokens=settings.num_frame_tokens,
            max_frames=settings.max_frames,
            motion_num_attention_heads=settings.motion_num_attention_heads,
            mapping_hidden_channels=settings.mapping_hidden_channels,
            mapping_num_layers=settings.mapping_num_layers,
            noise_frame_correlation=settings.noise_frame_correlation,
            projection_dim=settings.projection_dim,
            with_projection_head=settings.weight_dc > 0,
            motion_conditioning=settings.motion_conditioning,
            motion_conditioning_dim=settings.motion_conditioning_dim,
            motion_conditioning_pooling=settings.motion_conditioning_pooling,
            motion_path=settings.motion_path,
            noise_warping=settings.noise_warping,
            noise_warp_correlation=settings.noise_warp_correlation,
            noise_warp_upscale=settings.noise_warp_upscale,
        )

    def trainable_modules(self):
        return {"adapter": self.adapter}

    def enable_gradient_checkpointing(self) -> None:
        self.model.unet.enable_gradient_checkpointing()

    def checkpointed_state(self):
        return [self.loss_fn]  # the L_dc queue of negatives

    def save_trainable(self, folder: Path, modules: dict[str, torch.nn.Module] | None = None) -> None:
        adapter = (modules or self.trainable_modules())["adapter"]
        self.accelerator.unwrap_model(adapter).save_pretrained(folder / "adapter", include_projection_head=True)

    def dataset(self) -> Dataset:
        data = self.config.data
        if data.kind == "latents":
            from ...data.latents import LatentDataset

            return LatentDataset(data.latents, self.fingerprint())
        if data.kind == "webdataset":
            from ...data.shards import ShardVideoDataset, expand_shards

            return ShardVideoDataset(
                expand_shards(data.shards), num_frames=data.num_frames, frame_stride=data.frame_stride,
                resolution=data.resolution, seed=data.seed, shuffle_buffer=data.shuffle_buffer,
                rank=self.accelerator.process_index, world_size=self.accelerator.num_processes,
                retries=data.shard_retries, buckets=data.buckets,
            )  # fmt: skip
        if data.kind == "webvid":
            return WebVidDataset(
                data.csv,
                data.root,
                num_frames=data.num_frames,
                frame_stride=data.frame_stride,
                resolution=data.resolution,
            )
        return ShapesVideoDataset(
            length=data.length, seed=data.seed, resolution=data.resolution, num_frames=data.num_frames
        )

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """`(B, F, 3, H, W)` pixels in [-1, 1] to scaled latents `(B, C, F, h, w)`: a draw from the VAE's posterior."""
        return self._draw_latents(*self._posterior(pixels))

    @torch.no_grad()
    def _posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE posterior's mean and standard deviation `(B, C, F, h, w)` of pixels `(B, F, 3, H, W)`."""
        batch_size, num_frames = pixels.shape[:2]
        flat = pixels.flatten(0, 1).to(self.device, dtype=self.vae.dtype)  # frames into the batch: (B*F, 3, H, W)
        posteriors = [self.vae.encode(chunk).latent_dist for chunk in flat.split(64)]

        def video(values: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat(values).unflatten(0, (batch_size, num_frames)).transpose(1, 2)

        return video([p.mean for p in posteriors]), video([p.std for p in posteriors])

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        return encode_captions(self.tokenizer, self.text_encoder, captions).float()

    def fingerprint(self) -> str:
        """Which base model a latent cache belongs to (its VAE and text encoder)."""
        from ...data.latents import model_fingerprint

        return model_fingerprint(self.vae, self.text_encoder)

    @torch.no_grad()
    def encode_for_cache(self, pixels: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        """What `harivo precompute` keeps of clips `(B, F, 3, H, W)`: the VAE posterior's mean and standard deviation
        `(B, C, F, h, w)`, the captions' text states and, for an adapter with a path predictor, the clips' paths."""
        mean, std = self._posterior(pixels)
        cache = {"latent_mean": mean, "latent_std": std, "text": self.encode_text(captions)}
        if self.model.adapter.path_predictor is not None:
            cache["path"] = estimate_displacements(pixels) / self.vae_scale_factor
        return cache

    def _draw_latents(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Scaled latents drawn with the run's generator from posteriors `(B, C, F, h, w)` (the VAE's own, or a
        cache's: the same draw either way), 64 frames at a time as the VAE encodes them."""
        batch_size, num_frames = mean.shape[0], mean.shape[2]
        mean, std = (x.transpose(1, 2).flatten(0, 1).to(self.device, self.vae.dtype) for x in (mean, std))
        draws = [
            m + s * randn_tensor(m.shape, generator=self.generator, device=m.device, dtype=m.dtype)
            for m, s in zip(mean.split(64), std.split(64))
        ]
        latents = torch.cat(draws).float() * self.vae.config.scaling_factor
        return latents.unflatten(0, (batch_size, num_frames)).transpose(1, 2)

    _empty_text = None  # the empty caption's text states (caption dropout on cached text)

    def loss(self, batch):
        settings = self.config.harivo
        if "latent_mean" in batch:  # a precomputed cache: neither the VAE nor the text encoder runs
            latents = self._draw_latents(batch["latent_mean"], batch["latent_std"])
            captions = self._drop_captions(batch["caption"], settings.caption_dropout)
            text = batch["text"].to(self.device).float().clone()
            dropped = [index for index, caption in enumerate(captions) if not caption]
            if dropped:
                if self._empty_text is None:
                    self._empty_text = self.encode_text([""])
                text[dropped] = self._empty_text
            displacements = batch["path"].to(self.device) if "path" in batch else None
            path_text = None
            if settings.path_token_substitution > 0 or settings.path_caption_copies > 1:
                path_text = self.encode_path_text(captions)
            return self.loss_fn(
                self.model, self.noise_scheduler, latents, text, generator=self.generator,
                displacements=displacements, path_encoder_hidden_states=path_text,
            )  # fmt: skip
        if "pixel_values" not in batch:
            raise RuntimeError("Every video of this batch was skipped (missing, corrupt or too short).")
        latents = self.encode_video(batch["pixel_values"])
        captions = self._drop_captions(batch["caption"], settings.caption_dropout)
        text = self.encode_text(captions)
        displacements = path_text = None
        if self.model.adapter.path_predictor is not None:  # the clip's motion path, in latent pixels
            displacements = estimate_displacements(batch["pixel_values"]).to(self.device) / self.vae_scale_factor
            if settings.path_token_substitution > 0 or settings.path_caption_copies > 1:
                path_text = self.encode_path_text(captions)
        return self.loss_fn(
            self.model,
            self.noise_scheduler,
            latents,
            text,
            generator=self.generator,
            displacements=displacements,
            path_encoder_hidden_states=path_text,
        )

    @torch.no_grad()
    def encode_path_text(self, captions: list[str]) -> torch.Tensor:
        """What the path predictor reads for `L_path`: `path_caption_copies` copies of the captions (copy-major), each
        word replaced with probability `path_token_substitution` by a random vocabulary token."""
        settings = self.config.harivo
        ids = tokenize_captions(self.tokenizer, captions).repeat(settings.path_caption_copies, 1)
        ids = substitute_tokens(self.tokenizer, ids, settings.path_token_substitution, self.generator)
        return self.text_encoder(ids.to(self.device))[0].float()

    def pipeline(self):
        from ...pipelines import HarivoPipeline

        scheduler = DDIMScheduler.from_config(self.inference_scheduler_config)
        return HarivoPipeline(self.vae, self.text_encoder, self.tokenizer, self.model.unet, self.adapter, scheduler)

    @torch.no_grad()
    def validate(self, folder, num_samples):
        from ...video_io import save_video

        settings = self.config.harivo
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        self.model.eval()
        videos, labels = [], []
        for index, prompt in enumerate(settings.validation_prompts):
            for seed in range(num_samples):
                frames = pipe(
                    prompt,
                    num_frames=settings.validation_num_frames,
                    num_inference_steps=settings.validation_steps,
                    guidance_scale=settings.validation_guidance_scale,
                    generator=torch.Generator().manual_seed(seed),
                    output_type="np",
                ).frames[0]
                save_video(frames, folder / f"{index:02d}-seed{seed}.gif", fps=8)
                videos.append(frames)
                labels.append(f"{prompt} (seed {seed})")
        self.model.train()
        contact_sheet(videos, labels, scale=2).save(folder / "samples.png")

    def export(self, folder, modules: dict[str, torch.nn.Module] | None = None):
        adapter = (modules or self.trainable_modules())["adapter"]
        self.accelerator.unwrap_model(adapter).save_pretrained(folder, include_projection_head=False)
