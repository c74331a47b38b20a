"""The training stages: the Shapes world's autoencoder and text-to-image model, HARIVO itself, and ControlNets.

A stage owns its models and its loss; the `Trainer` owns the loop. Each stage trains only its own parameters:
the HARIVO stage trains the adapter and never writes the frozen base model into a checkpoint.
"""

import contextlib
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DDPMScheduler,
    MotionAdapter,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.data import Dataset, default_collate
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..data import (
    FULL_WORLD,
    ShapesImageDataset,
    ShapesVideoDataset,
    WebVidDataset,
    build_shapes_tokenizer,
    collate_videos,
)
from ..data.shapes import DIRECTIONS, ShapeScene
from ..losses import HarivoLoss, LossWeights, diffusion_target
from ..models import HarivoAdapter, HarivoUNet, estimate_displacements
from ..models.adapter import COMPONENTS, SAMPLING_WINDOWS, check_sampling_defaults
from ..utils.text import encode_captions, substitute_tokens, tokenize_captions
from ..video_io import contact_sheet
from .caption_content import CaptionContentHead
from .config import TrainConfig

SD_NOISE_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def resolve_base_model(path: str, key: str, accelerator: Accelerator) -> str:
    """
    The base model folder or hub id to load for config `key`: the Shapes recipe's default path, when the earlier stage
    has not written it, falls back to the embedded Shapes base model (saying so); any other missing local path is a
    one-line `HarivoLoadError`.
    """
    from ..defaults import default_model_paths
    from ..errors import HarivoLoadError
    from ..loading import looks_like_local_path
    from .config import HarivoStageConfig

    local = Path(path).expanduser()
    if local.exists():
        return path
    if (
        key in ("harivo.base_model", "controlnet.base_model", "dreambooth.base_model")
        and path == HarivoStageConfig.base_model
    ):
        base, _ = default_model_paths()
        accelerator.print(
            f"{key} {path} does not exist (the t2i stage of scripts/train_shapes.sh writes it): training on the"
            f" embedded Shapes base model {base} instead."
        )
        return str(base)
    if looks_like_local_path(path) or "/" not in path:  # a base model's hub id is always org/name
        raise HarivoLoadError(
            f"{key} {path!r} does not exist; give a diffusers model folder or a Hugging Face Hub id (org/name)."
        )
    return path


def _weight_dtype(accelerator: Accelerator) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def _load(cls: type, key: str, path: str, **kwargs):
    """`cls.from_pretrained(path, **kwargs)`; failures become one-line `HarivoLoadError`s naming config `key`."""
    from ..errors import HarivoLoadError
    from ..loading import describe_load_error

    try:
        return cls.from_pretrained(path, **kwargs)
    except HarivoLoadError:
        raise
    except Exception as error:  # diffusers / transformers / the hub raise many types
        what = f"{key} ({kwargs['subfolder']})" if "subfolder" in kwargs else key
        raise describe_load_error(what, path, error) from error


def _check_fits_base(config: TrainConfig, unet: UNet2DConditionModel, vae_scale_factor: int) -> None:
    """One-line errors for settings that the base model's architecture cannot run."""
    channels = tuple(unet.config.block_out_channels)
    multiple = vae_scale_factor * 2 ** (len(channels) - 1)  # every U-Net level halves the latents once
    if config.data.resolution % multiple:
        raise ValueError(
            f"data.resolution ({config.data.resolution}) must be a multiple of {multiple} for this base model (VAE"
            f" factor {vae_scale_factor}, {len(channels)} U-Net levels)."
        )
    heads = config.harivo.motion_num_attention_heads
    if config.stage == "harivo" and config.harivo.motion_adapter is None and any(width % heads for width in channels):
        raise ValueError(
            f"harivo.motion_num_attention_heads ({heads}) must divide every U-Net width {channels} of this base model."
        )


def _freeze(module: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """A frozen, eval-mode module on the device, in the mixed-precision dtype."""
    module.requires_grad_(False).eval()
    return module.to(accelerator.device, dtype=_weight_dtype(accelerator))


class Stage:
    """What the `Trainer` asks of a stage."""

    collate = staticmethod(default_collate)

    def __init__(self, config: TrainConfig, accelerator: Accelerator, generator: torch.Generator):
        self.config = config
        self.accelerator = accelerator
        self.device = accelerator.device
        self.generator = generator  # CPU generator of the training randomness; its state is checkpointed

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for module in self.trainable_modules().values() for p in module.parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        for module in self.trainable_modules().values():
            if getattr(module, "supports_gradient_checkpointing", False):
                module.enable_gradient_checkpointing()

    def checkpointed_state(self) -> list:
        """Extra stateful objects (with `state_dict`) that a checkpoint must hold, one copy per process."""
        return []

    def dataset(self) -> Dataset:
        raise NotImplementedError

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def save_trainable(self, folder: Path, modules: dict[str, torch.nn.Module] | None = None) -> None:
        """Write the trainable modules (`modules`: whole-weight copies of them, as the trainer gathers under FSDP)."""
        for name, module in (modules or self.trainable_modules()).items():
            self.accelerator.unwrap_model(module).save_pretrained(folder / name)

    def read_trainable(self, folder: Path) -> dict[str, dict[str, torch.Tensor]]:
        """
        Read the trainable weights `save_trainable` wrote, without applying them.

        Raises:
            `CheckpointFileError`: A weight file is missing or unreadable (the message names it).
        """
        from safetensors.torch import load_file

        from .state_io import CheckpointFileError

        states = {}
        for name in self.trainable_modules():
            files = sorted((folder / name).rglob("*.safetensors"))
            if not files:
                raise CheckpointFileError(f"{folder / name}: no weights (the checkpoint is incomplete)")
            state = {}
            for file in files:
                prefix = file.parent.relative_to(folder / name).as_posix()
                prefix = "" if prefix == "." else prefix + "."
                try:
                    weights = load_file(file)
                except Exception as error:  # safetensors raises its own error types on truncated files
                    raise CheckpointFileError(f"{file}: {type(error).__name__}: {error}") from error
                state.update({prefix + key: value for key, value in weights.items()})
            states[name] = state
        return states

    def apply_trainable(self, states: dict[str, dict[str, torch.Tensor]]) -> None:
        """Load what `read_trainable` read into the trainable modules."""
        for name, module in self.trainable_modules().items():
            missing, unexpected = module.load_state_dict(states[name], strict=False)
            if unexpected or [key for key in missing if "queue" not in key]:
                raise RuntimeError(
                    f"Checkpoint weights of {name} do not match: missing {missing}, extra {unexpected}."
                )

    def load_trainable(self, folder: Path) -> None:
        self.apply_trainable(self.read_trainable(folder))

    def validate(self, folder: Path, num_samples: int) -> None:
        raise NotImplementedError

    def export(self, folder: Path) -> None:
        raise NotImplementedError

    def _load_frozen_base(self, key: str, path: str) -> UNet2DConditionModel:
        """Load the frozen base model of config `key` (`vae`, `vae_scale_factor`, `text_encoder`, `tokenizer`,
        `noise_scheduler` on the stage), check the config fits it, and return its U-Net (not yet frozen)."""
        base = resolve_base_model(path, key, self.accelerator)
        self.vae = _freeze(_load(AutoencoderKL, key, base, subfolder="vae"), self.accelerator)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)  # pixels per latent pixel
        self.text_encoder = _freeze(_load(CLIPTextModel, key, base, subfolder="text_encoder"), self.accelerator)
        self.tokenizer = _load(CLIPTokenizer, key, base, subfolder="tokenizer")
        self.noise_scheduler = _load(DDPMScheduler, key, base, subfolder="scheduler")
        unet = _load(UNet2DConditionModel, key, base, subfolder="unet")
        _check_fits_base(self.config, unet, self.vae_scale_factor)
        return unet

    def _sampler(self) -> DDIMScheduler:
        """DDIM with the base model's noise schedule and sampling settings, for validation pipelines."""
        return DDIMScheduler.from_config(self.noise_scheduler.config)

    def _random_timesteps(self, scheduler, batch_size: int) -> torch.Tensor:
        steps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=self.generator)
        return steps.to(self.device)

    def _drop_captions(self, captions: list[str], probability: float) -> list[str]:
        keep = torch.rand(len(captions), generator=self.generator) >= probability
        return [caption if k else "" for caption, k in zip(captions, keep.tolist())]

    def _add_motion_phrases(self, captions: list[str], probability: float) -> list[str]:
        if probability == 0:
            return captions
        directions = list(DIRECTIONS)
        add = torch.rand(len(captions), generator=self.generator) < probability
        picks = torch.randint(len(directions), (len(captions),), generator=self.generator)
        return [
            dataclasses.replace(ShapeScene.from_caption(caption), direction=directions[pick]).caption
            if flag
            else caption
            for caption, flag, pick in zip(captions, add.tolist(), picks.tolist())
        ]


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


class TextToImageStage(Stage):
    """A Shapes-world text-to-image model from scratch: U-Net + CLIP text encoder, on a frozen autoencoder."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator, generator: torch.Generator):
        super().__init__(config, accelerator, generator)
        settings = config.t2i
        vae_path = resolve_base_model(settings.vae, "t2i.vae", accelerator)
        self.vae = _freeze(_load(AutoencoderKL, "t2i.vae", vae_path), accelerator)
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
        adapter = _load(HarivoAdapter, "harivo.adapter", path)
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
                from ..models.motion_checkpoint import motion_adapter_from_file

                motion_adapter = motion_adapter_from_file(
                    path, norm_num_groups=unet.config.norm_num_groups,
                    num_attention_heads=settings.motion_num_attention_heads,
                )  # fmt: skip
            else:
                motion_adapter = _load(MotionAdapter, "harivo.motion_adapter", path)
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
            from ..data.latents import LatentDataset

            return LatentDataset(data.latents, self.fingerprint())
        if data.kind == "webdataset":
            from ..data.shards import ShardVideoDataset, expand_shards

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
        from ..data.latents import model_fingerprint

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
        from ..pipelines import HarivoPipeline

        scheduler = DDIMScheduler.from_config(self.inference_scheduler_config)
        return HarivoPipeline(self.vae, self.text_encoder, self.tokenizer, self.model.unet, self.adapter, scheduler)

    @torch.no_grad()
    def validate(self, folder, num_samples):
        from ..video_io import save_video

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
        self.unet = _freeze(unet, accelerator)

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


class DreamBoothStage(Stage):
    """DreamBooth on a text-to-image model: its U-Net (and optionally its text encoder), or a LoRA on the U-Net's
    attention, fine-tuned on a few images of a concept with prior preservation (the base model's own images of
    class prompts, generated once before training). The result is a base model for the unchanged HARIVO adapter."""

    LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(self, config: TrainConfig, accelerator: Accelerator, generator: torch.Generator):
        super().__init__(config, accelerator, generator)
        settings = config.dreambooth
        self.unet = self._load_frozen_base("dreambooth.base_model", settings.base_model)
        self.instance = self._read_instance_images()
        self._check_identifier()
        self.unet.to(self.device)
        self.classes = self._class_images()  # by the base model as it is, before any weight changes
        if settings.lora_rank:
            from peft import LoraConfig

            self.unet.requires_grad_(False)
            self.unet.add_adapter(
                LoraConfig(
                    r=settings.lora_rank, lora_alpha=settings.lora_rank, init_lora_weights="gaussian",
                    target_modules=list(self.LORA_TARGETS),
                )
            )  # fmt: skip
        self.unet.train()
        if settings.train_text_encoder:
            self.text_encoder.requires_grad_(True).train().float()

    def _read_instance_images(self):
        from ..data.images import read_image_folder

        settings = self.config.dreambooth
        images = read_image_folder(settings.instance_data, settings.instance_prompt, "dreambooth.instance_data folder")
        if len(images) < settings.min_instance_images:
            raise ValueError(
                f"dreambooth.instance_data {settings.instance_data!r} has {len(images)} image(s); DreamBooth needs at"
                f" least {settings.min_instance_images} (3 to 20 of the concept from different views is typical)."
            )
        return images

    def _check_identifier(self) -> None:
        import warnings

        identifier = self.config.dreambooth.identifier.strip()
        if not identifier:
            return
        for image in self.instance:
            if identifier not in image.caption.split():
                raise ValueError(
                    f"The caption of {image.path.name} ({image.caption!r}) does not contain the identifier"
                    f" {identifier!r}: every instance caption must name the concept with it."
                )
        pieces = self.tokenizer.tokenize(identifier)
        if len(pieces) > 1:
            warnings.warn(
                f"The identifier {identifier!r} is {len(pieces)} tokens for this tokenizer ({' '.join(pieces)}); a word"
                " that is one rare token binds the concept better.",
                stacklevel=2,
            )

    def _class_images(self):
        """The prior-preservation images: those in `class_data`, topped up to `num_class_images` with the frozen
        base model's own samples of `class_prompts` (seeded by index, so an interrupted run resumes the same set)."""
        from tqdm.auto import tqdm

        from ..data.images import read_image_folder

        settings = self.config.dreambooth
        if not settings.class_prompts or not settings.prior_loss_weight:
            return []
        folder = Path(settings.class_data or Path(self.config.output_dir) / "class_images")
        folder.mkdir(parents=True, exist_ok=True)
        have = {path.stem for path in folder.glob("*.png")}
        missing = [i for i in range(settings.num_class_images) if f"{i:05d}" not in have]
        if missing and self.accelerator.is_main_process:
            pipe = self.pipeline(self.unet)
            pipe.set_progress_bar_config(disable=True)
            batch = 16
            for start in tqdm(range(0, len(missing), batch), desc="class images", unit="batch"):
                indices = missing[start : start + batch]
                prompts = [settings.class_prompts[i % len(settings.class_prompts)] for i in indices]
                generators = [torch.Generator().manual_seed(i) for i in indices]
                images = pipe(
                    prompts, num_inference_steps=settings.class_generation_steps, generator=generators,
                    guidance_scale=settings.class_guidance_scale,
                ).images  # fmt: skip
                for index, prompt, image in zip(indices, prompts, images):
                    (folder / f"{index:05d}.txt").write_text(prompt)  # the caption first: the image marks it done
                    image.save(folder / f"{index:05d}.png")
        self.accelerator.wait_for_everyone()
        # a class folder of the user's own images may leave out captions: they show the first class prompt
        return read_image_folder(folder, settings.class_prompts[0], "dreambooth.class_data folder")[
            : settings.num_class_images
        ]

    def trainable_modules(self):
        modules = {"unet": self.unet}
        if self.config.dreambooth.train_text_encoder:
            modules["text_encoder"] = self.text_encoder
        return modules

    def save_trainable(self, folder: Path, modules: dict[str, torch.nn.Module] | None = None) -> None:
        if not self.config.dreambooth.lora_rank:
            return super().save_trainable(folder, modules)
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        (folder / "unet").mkdir(parents=True, exist_ok=True)
        unet = (modules or self.trainable_modules())["unet"]
        state = get_peft_model_state_dict(self.accelerator.unwrap_model(unet))
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "unet" / "lora.safetensors")

    def apply_trainable(self, states):
        if not self.config.dreambooth.lora_rank:
            return super().apply_trainable(states)
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.accelerator.unwrap_model(self.unet), states["unet"])
        if result.unexpected_keys:
            raise RuntimeError(f"Checkpoint LoRA weights do not match the U-Net: extra {result.unexpected_keys}.")

    def dataset(self) -> Dataset:
        from ..data.images import DreamBoothDataset

        return DreamBoothDataset(self.instance, self.classes, self.config.data.resolution, self.config.batch_size)

    def loss(self, batch):
        settings = self.config.dreambooth
        pixels, captions = batch["pixel_values"], list(batch["caption"])
        if "class_pixel_values" in batch:  # instance and class images in one pass
            pixels = torch.cat([pixels, batch["class_pixel_values"]])
            captions += list(batch["class_caption"])
        pixels = pixels.to(self.device, dtype=self.vae.dtype)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample(generator=self.generator).float()
            latents = latents * self.vae.config.scaling_factor
        with torch.no_grad() if not settings.train_text_encoder else contextlib.nullcontext():
            text = encode_captions(self.tokenizer, self.text_encoder, captions).float()
        noise = randn_tensor(latents.shape, generator=self.generator, device=self.device)
        timesteps = self._random_timesteps(self.noise_scheduler, len(latents))
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = self.unet(noisy, timesteps, text).sample.float()
        target = diffusion_target(self.noise_scheduler, latents, noise, timesteps)
        count = len(batch["pixel_values"])
        instance = F.mse_loss(prediction[:count], target[:count])
        terms = {"instance": instance.item()}
        loss = instance
        if len(prediction) > count:
            prior = F.mse_loss(prediction[count:], target[count:])
            loss = loss + settings.prior_loss_weight * prior
            terms["prior"] = prior.item()
        return loss, {**terms, "total": loss.item()}

    def pipeline(self, unet=None) -> StableDiffusionPipeline:
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.accelerator.unwrap_model(self.text_encoder),
            tokenizer=self.tokenizer,
            unet=self.accelerator.unwrap_model(unet if unet is not None else self.unet),
            scheduler=self._sampler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    @torch.no_grad()
    def validate(self, folder, num_samples):
        settings = self.config.dreambooth
        prompts = list(settings.validation_prompts) or [self.instance[0].caption]
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        self.unet.eval()
        rows = []
        for prompt in prompts:
            generators = [torch.Generator().manual_seed(seed) for seed in range(4 * num_samples)]
            rows.append(
                pipe(
                    [prompt] * len(generators), num_inference_steps=settings.validation_steps, generator=generators,
                    guidance_scale=settings.validation_guidance_scale, output_type="np",
                ).images
            )  # fmt: skip
        self.unet.train()
        folder.mkdir(parents=True, exist_ok=True)
        contact_sheet(rows, prompts, scale=2).save(folder / "samples.png")

    def export(self, folder):
        settings = self.config.dreambooth
        pipe = self.pipeline()
        if settings.lora_rank:
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
            StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
            return
        pipe.text_encoder.eval()
        pipe.save_pretrained(folder)
        if settings.single_file:
            from ..single_file import save_single_file

            save_single_file(pipe, Path(self.config.output_dir) / "final.safetensors")


def build_stage(config: TrainConfig, accelerator: Accelerator, generator: torch.Generator) -> Stage:
    stages = {
        "vae": VAEStage,
        "t2i": TextToImageStage,
        "harivo": HarivoStage,
        "controlnet": ControlNetStage,
        "dreambooth": DreamBoothStage,
    }
    stage_cls = stages[config.stage]
    return stage_cls(config, accelerator, generator)
