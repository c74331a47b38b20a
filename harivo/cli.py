"""Command line: `harivo generate "prompt" -o out.mp4`."""

import argparse
import sys
import time

import torch

from .errors import HarivoLoadError, IncompatibleAdapterError, TrainingDivergedError
from .schedulers import SCHEDULERS

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harivo", description="HARIVO text-to-video on a frozen SD-1.5-class model.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="Generate a video from a text prompt.")
    gen.add_argument("prompt", help="What the video shows.")
    gen.add_argument("-o", "--output", default="out.mp4", help="Output file, .mp4 or .gif (default: out.mp4).")
    gen.add_argument(
        "--base-model",
        help="Base text-to-image model: a diffusers folder or a hub id (default: the embedded Shapes-world model).",
    )
    gen.add_argument("--adapter", help="HARIVO adapter: a folder or a hub id.")
    gen.add_argument("--negative-prompt", default=None, help="What the video should not show.")
    gen.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    gen.add_argument("--num-frames", type=int, default=16, help="Frames (default: 16).")
    gen.add_argument("--height", type=int, default=None, help="Height in pixels (default: the model's).")
    gen.add_argument("--width", type=int, default=None, help="Width in pixels (default: the model's).")
    gen.add_argument("--steps", type=int, default=25, help="Denoising steps (default: 25).")
    gen.add_argument("--guidance-scale", type=float, default=7.5, help="Classifier-free guidance (default: 7.5).")
    gen.add_argument("--mg-scale", "--alpha", type=float, default=0.0, help="MG guidance alpha; 0 is off (paper: 40).")
    gen.add_argument("--mg-window", type=float, nargs=2, default=(0.0, 0.5), metavar=("START", "END"),
                     help="Fraction of the schedule with MG guidance (default: 0 0.5).")  # fmt: skip
    gen.add_argument("--mg-energy", choices=("frame_difference", "attention"), default="frame_difference")
    gen.add_argument("--scheduler", default=None, help=f"Sampler: {', '.join(SCHEDULERS)} (default: the model's).")
    gen.add_argument("--fps", type=int, default=8, help="Frames per second of the file (default: 8).")
    gen.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available).")
    gen.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="Default: float16 on GPU, float32 on CPU.")
    gen.add_argument(
        "--allow-pickle", action="store_true", help="Accept pickle weights (.bin/.ckpt); they can run code."
    )
    train = commands.add_parser("train", help="Train a stage (vae, t2i, harivo) from a YAML config.")
    train.add_argument("--config", help="YAML training config (see configs/).")
    train.add_argument(
        "overrides", nargs="*", help="section.key=value overrides, e.g. max_steps=100 optim.learning_rate=1e-4"
    )
    train.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint of output_dir.")
    train.add_argument("--dry-run", action="store_true", help="Print the resolved config and exit.")
    return parser


def train(args: argparse.Namespace) -> None:
    from .training import Trainer, load_config

    config = load_config(args.config, args.overrides)
    if args.dry_run:
        print(config.to_yaml(), end="")
        return
    final = Trainer(config, resume=args.resume).train()
    print(f"Done: {final}")


def generate(args: argparse.Namespace) -> None:
    from .pipelines import HarivoPipeline
    from .schedulers import make_scheduler
    from .video_io import save_video

    if args.adapter and not args.base_model:
        raise ValueError("--adapter needs --base-model (the text-to-image model it was trained on).")
    if not args.base_model:  # the embedded Shapes-world model
        from .defaults import default_model_paths

        args.base_model, args.adapter = default_model_paths()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    pipe = HarivoPipeline.from_pretrained(
        args.base_model, adapter=args.adapter, allow_pickle=args.allow_pickle, torch_dtype=dtype
    )
    if args.scheduler:
        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    pipe.to(device)
    start = time.perf_counter()
    frames = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        num_frames=args.num_frames,
        height=args.height,
        width=args.width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        mg_scale=args.mg_scale,
        mg_window=tuple(args.mg_window),
        mg_energy=args.mg_energy,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
    ).frames[0]
    path = save_video(frames, args.output, fps=args.fps)
    print(f"Wrote {path} ({len(frames)} frames, {time.perf_counter() - start:.1f} s on {device}).")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # The CLI shows its own progress bar and errors; library warnings about optional backends are noise here.
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        if args.command == "generate":
            generate(args)
        elif args.command == "train":
            train(args)
    except (
        HarivoLoadError,
        IncompatibleAdapterError,
        ValueError,
        FileNotFoundError,
        FileExistsError,
        TrainingDivergedError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
