"""`harivo train`, `harivo precompute`, `harivo dreambooth` and `harivo motion-lora`: training from a YAML config or
from flags."""

import argparse
import json
from pathlib import Path

from ..loading import WEIGHT_SUFFIXES
from .common import check_output_folder


def add_commands(commands) -> None:
    booth = commands.add_parser(
        "dreambooth",
        help="Personalise a text-to-image model on a few images of a concept (DreamBooth); the result drives the"
        " unchanged HARIVO adapter.",
    )
    booth.add_argument(
        "--instance-data", required=True, metavar="DIR",
        help="Folder of the concept's images (<image>.txt beside one is its caption).",
    )  # fmt: skip
    booth.add_argument("--instance-prompt", default="", help="Caption of the images without a .txt, e.g. 'a sks dog'.")
    booth.add_argument("--identifier", default="", help="The word that names the concept (checked in every caption).")
    booth.add_argument(
        "--base-model",
        help="The model to personalise: diffusers folder or hub id (default: the embedded Shapes base).",
    )
    booth.add_argument(
        "--class-prompt", action="append", default=None,
        help="Prior preservation: the base model's images of this prompt train alongside; repeat for several"
        " (default: none, no prior preservation).",
    )  # fmt: skip
    booth.add_argument("--num-class-images", type=int, default=100, help="Prior-preservation images (default: 100).")
    booth.add_argument(
        "--lora-rank", type=int, default=0, help="Train a LoRA of this rank instead of the whole U-Net."
    )
    booth.add_argument(
        "--train-text-encoder", action="store_true", help="Also fine-tune the text encoder (full only)."
    )
    booth.add_argument("--max-steps", type=int, default=400, help="Training steps (default: 400).")
    booth.add_argument("--learning-rate", type=float, default=None, help="Default: 1e-4, or 1e-3 for a LoRA.")
    booth.add_argument("--batch-size", type=int, default=4, help="Instance images per step (default: 4).")
    booth.add_argument(
        "--resolution", type=int, default=None, help="Image side in pixels (default: the base model's)."
    )
    booth.add_argument("-o", "--output-dir", default="outputs/dreambooth", help="Default: outputs/dreambooth.")
    booth.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint of --output-dir.")
    booth.add_argument("overrides", nargs="*", help="More section.key=value settings (docs/training.md).")

    booth.set_defaults(run=dreambooth)

    motion = commands.add_parser(
        "motion-lora",
        help="Learn a motion from 1-5 reference clips as a LoRA on the temporal layers (MotionDirector); the result"
        " loads with --lora and moves other subjects that way.",
    )
    motion.add_argument(
        "--videos", required=True, metavar="DIR", help="Folder of 1-5 clips of the motion (<clip>.txt: its caption)."
    )
    motion.add_argument("--prompt", default="", help="Caption of the clips without a .txt, e.g. 'a red circle'.")
    motion.add_argument(
        "--base-model", help="The text-to-image model: diffusers folder or hub id (default: the embedded Shapes base)."
    )
    motion.add_argument("--adapter", help="The HARIVO adapter the LoRA is for (default: the embedded one).")
    motion.add_argument("--num-frames", type=int, default=16, help="Frames per training window (default: 16).")
    motion.add_argument("--lora-rank", type=int, default=8, help="Rank of the motion LoRA (default: 8).")
    motion.add_argument(
        "--spatial-lora-rank", type=int, default=8,
        help="Rank of the appearance LoRA trained beside it and dropped (default: 8; 0: none).",
    )  # fmt: skip
    motion.add_argument("--max-steps", type=int, default=300, help="Training steps (default: 300).")
    motion.add_argument("--learning-rate", type=float, default=5e-4, help="Default: 5e-4.")
    motion.add_argument("--batch-size", type=int, default=2, help="Clip windows per step (default: 2).")
    motion.add_argument("-o", "--output-dir", default="outputs/motion_lora", help="Default: outputs/motion_lora.")
    motion.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint of --output-dir.")
    motion.add_argument("overrides", nargs="*", help="More section.key=value settings (docs/training.md).")
    motion.set_defaults(run=motion_lora)

    pre = commands.add_parser(
        "precompute",
        help="Run the base model's VAE and text encoder over a harivo config's data once: data.kind latents then"
        " trains without them.",
    )
    pre.add_argument("--config", help="YAML training config of the harivo stage (its data and base model).")
    pre.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.length=10000")
    pre.add_argument("--out", required=True, help="Folder of the cache (resumable: a rerun continues it).")
    pre.add_argument("--clips-per-shard", type=int, default=256, help="Clips per safetensors shard (default: 256).")
    pre.set_defaults(run=precompute_latents)

    command = commands.add_parser(
        "train",
        help="Train a stage (vae, t2i, harivo, controlnet, dreambooth, distill, motion_lora) from a YAML config.",
    )
    command.add_argument("--config", help="YAML training config (see configs/).")
    command.add_argument(
        "overrides", nargs="*", help="section.key=value overrides, e.g. max_steps=100 optim.learning_rate=1e-4"
    )
    command.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint of output_dir.")
    command.add_argument("--dry-run", action="store_true", help="Print the resolved config and exit.")
    command.add_argument(
        "--estimate", action="store_true",
        help="Print parameters and memory per GPU of a harivo run (at 256²×16, 512²×16 and its own size) and exit.",
    )  # fmt: skip
    command.add_argument("--num-gpus", type=int, default=8, help="GPUs the estimate assumes (default: 8).")
    command.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Resume checkpoints with pickled training state (harivo < 0.1.1); unpickling can run code.",
    )
    command.set_defaults(run=train)


def train(args: argparse.Namespace) -> None:
    from ..training import Trainer, load_config

    config = load_config(args.config, args.overrides)
    if args.dry_run:
        print(config.to_yaml(), end="")
        return
    if args.estimate:
        from ..training.estimate import estimate, format_estimate

        if config.stage != "harivo":
            raise ValueError(f"--estimate is for the harivo stage, not stage {config.stage}.")
        if args.num_gpus < 1:
            raise ValueError(f"--num-gpus must be at least 1, got {args.num_gpus}.")
        print(format_estimate(config, args.num_gpus, *estimate(config, args.num_gpus)))
        return
    trainer = Trainer(config, resume=args.resume, allow_pickle=args.allow_pickle)
    final = trainer.train()
    trainer.accelerator.print(f"Done: {final}")  # once, from the main process


def precompute_latents(args: argparse.Namespace) -> None:
    """`harivo precompute`: the latent cache of a harivo config's data (`harivo.data.latents`)."""
    import torch
    from accelerate import Accelerator

    from ..data.latents import precompute, single_pass
    from ..training import load_config
    from ..training.stages import build_stage

    if args.clips_per_shard < 1:
        raise ValueError(f"--clips-per-shard must be at least 1, got {args.clips_per_shard}.")
    config = load_config(args.config, args.overrides)
    if config.stage != "harivo":
        raise ValueError(f"harivo precompute is for the harivo stage's data, not stage {config.stage}.")
    if config.data.kind == "latents":
        raise ValueError("data.kind is already latents: precompute from the data (shapes, webvid or webdataset).")
    check_output_folder(args.out)
    stage = build_stage(config, Accelerator(), torch.Generator().manual_seed(config.seed))
    dataset = stage.dataset()
    total = len(dataset) if hasattr(dataset, "__len__") else None
    extra = {"num_frames": config.data.num_frames, "resolution": config.data.resolution, "source": config.data.kind}
    count = precompute(
        stage.encode_for_cache, single_pass(dataset), args.out, stage.fingerprint(), total, args.clips_per_shard, extra
    )
    print(f"Wrote {count} clips to {args.out}; train on them with data.kind=latents data.latents={args.out}.")


def dreambooth(args: argparse.Namespace) -> None:
    """`harivo dreambooth`: the DreamBooth stage from flags (docs/personalisation.md)."""
    from ..defaults import default_model_paths

    base = args.base_model or str(default_model_paths()[0])
    if Path(base).suffix in WEIGHT_SUFFIXES:
        raise ValueError(
            f"--base-model {base} is a single file; DreamBooth trains a diffusers folder or hub id: convert it once"
            " with diffusers (StableDiffusionPipeline.from_single_file(FILE).save_pretrained(FOLDER))."
        )
    if args.resolution is not None and args.resolution < 8:
        raise ValueError(f"--resolution must be at least 8 pixels, got {args.resolution}.")
    if args.learning_rate is not None and not 0 < args.learning_rate <= 1:
        raise ValueError(f"--learning-rate must be in (0, 1], got {args.learning_rate}.")
    config, final = train_from_flags(args, "dreambooth", {
        "data.resolution": args.resolution if args.resolution is not None else base_resolution(base),
        "optim.learning_rate": args.learning_rate
        if args.learning_rate is not None
        else 1e-3
        if args.lora_rank
        else 1e-4,
        "dreambooth.base_model": base,
        "dreambooth.instance_data": args.instance_data,
        "dreambooth.instance_prompt": args.instance_prompt,
        "dreambooth.identifier": args.identifier,
        "dreambooth.class_prompts": args.class_prompt or [],
        "dreambooth.num_class_images": args.num_class_images,
        "dreambooth.lora_rank": args.lora_rank,
        "dreambooth.train_text_encoder": args.train_text_encoder,
    })  # fmt: skip
    use = f"--lora {final}" if config.dreambooth.lora_rank else f"--base-model {final}"
    print(
        f"Done: {final}. Generate with `harivo generate PROMPT {use}` (plus --adapter for a base other than the embedded one)."
    )


def motion_lora(args: argparse.Namespace) -> None:
    """`harivo motion-lora`: the motion_lora stage from flags (docs/personalisation.md)."""
    from ..defaults import default_model_paths

    base = args.base_model or str(default_model_paths()[0])
    if not 0 < args.learning_rate <= 1:
        raise ValueError(f"--learning-rate must be in (0, 1], got {args.learning_rate}.")
    _, final = train_from_flags(args, "motion_lora", {
        "data.resolution": base_resolution(base),
        "optim.learning_rate": args.learning_rate,
        "motion_lora.base_model": args.base_model or "",
        "motion_lora.adapter": args.adapter or "",
        "motion_lora.videos": args.videos,
        "motion_lora.prompt": args.prompt,
        "motion_lora.num_frames": args.num_frames,
        "motion_lora.lora_rank": args.lora_rank,
        "motion_lora.spatial_lora_rank": args.spatial_lora_rank,
    })  # fmt: skip
    adapter = f" --adapter {args.adapter}" if args.adapter else ""
    print(
        f"Done: {final}. Generate with `harivo generate PROMPT --lora {final}{adapter}` (it follows the clips' path)."
    )


def train_from_flags(args: argparse.Namespace, stage: str, settings: dict):
    """Train `stage` from a command's flags: what every such command shares (`--output-dir`, `--max-steps`,
    `--batch-size`, four checkpoints, validation at the end, a warm-up of a tenth of the steps up to 20), then
    `settings`, then the command's `section.key=value` overrides; `--resume` continues. Returns the config and the
    exported folder."""
    from ..training import Trainer, load_config

    shared = {
        "stage": stage, "output_dir": args.output_dir, "max_steps": args.max_steps, "batch_size": args.batch_size,
        "checkpoint_every": max(args.max_steps // 4, 1), "validate_every": 0,
        "optim.lr_warmup_steps": min(20, args.max_steps // 10),
    }  # fmt: skip
    overrides = [f"{key}={json.dumps(value)}" for key, value in {**shared, **settings}.items()]
    config = load_config(None, overrides + args.overrides)
    return config, Trainer(config, resume=args.resume).train()


def base_resolution(base: str) -> int:
    """The image size a base model was made for: its U-Net's latent size times the VAE's factor."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ..loading import describe_load_error

    try:
        unet = UNet2DConditionModel.load_config(base, subfolder="unet")
        vae = AutoencoderKL.load_config(base, subfolder="vae")
    except Exception as error:  # diffusers / the hub raise many types
        raise describe_load_error("base model", base, error) from error
    return unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
