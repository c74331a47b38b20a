"""Command line: `harivo generate "prompt" -o out.mp4`."""

import argparse
import sys
import time

import torch

from .errors import HarivoLoadError, IncompatibleAdapterError
from .schedulers import SCHEDULERS

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harivo", description="HARIVO text-to-video on a frozen SD-1.5-class model.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="Generate a video from a text prompt.")
    gen.add_argument("prompt", help="What the video shows.")
    gen.add_argument("-o", "--output", default="out.mp4", help="Output file, .mp4 or .gif (default: out.mp4).")
    gen.add_argument("--base-model", help="Base text-to-image model: a diffusers folder or a hub id.")
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
    return parser


def generate(args: argparse.Namespace) -> None:
    from .pipelines import HarivoPipeline
    from .schedulers import make_scheduler
    from .video_io import save_video

    if not args.base_model or not args.adapter:
        raise SystemExit(
            "error: no default model is bundled yet; pass --base-model (a Stable Diffusion 1.5-class diffusers folder"
            " or hub id) and --adapter (a HARIVO adapter folder)."
        )
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
    except (HarivoLoadError, IncompatibleAdapterError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
