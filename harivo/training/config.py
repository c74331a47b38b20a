"""One typed configuration per training run: a YAML file plus `section.key=value` overrides.

A run of any stage is a `TrainConfig`; the stage-specific section (`vae`, `t2i`, `harivo`, `controlnet`, `dreambooth` or
`distill` or `motion_lora`) holds the model
and loss settings of that stage, the others are ignored. `harivo train --dry-run` prints the resolved config,
and every run writes it into its folder as `config.yaml`.
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGES = ("vae", "t2i", "harivo", "controlnet", "dreambooth", "distill", "motion_lora")
# Accelerate's trackers and the package each needs
TRACKERS = {
    "tensorboard": "tensorboard", "wandb": "wandb", "comet_ml": "comet_ml", "aim": "aim", "mlflow": "mlflow",
    "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio",
}  # fmt: skip


def check_tracker(name: str) -> None:
    """Raise a one-line `ValueError` unless `name` is an Accelerate tracker ("all": every installed one) whose
    package is installed."""
    import importlib.util

    if name == "all":
        return
    if name not in TRACKERS:
        raise ValueError(f"report_to must be one of all, {', '.join(TRACKERS)}, not {name!r}.")
    if importlib.util.find_spec(TRACKERS[name]) is None:
        raise ValueError(f"report_to is {name!r} but {TRACKERS[name]} is not installed: pip install {TRACKERS[name]}.")


POOLINGS = ("attention", "last_token")
# Far past any useful value, and far enough below float32's 3.4e38 that Adam's arithmetic (the rate over its bias
# correction, the weights times 1 - rate x decay) cannot overflow into a RuntimeError instead of a divergence report
MAX_OPTIM_VALUE = 1e30
# Allowed range of every numeric field: (low, high, low_open); None is unbounded. Checked when a config is loaded.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "seed": (0, 2**32 - 1, False),
    "max_steps": (1, None, False),
    "batch_size": (1, None, False),
    "gradient_accumulation_steps": (1, None, False),
    "checkpoint_every": (1, None, False),
    "checkpoints_total_limit": (1, None, False),
    "validate_every": (0, None, False),
    "num_validation_samples": (0, None, False),
    "log_every": (1, None, False),
    "data.seed": (0, 2**32 - 1, False),
    "data.length": (1, None, False),
    "data.resolution": (8, None, False),
    "data.num_frames": (1, None, False),
    "data.frame_stride": (1, None, False),
    "data.num_workers": (0, None, False),
    "data.shuffle_buffer": (1, None, False),
    "data.shard_retries": (1, None, False),
    "optim.learning_rate": (0, MAX_OPTIM_VALUE, True),
    "optim.weight_decay": (0, MAX_OPTIM_VALUE, False),
    "optim.adam_beta1": (0, 1, False),
    "optim.adam_beta2": (0, 1, False),
    "optim.lr_warmup_steps": (0, None, False),
    "optim.max_grad_norm": (0, None, True),
    "vae.layers_per_block": (1, None, False),
    "vae.latent_channels": (1, None, False),
    "vae.norm_num_groups": (1, None, False),
    "vae.kl_weight": (0, None, False),
    "vae.l1_weight": (0, None, False),
    "vae.saturated_weight": (0, None, False),
    "t2i.layers_per_block": (1, None, False),
    "t2i.attention_head_dim": (1, None, False),
    "t2i.norm_num_groups": (1, None, False),
    "t2i.text_hidden_size": (1, None, False),
    "t2i.text_layers": (1, None, False),
    "t2i.text_heads": (1, None, False),
    "t2i.tokenizer_max_length": (3, None, False),
    "t2i.caption_dropout": (0, 1, False),
    "t2i.motion_phrase_probability": (0, 1, False),
    "t2i.caption_content_weight": (0, None, False),
    "harivo.num_frame_tokens": (0, None, False),
    "harivo.max_frames": (1, None, False),
    "harivo.motion_num_attention_heads": (1, None, False),
    "harivo.mapping_hidden_channels": (1, None, False),
    "harivo.mapping_num_layers": (2, None, False),
    "harivo.noise_frame_correlation": (0, 0.999, False),
    "harivo.motion_conditioning_dim": (1, None, False),
    "harivo.weight_path": (0, None, False),
    "harivo.path_token_substitution": (0, 1, False),
    "harivo.path_caption_copies": (1, None, False),
    "harivo.noise_warp_correlation": (0, 1, False),
    "harivo.noise_warp_upscale": (1, None, False),
    "harivo.projection_dim": (1, None, False),
    "harivo.weight_diffusion": (0, None, False),
    "harivo.weight_reg": (0, None, False),
    "harivo.weight_trsa": (0, None, False),
    "harivo.weight_dc": (0, None, False),
    "harivo.dc_temperature": (0, None, True),
    "harivo.dc_queue_size": (1, None, False),
    "harivo.timestep_bias": (0, None, False),
    "harivo.reg_frames": (0, None, False),
    "harivo.caption_dropout": (0, 1, False),
    "harivo.validation_num_frames": (1, None, False),
    "harivo.validation_steps": (1, None, False),
    "harivo.validation_guidance_scale": (0, None, False),
    "controlnet.conditioning_scale": (0, None, False),
    "controlnet.caption_dropout": (0, 1, False),
    "controlnet.motion_phrase_probability": (0, 1, False),
    "controlnet.validation_steps": (1, None, False),
    "controlnet.validation_guidance_scale": (0, None, False),
    "distill.num_inference_steps": (1, None, False),
    "distill.teacher_steps": (1, None, False),
    "distill.teacher_guidance_scale": (0, None, False),
    "distill.num_trajectories": (1, None, False),
    "distill.trajectory_batch": (1, None, False),
    "distill.num_frames": (1, None, False),
    "distill.lora_rank": (1, None, False),
    "motion_lora.num_frames": (2, None, False),
    "motion_lora.lora_rank": (1, None, False),
    "motion_lora.spatial_lora_rank": (0, None, False),
    "motion_lora.spatial_loss_weight": (0, None, False),
    "motion_lora.validation_steps": (1, None, False),
    "motion_lora.validation_guidance_scale": (0, None, False),
}


@dataclass
class BucketConfig:
    """One bucket of `data.buckets`: clips of this size and length, batched `batch_size` at a time."""

    height: int = 64
    width: int = 64
    num_frames: int = 16
    batch_size: int = 1


@dataclass
class DataConfig:
    """Where the training samples come from."""

    # "shapes" (procedural Shapes world), "webvid" (a CSV of videos), "webdataset" (shards), "latents" (precomputed)
    kind: str = "shapes"
    seed: int = 0  # Shapes world: the set's seed
    length: int = 200_000  # Shapes world: samples per epoch
    resolution: int = 64
    num_frames: int = 16  # video stages
    csv: str | None = None  # webvid: the CSV
    root: str | None = None  # webvid: folder the CSV's paths are relative to (default: the CSV's folder)
    frame_stride: int = 4  # webvid, webdataset: take every n-th frame
    num_workers: int = 0
    # webdataset: tar shards as video2dataset writes them: paths, brace patterns (shards/{00000..00099}.tar), URLs
    shards: str | tuple[str, ...] | None = None
    shuffle_buffer: int = 100  # webdataset: samples the shuffle buffer holds
    shard_retries: int = 3  # webdataset: tries to open a shard before the run stops
    latents: str | None = None  # latents: the folder `harivo precompute` wrote
    # webdataset: buckets of size x frames, each with its own batch size (`batch_size` is then unused); each clip goes
    # to the nearest (docs/training.md, "Buckets")
    buckets: tuple[BucketConfig, ...] = ()


@dataclass
class OptimConfig:
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    lr_scheduler: str = "constant_with_warmup"  # any of diffusers.optimization.get_scheduler's names
    lr_warmup_steps: int = 100
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = False  # bitsandbytes' AdamW8bit (GPU only)


@dataclass
class VAEStageConfig:
    """Stage 1 of the Shapes world: an `AutoencoderKL` trained from scratch on images."""

    block_out_channels: tuple[int, ...] = (16, 32, 32)  # one down-sampling per level after the first
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    kl_weight: float = 1e-6
    l1_weight: float = 1.0
    saturated_weight: float = 0.0  # extra weight of saturated (object) pixels in the reconstruction loss


@dataclass
class T2IStageConfig:
    """Stage 2 of the Shapes world: a text-to-image latent diffusion model trained from scratch on images."""

    vae: str = "outputs/shapes/vae/final"  # the trained autoencoder (frozen here)
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    tokenizer_max_length: int = 16
    caption_dropout: float = 0.1  # share of empty captions, for classifier-free guidance
    # Share of image captions given a random "moving <direction>" phrase: the text encoder learns the words of the
    # video captions (as a real CLIP knows them) and that a still image does not depend on them.
    motion_phrase_probability: float = 0.0
    # Weight of the caption-content loss: linear heads must read every caption attribute (motion included) from the
    # text encoder's pooled output, as they could from a pretrained CLIP's; 0 switches it off.
    caption_content_weight: float = 0.0
    # The noise schedule (SD-1.5's betas, optionally rescaled) and what the U-Net predicts. `zero_terminal_snr`
    # (Lin et al. 2024) makes the last training step pure noise, as sampling starts from; it needs
    # `prediction_type: v_prediction` (an epsilon target carries no information at zero SNR).
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False
    validation_prompts: tuple[str, ...] = (
        "a large red circle on a plain black background",
        "a small blue triangle on a striped white background",
        "a large yellow star on a checkered grey background",
        "a small cyan square on a plain white background",
    )


@dataclass
class HarivoStageConfig:
    """HARIVO on a frozen text-to-image model: only the adapter trains."""

    base_model: str = "outputs/shapes/t2i/final"  # a Stable Diffusion-class diffusers folder or hub id
    # start the temporal layers from an AnimateDiff MotionAdapter folder (or hub id), or one motion-module file
    motion_adapter: str | None = None
    # Start from a saved HarivoAdapter (folder or hub id) instead of a fresh one; its parts and their sizes replace
    # the architecture settings below (frame tokens, mapping network, motion conditioner, path predictor).
    adapter: str | None = None
    # Only these adapter components train, e.g. [path_predictor] to refit the motion paths of a trained adapter
    # (HarivoAdapter's component names); default: every one (the mapping network as train_mapping_network says).
    trained_components: tuple[str, ...] | None = None
    num_frame_tokens: int = 4
    max_frames: int = 32
    motion_num_attention_heads: int = 8
    mapping_hidden_channels: int = 64
    mapping_num_layers: int = 3
    train_mapping_network: bool = True  # false keeps it at its initial map
    noise_frame_correlation: float = 0.0  # the mapping network's fixed frame mixing: correlation of frames' noise
    motion_conditioning: bool = False  # give the temporal layers the prompt (MotionConditioner) [ours]
    motion_conditioning_dim: int = 128
    motion_conditioning_pooling: str = "attention"  # or "last_token": the causal text encoder's summary token
    # Learn the prompt's motion path (MotionPathPredictor, L_path on each clip's measured path); sampling moves the
    # content along it (HarivoPipeline motion_path_projection) [ours].
    motion_path: bool = False
    weight_path: float = (
        0.01  # L_path, in squared latent pixels: small, so gradient-norm clipping does not starve L_diff
    )
    # L_path reads `path_caption_copies` copies of each caption with every word replaced, with this probability, by a
    # random vocabulary token (substitute_tokens), so that the predictor reads the motion words whatever surrounds
    # them, also the words the video data never shows [ours]. Only the predictor sees them.
    path_token_substitution: float = 0.0
    path_caption_copies: int = 1
    # Also warp each clip's initial noise along its path (measured in training, predicted when sampling) [ours].
    # Implies motion_path; needs noise_frame_correlation: 0.
    noise_warping: bool = False
    noise_warp_correlation: float = 0.9  # share of each frame's noise that follows the path
    noise_warp_upscale: int = 4  # the path moves in steps of 1/upscale latent pixels
    projection_dim: int = 128
    weight_diffusion: float = 1.0
    weight_reg: float = 0.1
    weight_trsa: float = 0.1
    weight_dc: float = 0.01
    trsa_layers: tuple[str, ...] | None = None  # default: the lowest-resolution decoder block's self-attention
    dc_temperature: float = 0.1
    dc_queue_size: int = 4096
    timestep_bias: float = 0.0  # training-timestep density ∝ (t/T)^bias: 0 uniform, > 0 more high-noise steps
    reg_frames: int = (
        0  # L_reg on this many random frames per clip (0: all): its extra forward costs that share [ours]
    )
    caption_dropout: float = 0.1
    # Recommended sampling with this adapter, saved in it (HarivoAdapter.sampling_defaults): the fraction of the
    # schedule in which the temporal layers run (None: all of it) [ours].
    sampling_temporal_window: tuple[float, float] | None = None
    sampling_motion_path_window: tuple[float, float] | None = None  # the steps with the motion-path projection
    sampling_motion_path_core_window: tuple[float, float] | None = None  # the steps its moving layer keeps to the core
    validation_prompts: tuple[str, ...] = (
        "a small red circle moving left on a plain black background",
        "a large green square moving up on a plain white background",
        "a large yellow star moving right on a striped black background",
    )
    validation_num_frames: int = 16
    validation_steps: int = 25
    validation_guidance_scale: float = 7.5


@dataclass
class ControlNetStageConfig:
    """A ControlNet (diffusers' `ControlNetModel`) on a frozen text-to-image model: in the Shapes world, one whose
    condition is the object's silhouette (white on black, no colour, no background)."""

    base_model: str = "outputs/shapes/t2i/final"  # the frozen text-to-image model (diffusers folder or hub id)
    condition: str = "silhouette"  # what the Shapes world renders as the condition image
    # Channels of the small convolutional encoder of the condition image; it halves the size len - 1 times, which
    # must match the VAE's factor (3 entries for the Shapes VAE's 4, 4 entries for SD's 8).
    conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 64)
    conditioning_scale: float = 1.0  # the residuals' scale in training and validation
    caption_dropout: float = 0.3  # empty captions: the net learns to place the object from the condition alone
    motion_phrase_probability: float = 0.5  # as the text-to-image stage: captions may say where the object moves
    validation_prompts: tuple[str, ...] = (
        "a large red circle on a plain black background",
        "a small blue triangle on a striped white background",
        "a large yellow star on a checkered grey background",
    )
    validation_steps: int = 25
    validation_guidance_scale: float = 7.5


@dataclass
class DreamBoothStageConfig:
    """DreamBooth (Ruiz et al. 2023): the text-to-image model fine-tuned on a few images of one concept, bound to an
    identifier, with prior preservation. Its output is a new base model (or a LoRA) that the HARIVO adapter trained
    on the original base drives unchanged."""

    base_model: str = "outputs/shapes/t2i/final"  # the model to personalise (diffusers folder or hub id)
    instance_data: str = ""  # folder of the concept's images; `<image>.txt` beside one is its caption
    instance_prompt: str = ""  # the caption of images without a `.txt`, e.g. "a photo of sks dog"
    identifier: str = ""  # the word that names the concept (checked to be in every caption; warned if split)
    min_instance_images: int = 3
    # Prior preservation: the base model's own images of these prompts (generated once into `class_data`, default
    # `<output_dir>/class_images`) are trained on alongside, so the rest of its vocabulary stays as it was.
    class_prompts: tuple[str, ...] = ()
    class_data: str | None = None
    num_class_images: int = 100
    prior_loss_weight: float = 1.0
    class_generation_steps: int = 25
    class_guidance_scale: float = 7.5
    train_text_encoder: bool = False  # full fine-tuning only
    lora_rank: int = 0  # > 0: train a LoRA of this rank on the U-Net's attention instead of every weight
    single_file: bool = True  # full fine-tuning: also write `<output_dir>/final.safetensors` (A1111 / ComfyUI layout)
    validation_prompts: tuple[str, ...] = ()  # default: the instance prompt
    validation_steps: int = 25
    validation_guidance_scale: float = 7.5


@dataclass
class DistillStageConfig:
    """Few-step distillation of a whole HARIVO video model [ours]: a LoRA on the video U-Net (its spatial and temporal
    layers) that takes, in each of `num_inference_steps` deterministic DDIM steps ("trailing" timesteps, no
    classifier-free guidance), the teacher's path through `teacher_steps` of its own sampling: its sampler, its
    guidance, its temporal and motion-path windows, its mapping network's noise. The teacher's paths are computed once
    before training, into `<output_dir>/trajectories` (resumable). The result loads with `--fast` / `--lora`."""

    base_model: str = "outputs/shapes/t2i/final"  # the teacher's text-to-image model (diffusers folder or hub id)
    adapter: str = "outputs/shapes/path_predictor/final"  # the teacher's HARIVO adapter (the Shapes recipe's last)
    num_inference_steps: int = 4  # the student's steps; the teacher's must be a multiple of them
    teacher_steps: int = 16
    teacher_scheduler: str = "dpm-solver++"  # `harivo generate --scheduler` names
    teacher_guidance_scale: float = 7.5
    teacher_guidance_rescale: float | None = None  # default: what the base model's noise schedule wants
    # What the teacher samples: these prompts, or one per line of `prompts_file`; neither: random Shapes-world
    # captions (every shape, colour, background and direction, so textures and motion both)
    prompts: tuple[str, ...] = ()
    prompts_file: str | None = None
    num_trajectories: int = 256
    trajectory_batch: int = 8  # clips the teacher samples at once
    num_frames: int = 16
    lora_rank: int = 16
    # every attention projection and feed-forward layer, spatial and temporal
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
    validation_prompts: tuple[str, ...] = (
        "a small red circle moving left on a plain black background",
        "a large yellow star moving right on a striped black background",
        "a large magenta triangle moving down on a checkered white background",
    )


@dataclass
class MotionLoraStageConfig:
    """A motion LoRA from a few reference clips (MotionDirector, Zhao et al. 2024, on HARIVO): a LoRA on the adapter's
    temporal attention learns the clips' motion; a spatial LoRA on the frozen image model's attention, trained on
    single frames, absorbs their appearance and is dropped at export, so the motion moves to other subjects. The
    export (`pytorch_lora_weights.safetensors`, loaded with `--lora`) carries the clips' mean motion path
    (`harivo_motion.json`), which `generate` follows unless given another."""

    base_model: str = ""  # default: the embedded Shapes base model
    adapter: str = ""  # default: the embedded adapter
    videos: str = ""  # folder of 1-5 reference clips (video files or GIFs); `<clip>.txt` beside one is its caption
    prompt: str = ""  # the caption of clips without a `.txt`
    max_videos: int = 5
    num_frames: int = 16  # frames per training window (a clip must have at least this many)
    lora_rank: int = 8  # the motion LoRA: temporal attention
    spatial_lora_rank: int = 8  # the appearance LoRA: spatial attention, trained on single frames; 0: none
    spatial_loss_weight: float = 1.0
    validation_prompts: tuple[str, ...] = ()  # default: the clips' captions
    validation_steps: int = 15
    validation_guidance_scale: float = 7.5


@dataclass
class TrainConfig:
    stage: str = "harivo"  # "vae", "t2i", "harivo", "controlnet", "dreambooth", "distill" or "motion_lora"
    output_dir: str = "outputs/run"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 8  # per device
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no", "fp16" or "bf16"
    gradient_checkpointing: bool = False
    allow_tf32: bool = True
    checkpoint_every: int = 200
    checkpoints_total_limit: int = 2
    validate_every: int = 0  # 0: only at the end
    num_validation_samples: int = 1  # seeds per validation prompt; 0: no validation samples at all
    log_every: int = 10
    report_to: str | None = None  # an Accelerate tracker: "tensorboard", "wandb", ...
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    vae: VAEStageConfig = field(default_factory=VAEStageConfig)
    t2i: T2IStageConfig = field(default_factory=T2IStageConfig)
    harivo: HarivoStageConfig = field(default_factory=HarivoStageConfig)
    controlnet: ControlNetStageConfig = field(default_factory=ControlNetStageConfig)
    dreambooth: DreamBoothStageConfig = field(default_factory=DreamBoothStageConfig)
    distill: DistillStageConfig = field(default_factory=DistillStageConfig)
    motion_lora: MotionLoraStageConfig = field(default_factory=MotionLoraStageConfig)

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {self.stage!r}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', not {self.mixed_precision!r}.")
        if self.data.kind not in ("shapes", "webvid", "webdataset", "latents"):
            raise ValueError(
                f"data.kind must be 'shapes', 'webvid', 'webdataset' or 'latents', not {self.data.kind!r}."
            )
        if self.data.buckets and self.data.kind != "webdataset":
            raise ValueError(
                "data.buckets batch a stream of shards: set data.kind to webdataset (or drop the buckets)."
            )
        for number, bucket in enumerate(self.data.buckets):
            for key in ("height", "width", "num_frames", "batch_size"):
                if getattr(bucket, key) < 1:
                    raise ValueError(f"data.buckets[{number}].{key} must be at least 1, not {getattr(bucket, key)}.")
        if self.data.kind == "latents" and not self.data.latents:
            raise ValueError(
                "data.kind is 'latents' but data.latents is not set; give the folder harivo precompute wrote."
            )
        if self.data.kind == "webvid" and not self.data.csv:
            raise ValueError("data.kind is 'webvid' but data.csv is not set; give the WebVid-layout CSV.")
        if self.data.kind == "webdataset" and not self.data.shards:
            raise ValueError(
                "data.kind is 'webdataset' but data.shards is not set; give the shards (shards/{00000..00099}.tar)."
            )
        for key, (low, high, low_open) in RANGES.items():
            value = self._get(key)
            if (
                not math.isfinite(value)
                or (low is not None and (value <= low if low_open else value < low))
                or (high is not None and value > high)
            ):
                if low is not None and high is not None:
                    allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
                elif low_open:
                    allowed = f"greater than {low:g}"
                else:
                    allowed = f"at least {low:g}"
                raise ValueError(f"{key} must be {allowed}, not {value}.")
        if self.controlnet.condition != "silhouette":
            raise ValueError(f"controlnet.condition must be 'silhouette', not {self.controlnet.condition!r}.")
        for key in (
            "vae.block_out_channels",
            "t2i.block_out_channels",
            "controlnet.conditioning_embedding_out_channels",
        ):
            if not self._get(key) or min(self._get(key)) < 1:
                raise ValueError(f"{key} must list positive channel counts, not {list(self._get(key))}.")
        if self.harivo.motion_conditioning_pooling not in POOLINGS:
            raise ValueError(
                f"harivo.motion_conditioning_pooling must be one of {', '.join(POOLINGS)}, not"
                f" {self.harivo.motion_conditioning_pooling!r}."
            )
        if self.optim.learning_rate * self.optim.weight_decay > MAX_OPTIM_VALUE:
            raise ValueError(
                f"optim.learning_rate times optim.weight_decay must be at most {MAX_OPTIM_VALUE:g} (AdamW scales the"
                f" weights by 1 - their product), not {self.optim.learning_rate * self.optim.weight_decay:g}."
            )
        if self.report_to is not None:
            check_tracker(self.report_to)
        from diffusers.optimization import SchedulerType

        names = [kind.value for kind in SchedulerType]
        if self.optim.lr_scheduler not in names:
            raise ValueError(f"optim.lr_scheduler must be one of {', '.join(names)}, not {self.optim.lr_scheduler!r}.")
        if self.stage == "harivo":
            for key in ("data.num_frames", "harivo.validation_num_frames"):
                if self._get(key) > self.harivo.max_frames:
                    raise ValueError(
                        f"{key} ({self._get(key)}) must be at most harivo.max_frames ({self.harivo.max_frames})."
                    )
            for number, bucket in enumerate(self.data.buckets):
                if bucket.num_frames > self.harivo.max_frames:
                    raise ValueError(
                        f"data.buckets[{number}].num_frames ({bucket.num_frames}) must be at most harivo.max_frames"
                        f" ({self.harivo.max_frames})."
                    )
        if self.stage == "dreambooth":
            self._validate_dreambooth()
        if self.stage == "distill":
            self._validate_distill()
        if self.stage == "motion_lora":
            self._validate_motion_lora()
        if self.t2i.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"t2i.prediction_type must be 'epsilon' or 'v_prediction', not {self.t2i.prediction_type!r}."
            )
        if self.t2i.zero_terminal_snr and self.t2i.prediction_type != "v_prediction":
            raise ValueError(
                "t2i.zero_terminal_snr needs t2i.prediction_type: v_prediction (at zero SNR the noise target equals"
                " the input, so an epsilon model learns nothing there)."
            )
        if self.harivo.noise_warping and self.harivo.noise_frame_correlation:
            raise ValueError(
                "harivo.noise_warping correlates the frames' noise itself: set harivo.noise_frame_correlation to 0"
                " and choose harivo.noise_warp_correlation instead."
            )

    def _validate_dreambooth(self) -> None:
        settings = self.dreambooth
        if not settings.instance_data:
            raise ValueError("dreambooth.instance_data is not set: give the folder of the concept's images.")
        if settings.lora_rank < 0 or settings.min_instance_images < 1 or settings.num_class_images < 0:
            raise ValueError(
                "dreambooth.lora_rank and dreambooth.num_class_images must be at least 0, dreambooth.min_instance_images"
                " at least 1."
            )
        if settings.lora_rank and settings.train_text_encoder:
            raise ValueError(
                "dreambooth.train_text_encoder works with full fine-tuning only: set dreambooth.lora_rank to 0, or"
                " train_text_encoder to false."
            )
        if settings.prior_loss_weight < 0 or not math.isfinite(settings.prior_loss_weight):
            raise ValueError(f"dreambooth.prior_loss_weight must be at least 0, not {settings.prior_loss_weight}.")
        if settings.prior_loss_weight and settings.class_prompts and not settings.num_class_images:
            raise ValueError("dreambooth.num_class_images is 0 but class_prompts are set: give a number of images.")

    def _validate_distill(self) -> None:
        from ..schedulers import SCHEDULERS

        settings = self.distill
        if settings.teacher_steps % settings.num_inference_steps:
            raise ValueError(
                f"distill.teacher_steps ({settings.teacher_steps}) must be a multiple of distill.num_inference_steps"
                f" ({settings.num_inference_steps}), so that every student step spans whole teacher steps."
            )
        if settings.teacher_scheduler not in SCHEDULERS:
            raise ValueError(
                f"distill.teacher_scheduler must be one of {', '.join(SCHEDULERS)}, not"
                f" {settings.teacher_scheduler!r}."
            )
        if settings.prompts and settings.prompts_file:
            raise ValueError("Set distill.prompts or distill.prompts_file, not both.")
        if settings.prompts_file and not Path(settings.prompts_file).is_file():
            raise ValueError(f"distill.prompts_file {settings.prompts_file!r} does not exist (one prompt per line).")
        if not settings.lora_targets:
            raise ValueError("distill.lora_targets is empty: name the layers the LoRA trains (e.g. to_q, to_k).")

    def _validate_motion_lora(self) -> None:
        settings = self.motion_lora
        if not settings.videos:
            raise ValueError("motion_lora.videos is not set: give the folder of the reference clips (1 to 5).")
        if not Path(settings.videos).is_dir():
            raise ValueError(f"motion_lora.videos {settings.videos!r} is not a folder (of 1 to 5 reference clips).")
        if settings.max_videos < 1:
            raise ValueError(f"motion_lora.max_videos must be at least 1, not {settings.max_videos}.")

    def _get(self, key: str) -> Any:
        value = self
        for part in key.split("."):
            value = getattr(value, part)
        return value

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(dataclasses.asdict(self)), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check and convert a YAML value to a field's annotated type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0])
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where} must be a list, not {value!r}.")
        (item_type, *_) = typing.get_args(annotation)
        return tuple(_coerce(item, item_type, where) for item in value)
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation in (int, float, str, bool) and not (
        isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))
    ):
        raise ValueError(f"{where} must be {annotation.__name__}, not {value!r}.")
    return value


def _build(cls: type, values: dict, where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'the config'} must be a mapping, not {values!r}.")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(
            f"Unknown key {', '.join(sorted(unknown))} in {where or 'the config'}; known keys: {', '.join(sorted(known))}."
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        path = f"{where}.{name}" if where else name
        kwargs[name] = _build(hint, value, path) if dataclasses.is_dataclass(hint) else _coerce(value, hint, path)
    return cls(**kwargs)


def _read_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load` whose errors are one line naming `where` and the line (no Python tags are ever built)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        if "python/" in str(error):
            problem = "Python tags (!!python/...) are not allowed in configs"
        raise ValueError(f"{where}{line}: {problem}.") from None


def apply_override(values: dict, override: str) -> None:
    """Apply one `section.key=value` override (the value is read as YAML) to a raw config dict."""
    if "=" not in override:
        raise ValueError(f"Override {override!r} is not of the form key=value (e.g. optim.learning_rate=1e-4).")
    key, raw = override.split("=", 1)
    *sections, name = key.strip().split(".")
    target = values
    for index, section in enumerate(sections):
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            where = ".".join(sections[: index + 1])
            raise ValueError(f"Override {override!r}: {where} is a value, not a section with keys.")
    target[name] = _read_yaml(raw, f"override {override!r}")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """
    Read a training config.

    Args:
        path (`str` or `Path`, *optional*): A YAML file; without one, every field keeps its default.
        overrides (`list[str]`): `section.key=value` strings applied on top, e.g. `max_steps=10`.

    Returns:
        [`TrainConfig`]: The checked config.
    """
    values = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(
                f"Config file {path} is a folder: give a YAML file (e.g. configs/shapes/harivo.yaml)."
            )
        if not path.is_file():
            raise FileNotFoundError(f"Config file {path} does not exist.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"Config file {path} is not UTF-8 text ({error.reason} at byte {error.start}).") from None
        values = _read_yaml(text, str(path)) or {}
        if isinstance(values, dict) and {"distributed_type", "compute_environment"} <= set(values):
            raise ValueError(
                f"{path} is an Accelerate launch config: pass it as accelerate launch --config_file {path} -m harivo.cli"
                " train --config YOUR_RUN.yaml."
            )
    for override in overrides:
        apply_override(values, override)
    config = _build(TrainConfig, values, "")
    config.validate()
    return config
