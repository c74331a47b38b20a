"""What every training stage shares: the `Stage` interface the `Trainer` drives, and loading, freezing and checking the
base model's components."""

import dataclasses
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch.utils.data import Dataset, default_collate
from transformers import CLIPTextModel, CLIPTokenizer

from ...data.shapes import DIRECTIONS, ShapeScene
from ..config import TrainConfig

SD_NOISE_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def resolve_base_model(path: str, key: str, accelerator: Accelerator) -> str:
    """
    The base model folder or hub id to load for config `key`: the Shapes recipe's default path, when the earlier stage
    has not written it, falls back to the embedded Shapes base model (saying so); any other missing local path is a
    one-line `HarivoLoadError`.
    """
    from ...defaults import default_model_paths
    from ...errors import HarivoLoadError
    from ...loading import looks_like_local_path
    from ..config import HarivoStageConfig

    local = Path(path).expanduser()
    if local.exists():
        return path
    if (
        key in ("harivo.base_model", "controlnet.base_model", "dreambooth.base_model", "distill.base_model")
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


def weight_dtype(accelerator: Accelerator) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def load_component(cls: type, key: str, path: str, **kwargs):
    """`cls.from_pretrained(path, **kwargs)`; failures become one-line `HarivoLoadError`s naming config `key`."""
    from ...errors import HarivoLoadError
    from ...loading import describe_load_error

    try:
        return cls.from_pretrained(path, **kwargs)
    except HarivoLoadError:
        raise
    except Exception as error:  # diffusers / transformers / the hub raise many types
        what = f"{key} ({kwargs['subfolder']})" if "subfolder" in kwargs else key
        raise describe_load_error(what, path, error) from error


def check_fits_base(config: TrainConfig, unet: UNet2DConditionModel, vae_scale_factor: int) -> None:
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


def freeze(module: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """A frozen, eval-mode module on the device, in the mixed-precision dtype."""
    module.requires_grad_(False).eval()
    return module.to(accelerator.device, dtype=weight_dtype(accelerator))


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

        from ..state_io import CheckpointFileError

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
        self.vae = freeze(load_component(AutoencoderKL, key, base, subfolder="vae"), self.accelerator)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)  # pixels per latent pixel
        self.text_encoder = freeze(
            load_component(CLIPTextModel, key, base, subfolder="text_encoder"), self.accelerator
        )
        self.tokenizer = load_component(CLIPTokenizer, key, base, subfolder="tokenizer")
        self.noise_scheduler = load_component(DDPMScheduler, key, base, subfolder="scheduler")
        unet = load_component(UNet2DConditionModel, key, base, subfolder="unet")
        check_fits_base(self.config, unet, self.vae_scale_factor)
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
