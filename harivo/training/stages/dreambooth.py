"""DreamBooth personalisation of a text-to-image model (`DreamBoothStage`), for the unchanged HARIVO adapter."""

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import StableDiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.data import Dataset

from ...losses import diffusion_target
from ...utils.text import encode_captions
from ...video_io import contact_sheet
from ..config import TrainConfig
from .base import Stage


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
        from ...data.images import read_image_folder

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

        from ...data.images import read_image_folder

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
        from ...data.images import DreamBoothDataset

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
            from ...single_file import save_single_file

            save_single_file(pipe, Path(self.config.output_dir) / "final.safetensors")
