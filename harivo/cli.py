"""Command line: `harivo generate`, `ui`, `train`, `precompute`, `dreambooth`, `eval` and `eval-videos`."""

import argparse
import errno
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import (
    CheckpointFileError,
    HarivoLoadError,
    IncompatibleAdapterError,
    SamplingDivergedError,
    ShardError,
    TrainingDivergedError,
)
from .loading import WEIGHT_SUFFIXES

if TYPE_CHECKING:
    import torch

# Only the standard library and harivo's light modules are imported here: `harivo --help` answers at once, and torch,
# diffusers and transformers load when a command needs them.
SCHEDULER_NAMES = (
    "ddim",
    "ddpm",
    "pndm",
    "euler",
    "euler-ancestral",
    "dpm-solver++",
    "unipc",
    "lcm",
    "tcd",
)  # schedulers.SCHEDULERS
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")  # schedulers.TIMESTEP_SPACINGS

# Library messages that are noise in a command-line run (they are about optional backends, not about the result)
NOISE = (
    "requires torchvision (not installed)",
    "should be kept in float32: []",
    "was truncated because CLIP can only handle",  # `warn_truncated` says these two, naming the words
    "Token indices sequence length is longer than",
    "LOAD REPORT",  # transformers lists a text encoder's other LoRAs as "missing" when it loads one more
    "Already found a `peft_config` attribute",  # peft, on a second LoRA: that is what --lora asks for
    "No LoRA keys associated to CLIPTextModel",  # a U-Net-only LoRA (e.g. harivo dreambooth --lora-rank)
    "__array__ implementation doesn't accept a copy keyword",  # numpy 2 on torch tensors inside diffusers' DPM-Solver
)

PROJECTION_HELP = (
    "Pull the early steps onto content that travels the motion path, 0 (off) to 1 (default with a path predictor)."
)
MASK_HELP = (
    "What the projection moves: the prompt's subject, the rest held still (default), or the whole frame (a pan)."
)
TEMPORAL_WINDOW_HELP = (
    "Fraction of the schedule in which the temporal layers run; outside it, the image model alone (default: the"
    " adapter's, else 0 1)."
)
PATH_WINDOW_HELP = "Fraction of the schedule with the motion-path projection (default: the adapter's, else 0 0.5)."
CORE_WINDOW_HELP = (
    "Fraction of the schedule in which the subject projection moves only what is near the subject's core, so that"
    " a texture the subject's mask also covers stands still (default: the adapter's, else off; measured: 0.4 1)."
)
GUIDANCE_RESCALE_HELP = "Rescale of the guided output, 0-1 (default: 0.7 for zero-terminal-SNR models, else 0)."
MG_GRADIENT_HELP = (
    "x0 (default): MG's gradient with the model output held constant, no backward (a guided step costs a plain one);"
    " full: through the U-Net, the paper's (~3 plain steps; the default for --mg-energy attention)."
)
DTYPES = ("float32", "float16", "bfloat16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harivo", description="HARIVO text-to-video on a frozen SD-1.5-class model.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="Generate a video from a text prompt.")
    gen.add_argument("prompt", nargs="?", help="What the video shows (from frame 0, with --prompt-at).")
    gen.add_argument(
        "-o", "--output", default=None,
        help="Output file, .mp4 or .gif (default: out.mp4; with --from, NAME-again.mp4 beside the original). Its"
        " settings go beside it as OUTPUT.json and into its metadata.",
    )  # fmt: skip
    gen.add_argument(
        "--from", dest="from_settings", default=None, metavar="SETTINGS",
        help="Make a video again from the settings another run wrote (out.mp4.json, or the video itself); options"
        " given as well override the file's (e.g. --seed).",
    )  # fmt: skip
    _add_model_arguments(gen)
    gen.add_argument("--negative-prompt", default=None, help="What the video should not show.")
    gen.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    gen.add_argument(
        "--num-frames", type=int, default=None,
        help="Frames (default: 16, or --video's length); more than the adapter's temporal layers take are made in"
        " overlapping windows (FreeNoise).",
    )  # fmt: skip
    gen.add_argument(
        "--max-frames", type=int, default=1024,
        help="Refuse --num-frames past this (default: 1024): a long video's time grows with its frames.",
    )  # fmt: skip
    gen.add_argument(
        "--prompt-at", nargs=2, action="append", default=None, metavar=("FRAME", "PROMPT"),
        help="Prompt travel: from FRAME on the video shows PROMPT (interpolated from the previous keyframe); repeat"
        " for more keyframes. The positional prompt is frame 0's.",
    )  # fmt: skip
    gen.add_argument(
        "--video", default=None, metavar="IN",
        help="Video-to-video: re-generate this video (a video file or a folder of frames) with the prompt.",
    )  # fmt: skip
    gen.add_argument(
        "--strength", type=float, default=None,
        help="With --video / --image: how much of the input is re-generated, 0 (nothing) to 1 (all; default: 0.8).",
    )  # fmt: skip
    gen.add_argument(
        "--video-motion", action="store_true",
        help="With --video: keep the moving content on the path it takes in the input video.",
    )  # fmt: skip
    gen.add_argument("--image", default=None, metavar="IN.png", help="Image-to-video: animate this first frame.")
    gen.add_argument(
        "--context-length", type=int, default=None,
        help="Frames per window for videos longer than the temporal layers take (default: 16, at most theirs).",
    )  # fmt: skip
    gen.add_argument(
        "--context-stride", type=int, default=None, help="Frames between windows (default: 4; cost ~ length / stride)."
    )
    gen.add_argument(
        "--loop", action="store_true",
        help="A seamless loop: the windows wrap around so the last frame flows into the first (needs more frames"
        " than --context-length, default 16).",
    )  # fmt: skip
    gen.add_argument(
        "--window-weighting", choices=("flat", "pyramid", "overlap-linear", "gaussian"), default="pyramid",
        help="How overlapping windows blend (default: pyramid).",
    )  # fmt: skip
    gen.add_argument(
        "--ip-adapter", default=None, metavar="FILE",
        help="An IP-Adapter weight file (.safetensors) whose folder holds its image_encoder/ (the h94/IP-Adapter"
        " layout); use with --ip-adapter-image.",
    )  # fmt: skip
    gen.add_argument("--ip-adapter-image", default=None, metavar="IMG", help="The image the video should look like.")
    gen.add_argument("--ip-adapter-scale", type=float, default=None, help="The IP-Adapter's weight (default: 1).")
    gen.add_argument(
        "--free-init", type=int, default=None, metavar="ITERS",
        help="FreeInit: sample ITERS times, each from the last result's low frequencies (ITERS times the cost).",
    )  # fmt: skip
    gen.add_argument(
        "--cache", type=int, default=None, metavar="INTERVAL",
        help="DeepCache: run the whole U-Net every INTERVAL-th step and only its outermost blocks in between, reusing"
        " the deep blocks' features (faster; 1 is off).",
    )  # fmt: skip
    gen.add_argument("--height", type=int, default=None, help="Height in pixels (default: the model's).")
    gen.add_argument("--width", type=int, default=None, help="Width in pixels (default: the model's).")
    gen.add_argument(
        "--steps", type=int, default=None,
        help="Denoising steps (default: what the adapter recommends, 15 with the embedded model; else 25).",
    )  # fmt: skip
    gen.add_argument("--guidance-scale", type=float, default=7.5, help="Classifier-free guidance (default: 7.5).")
    gen.add_argument(
        "--eta", type=float, default=0.0,
        help="DDIM's share of fresh noise per step, 0-1 (default: 0, deterministic); with --scheduler ddim.",
    )  # fmt: skip
    gen.add_argument("--guidance-rescale", type=float, default=None, help=GUIDANCE_RESCALE_HELP)
    gen.add_argument("--mg-scale", "--alpha", type=float, default=0.0, help="MG guidance alpha; 0 is off (paper: 40).")
    gen.add_argument("--mg-window", type=float, nargs=2, default=(0.0, 0.5), metavar=("START", "END"),
                     help="Fraction of the schedule with MG guidance (default: 0 0.5).")  # fmt: skip
    gen.add_argument(
        "--mg-energy", choices=("frame_difference", "attention", "motion_path"), default="frame_difference"
    )
    gen.add_argument("--mg-gradient", choices=("full", "x0"), default=None, help=MG_GRADIENT_HELP)
    gen.add_argument("--motion-path-projection", type=float, default=None, help=PROJECTION_HELP)
    gen.add_argument("--motion-path-mask", choices=("subject", "frame"), default=None, help=MASK_HELP)
    gen.add_argument(
        "--motion-subject", default=None, help="The prompt's words naming what moves (default: before the verb)."
    )
    gen.add_argument(
        "--motion-scene",
        default=None,
        help="The prompt's words naming what stands still ('' for none; default: after 'on', 'in', ...).",
    )
    gen.add_argument("--temporal-window", type=float, nargs=2, default=None, metavar=("START", "END"),
                     help=TEMPORAL_WINDOW_HELP)  # fmt: skip
    gen.add_argument(
        "--pag-scale", type=float, default=0.0, metavar="S",
        help="Perturbed-attention guidance (diffusers' pag_scale; 0: off, e.g. 3): a third branch with the mid"
        " block's self-attention perturbed, which the video moves away from (about 1.5x the sampling time).",
    )  # fmt: skip
    gen.add_argument(
        "--motion-scale", default=None, metavar="S",
        help="How much the temporal layers move things: 1 the trained model (default), 0 the image model frame by"
        " frame, up to 10; one per frame (0,0.5,1,...) or per U-Net block (down=1,mid=0.5,up=1.2).",
    )  # fmt: skip
    gen.add_argument("--motion-path-window", type=float, nargs=2, default=None, metavar=("START", "END"),
                     help=PATH_WINDOW_HELP)  # fmt: skip
    gen.add_argument("--motion-path-core-window", type=float, nargs=2, default=None, metavar=("START", "END"),
                     help=CORE_WINDOW_HELP)  # fmt: skip
    gen.add_argument(
        "--motion", type=float, nargs=2, default=None, metavar=("DX", "DY"),
        help="Make the content travel DX, DY latent pixels per frame (x right, y down) instead of the path the adapter"
        " predicts from the prompt.",
    )  # fmt: skip
    gen.add_argument(
        "--control", action="append", default=None, metavar="PATH",
        help="ControlNet condition images: a folder of images (sorted by name, one per controlled frame) or a video"
        " file; once per --controlnet.",
    )  # fmt: skip
    gen.add_argument(
        "--control-frames", default=None, metavar="I,J,...",
        help="Control only these frames, e.g. 0,15 (default: every frame).",
    )  # fmt: skip
    gen.add_argument(
        "--controlnet", action="append", default=None, metavar="DIR",
        help="A ControlNet for the base model: folder or hub id; repeat for several. Default with the embedded model:"
        " the Shapes ControlNet (silhouettes, white on black).",
    )  # fmt: skip
    gen.add_argument(
        "--control-scale", type=float, nargs="+", default=None, metavar="S",
        help="ControlNet conditioning scale: one value, or one per --controlnet (default: 1).",
    )  # fmt: skip
    gen.add_argument(
        "--control-path", action=argparse.BooleanOptionalAction, default=None,
        help="Move the prompt's subject along the path the conditions' bright part (a silhouette) travels, interpolated"
        " between controlled frames: with keyframes only, it fills the frames in between. Default: on with the"
        " embedded Shapes ControlNet and --control-frames, else off.",
    )  # fmt: skip
    _add_runtime_arguments(gen)
    gen.add_argument("--fps", type=int, default=8, help="Frames per second of the file (default: 8).")
    gen.add_argument(
        "--skip-memory-check", action="store_true", help="Run even if the estimated memory need exceeds what is free."
    )
    evaluate = commands.add_parser(
        "eval", help="Shapes-world evaluation of a model: detector scores, diversity, FVD-analog, contact sheet."
    )
    _add_model_arguments(evaluate)
    evaluate.add_argument("-o", "--output-dir", default="eval", help="Where results go (default: ./eval).")
    evaluate.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Sampling seeds (default: 0 1 2).")
    evaluate.add_argument("--prompts-per-group", type=int, default=8, help="Prompts in and out of the video data.")
    evaluate.add_argument("--num-frames", type=int, default=16)
    evaluate.add_argument("--steps", type=int, default=25)
    evaluate.add_argument("--guidance-scale", type=float, default=7.5)
    evaluate.add_argument("--guidance-rescale", type=float, default=None, help=GUIDANCE_RESCALE_HELP)
    evaluate.add_argument("--mg-scale", "--alpha", type=float, default=0.0)
    evaluate.add_argument("--mg-window", type=float, nargs=2, default=(0.0, 0.5), metavar=("START", "END"))
    evaluate.add_argument("--mg-gradient", choices=("full", "x0"), default=None, help=MG_GRADIENT_HELP)
    evaluate.add_argument("--motion-path-projection", type=float, default=None, help=PROJECTION_HELP)
    evaluate.add_argument("--motion-path-mask", choices=("subject", "frame"), default=None, help=MASK_HELP)
    evaluate.add_argument("--temporal-window", type=float, nargs=2, default=None, metavar=("START", "END"),
                          help=TEMPORAL_WINDOW_HELP)  # fmt: skip
    evaluate.add_argument("--motion-path-window", type=float, nargs=2, default=None, metavar=("START", "END"),
                          help=PATH_WINDOW_HELP)  # fmt: skip
    evaluate.add_argument("--motion-path-core-window", type=float, nargs=2, default=None, metavar=("START", "END"),
                          help=CORE_WINDOW_HELP)  # fmt: skip
    evaluate.add_argument(
        "--frame-by-frame", action="store_true", help="Bypass the temporal layers: the frozen T2I model per frame."
    )
    evaluate.add_argument("--real", action="store_true", help="Score rendered clips instead (the upper bound).")
    evaluate.add_argument(
        "--through-vae", action="store_true",
        help="With --real: encode and decode the rendered clips with the base model's VAE first, the floor of the"
        " consistency metrics (flicker, background change) a latent video model with this VAE can reach.",
    )  # fmt: skip
    _add_runtime_arguments(evaluate)

    real = commands.add_parser(
        "eval-videos", help="FVD (I3D) and CLIP score of generated video files against real ones."
    )
    real.add_argument("--generated", required=True, help="Folder of generated videos (mp4/webm/avi/gif).")
    real.add_argument("--reference", help="Folder of real videos, for FVD.")
    real.add_argument("--i3d", help="I3D TorchScript file (i3d_torchscript.pt), for FVD.")
    real.add_argument("--clip", help="CLIP model folder or hub id, for the CLIP score.")
    real.add_argument("--captions", help="CSV with `name` (the caption) and `path` (file name in --generated).")
    real.add_argument("--num-frames", type=int, default=16, help="Frames read per video (default: 16).")
    real.add_argument("--device", default="cpu")
    real.add_argument("-o", "--output", default="eval_videos.json", help="JSON of the numbers.")

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

    pre = commands.add_parser(
        "precompute",
        help="Run the base model's VAE and text encoder over a harivo config's data once: data.kind latents then"
        " trains without them.",
    )
    pre.add_argument("--config", help="YAML training config of the harivo stage (its data and base model).")
    pre.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.length=10000")
    pre.add_argument("--out", required=True, help="Folder of the cache (resumable: a rerun continues it).")
    pre.add_argument("--clips-per-shard", type=int, default=256, help="Clips per safetensors shard (default: 256).")
    train = commands.add_parser(
        "train", help="Train a stage (vae, t2i, harivo, controlnet, dreambooth) from a YAML config."
    )
    train.add_argument("--config", help="YAML training config (see configs/).")
    train.add_argument(
        "overrides", nargs="*", help="section.key=value overrides, e.g. max_steps=100 optim.learning_rate=1e-4"
    )
    train.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint of output_dir.")
    train.add_argument("--dry-run", action="store_true", help="Print the resolved config and exit.")
    train.add_argument(
        "--estimate", action="store_true",
        help="Print parameters and memory per GPU of a harivo run (at 256²×16, 512²×16 and its own size) and exit.",
    )  # fmt: skip
    train.add_argument("--num-gpus", type=int, default=8, help="GPUs the estimate assumes (default: 8).")
    train.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Resume checkpoints with pickled training state (harivo < 0.1.1); unpickling can run code.",
    )
    ui = commands.add_parser(
        "ui", help="A local web app (Gradio) on one model: prompt, settings, the video and how it was made."
    )
    _add_model_arguments(ui)
    ui.add_argument(
        "--controlnet", action="append", default=None, metavar="DIR",
        help="A ControlNet for condition videos given in the page (default with the embedded model: the Shapes one).",
    )  # fmt: skip
    ui.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: cuda if available).")
    ui.add_argument("--dtype", choices=DTYPES, default=None, help="Default: float16 on GPU, float32 on CPU.")
    ui.add_argument("--host", default="127.0.0.1", help="Address to serve on (default: 127.0.0.1, this machine only).")
    ui.add_argument("--port", type=int, default=7860, help="Port (default: 7860).")
    ui.add_argument("--share", action="store_true", help="Also ask Gradio for a public link (off by default).")
    ui.add_argument(
        "-o",
        "--output-dir",
        default="outputs/ui",
        help="Where the videos and their settings go (default: outputs/ui).",
    )
    parser.subcommands = commands.choices  # `--from` re-reads the generate parser with the file's settings
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-model",
        help="Base text-to-image model: a diffusers folder, a hub id, or a single-file checkpoint (.safetensors;"
        " .ckpt with --allow-pickle) (default: the embedded Shapes-world model).",
    )
    parser.add_argument(
        "--base-config", metavar="DIR",
        help="For a single-file --base-model: a diffusers folder (or hub id) of its architecture, read for the"
        " configs, tokenizer and scheduler (default: the embedded Shapes base when the adapter is the embedded one,"
        " else Stable Diffusion 1.5's from the hub or its cache).",
    )  # fmt: skip
    parser.add_argument(
        "--adapter",
        help="HARIVO adapter: a folder or a hub id (default: the embedded Shapes adapter, unless --base-model is a"
        " saved HARIVO pipeline, which brings its own); without --base-model, on the embedded Shapes base model.",
    )
    parser.add_argument(
        "--lora", action="append", default=None, metavar="PATH[:SCALE]",
        help="A LoRA for the base model (image or motion; diffusers or kohya / A1111 format): a file, folder or hub"
        " id, at SCALE (default 1; 0 is exactly without it). Repeat for several.",
    )  # fmt: skip
    parser.add_argument(
        "--allow-pickle", action="store_true", help="Accept pickle weights (.bin/.ckpt); they can run code."
    )


MAX_LORA_SCALE = 10.0  # past it a LoRA only makes noise


def parse_loras(values: list[str] | None) -> list[tuple[str, float]]:
    """`--lora PATH[:SCALE]` values as `(path, scale)`, checked before any model loads."""
    from .loading import looks_like_local_path

    loras = []
    for value in values or ():
        path, _, tail = value.rpartition(":")
        try:
            scale = float(tail) if path else None
        except ValueError:  # a colon inside the path (e.g. C:\...)
            scale = None
        if scale is None:
            path, scale = value, 1.0
        if not math.isfinite(scale) or abs(scale) > MAX_LORA_SCALE:
            value = value if value.isprintable() else repr(value)
            raise ValueError(
                f"--lora {value}: the scale must be a number from -{MAX_LORA_SCALE:g} to {MAX_LORA_SCALE:g} (usually"
                f" 0 to 1; below 0 inverts the LoRA), e.g. {path}:0.8."
            )
        missing = not path.strip() or not Path(path).expanduser().exists()
        if missing and (looks_like_local_path(path) or Path(path).suffix in WEIGHT_SUFFIXES or not _is_hub_id(path)):
            shown = path if path.isprintable() else repr(path)  # a line break in it must not break the message
            raise FileNotFoundError(f"--lora {shown}: no such file or folder (nor a hub id, org/name).")
        loras.append((path, scale))
    return loras


def _is_hub_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return "/" in text  # a LoRA on the hub lives in a user's or an organisation's repository


def apply_loras(pipe, loras: list[tuple[str, float]]) -> None:
    """Load each LoRA under its own name and mix them at their scales (`set_adapters`)."""
    if not loras:
        return
    names = [f"lora_{index}" for index in range(len(loras))]
    for name, (path, _) in zip(names, loras):
        try:
            pipe.load_lora_weights(path, adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ValueError(f"--lora {path}: {' '.join(str(error).split())}") from error
    pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler", default=None,
        help=f"Sampler: {', '.join(SCHEDULER_NAMES)} (default for generate: what the adapter recommends, dpm-solver++"
        " with the embedded model; else the model's). lcm and tcd are for few-step (consistency-distilled) models.",
    )  # fmt: skip
    parser.add_argument(
        "--timestep-spacing", choices=TIMESTEP_SPACINGS, default=None,
        help="How the sampler spaces its steps (diffusers' timestep_spacing; trailing for AnimateDiff-Lightning-style"
        " models; default: the model's).",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: cuda if available).")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="Default: float16 on GPU, float32 on CPU.")


def resolve_device(name: str | None) -> "torch.device":
    """`--device` as a `torch.device` that exists on this machine, or a one-line `ValueError`."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda, cuda:1, mps, ...") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu.")
    elif device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"--device {name!r} is not supported; use cpu, cuda, cuda:1, mps, ...")
    return device


def _runtime(args: argparse.Namespace) -> tuple["torch.device", "torch.dtype"]:
    import torch

    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    return device, dtype


def _prepare_pipeline(pipe, scheduler: str | None, device: "torch.device", timestep_spacing: str | None = None):
    from .schedulers import SCHEDULERS, make_scheduler

    if scheduler or timestep_spacing:
        name = scheduler or next((key for key, cls in SCHEDULERS.items() if type(pipe.scheduler) is cls), None)
        if name is None:
            raise ValueError(f"--timestep-spacing: the model's {type(pipe.scheduler).__name__} is not one harivo offers;"
                             " pass --scheduler too.")  # fmt: skip
        pipe.scheduler = make_scheduler(name, pipe.scheduler, timestep_spacing)
    return pipe.to(device)


def warn_truncated(tokenizer, prompt: str | None, what: str = "prompt") -> None:
    """Warn, naming the dropped words, when `prompt` is longer than the text encoder reads."""
    if tokenizer is None or not prompt:
        return
    ids = tokenizer(prompt, truncation=False, verbose=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        kept = len(tokenizer.decode(ids[1 : limit - 1], skip_special_tokens=True).strip())
        words, used, index = prompt.split(), 0, 0
        while index < len(words) and used + len(words[index]) <= kept:  # whole words that fit; a cut word is dropped
            used, index = used + len(words[index]) + 1, index + 1
        dropped = " ".join(words[index:]) or tokenizer.decode(ids[limit - 1 : -1], skip_special_tokens=True).strip()
        warnings.warn(
            f"The {what} is longer than the text encoder's {limit} tokens; these words are ignored: {dropped!r}.",
            stacklevel=2,
        )


def check_seed(seed: int) -> int:
    if not 0 <= seed < 2**64:
        raise ValueError(f"--seed must be from 0 to 2**64 - 1, got {seed}.")
    return seed


def train(args: argparse.Namespace) -> None:
    from .training import Trainer, load_config

    config = load_config(args.config, args.overrides)
    if args.dry_run:
        print(config.to_yaml(), end="")
        return
    if args.estimate:
        from .training.estimate import estimate, format_estimate

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

    from .data.latents import precompute, single_pass
    from .training import load_config
    from .training.stages import build_stage

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
    from .defaults import default_model_paths
    from .training import Trainer, load_config

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
    settings = {
        "stage": "dreambooth",
        "output_dir": args.output_dir,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "checkpoint_every": max(args.max_steps // 4, 1),
        "validate_every": 0,
        "data.resolution": args.resolution if args.resolution is not None else base_resolution(base),
        "optim.learning_rate": args.learning_rate
        if args.learning_rate is not None
        else 1e-3
        if args.lora_rank
        else 1e-4,
        "optim.lr_warmup_steps": min(20, args.max_steps // 10),
        "dreambooth.base_model": base,
        "dreambooth.instance_data": args.instance_data,
        "dreambooth.instance_prompt": args.instance_prompt,
        "dreambooth.identifier": args.identifier,
        "dreambooth.class_prompts": args.class_prompt or [],
        "dreambooth.num_class_images": args.num_class_images,
        "dreambooth.lora_rank": args.lora_rank,
        "dreambooth.train_text_encoder": args.train_text_encoder,
    }
    config = load_config(None, [f"{key}={json.dumps(value)}" for key, value in settings.items()] + args.overrides)
    final = Trainer(config, resume=args.resume).train()
    use = f"--lora {final}" if config.dreambooth.lora_rank else f"--base-model {final}"
    print(
        f"Done: {final}. Generate with `harivo generate PROMPT {use}` (plus --adapter for a base other than the embedded one)."
    )


def base_resolution(base: str) -> int:
    """The image size a base model was made for: its U-Net's latent size times the VAE's factor."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from .loading import describe_load_error

    try:
        unet = UNet2DConditionModel.load_config(base, subfolder="unet")
        vae = AutoencoderKL.load_config(base, subfolder="vae")
    except Exception as error:  # diffusers / the hub raise many types
        raise describe_load_error("base model", base, error) from error
    return unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)


class LoadedModel:
    """
    The model of the last `generate` call, kept for the next one (`harivo ui` generates many videos on one model);
    loaded again only when the options that pick it change. Each call runs on its own pipeline object over these
    components, so a call's sampler, windows or FreeInit never reach the next call.
    """

    def __init__(self):
        self.key, self.pipe = None, None

    def get(self, args: argparse.Namespace, dtype: "torch.dtype"):
        key = (args.base_model, args.base_config, args.adapter, tuple(_controlnets(args) or ()), tuple(args.lora or ()),
               args.ip_adapter, args.ip_adapter_scale, args.allow_pickle, str(dtype))  # fmt: skip
        if key != self.key:
            self.key, self.pipe = None, None  # the old model goes before the new one loads
            self.pipe, self.key = load_model(args, dtype), key
        return self.pipe


def load_model(args: argparse.Namespace, dtype: "torch.dtype"):
    """The pipeline of the model options (`--base-model`, `--adapter`, `--controlnet`, `--lora`, `--ip-adapter`)."""
    loras = parse_loras(args.lora)
    pipe = _load_pipeline(
        args.base_model, args.adapter, _controlnets(args), args.base_config, allow_pickle=args.allow_pickle,
        torch_dtype=dtype,
    )  # fmt: skip
    apply_loras(pipe, loras)
    if args.ip_adapter:
        weights = Path(args.ip_adapter).expanduser()
        pipe.load_ip_adapter(
            str(weights.parent), subfolder="", weight_name=weights.name, image_encoder_folder="image_encoder"
        )
        if args.ip_adapter_scale is not None:
            pipe.set_ip_adapter_scale(args.ip_adapter_scale)
    return pipe


def generate(args: argparse.Namespace, model: LoadedModel | None = None, on_step=None) -> Path:
    """`harivo generate`: write the video and its settings (`<output>.json`, and in the video's metadata); returns
    the video's path. `model` keeps the loaded model for later calls, `on_step(done, total)` is told of each
    denoising step (`harivo ui`'s progress bar)."""
    import torch

    from . import __version__
    from .settings import record, write_settings
    from .video_io import check_output_path, interrupts_deferred, save_video

    # Everything that can be checked without the model is checked before loading it
    if not args.prompt:
        raise ValueError("Give a prompt (what the video shows), or --from the settings of an earlier video.")
    output = args.output or "out.mp4"
    check_output_path(output, args.fps)
    check_seed(args.seed)
    if args.num_frames is not None and args.num_frames > args.max_frames:
        raise ValueError(
            f"--num-frames {args.num_frames} is more than --max-frames ({args.max_frames}): a long video's time grows"
            " with its frames (each window of the temporal layers costs about one short clip); raise --max-frames"
            " to make it anyway."
        )
    parse_motion_scale(args.motion_scale)  # a malformed value stops before the model loads
    if args.cache is not None and args.cache < 1:
        raise ValueError(f"--cache must be a positive number of steps, got {args.cache}.")
    if args.scheduler is not None and args.scheduler.lower() not in SCHEDULER_NAMES:
        raise ValueError(f"Unknown --scheduler {args.scheduler!r}; choose one of: {', '.join(SCHEDULER_NAMES)}.")
    control = _control_options(args)
    workflow = _workflow_options(args, bool(control))
    device, dtype = _runtime(args)
    parse_loras(args.lora)
    loaded = (model or LoadedModel()).get(args, dtype)
    recommended = loaded.adapter.sampling_defaults  # the sampler and steps the adapter was measured best with
    steps = args.steps if args.steps is not None else recommended.get("num_inference_steps", 25)
    scheduler = args.scheduler or recommended.get("scheduler")
    pipe = _prepare_pipeline(_workflow_pipeline(loaded, workflow), scheduler, device, args.timestep_spacing)
    prompt = workflow.pop("prompt")
    for text in prompt.values() if isinstance(prompt, dict) else [prompt]:
        warn_truncated(pipe.tokenizer, text)
    warn_truncated(pipe.tokenizer, args.negative_prompt, "negative prompt")
    pipe.memory_check = not args.skip_memory_check
    num_frames = workflow.pop("num_frames")
    _long_videos(pipe, num_frames, args.context_length, args.context_stride, args.loop, args.window_weighting)
    if control and pipe.free_noise_enabled and num_frames > pipe._free_noise.context_length:
        raise ValueError(
            f"--control works on at most {pipe._free_noise.context_length} frames (one window of the temporal"
            f" layers) for now; lower --num-frames to {pipe._free_noise.context_length}."
        )
    if args.free_init is not None:
        try:
            pipe.enable_free_init(num_iters=args.free_init)
        except ValueError:
            raise ValueError(f"--free-init must be a positive number of samplings, got {args.free_init}.") from None
    if args.cache is not None:
        pipe.enable_deep_cache(cache_interval=args.cache)
    if args.motion is not None:
        workflow["motion_path"] = torch.arange(max(num_frames, 1))[:, None] * torch.tensor(args.motion)
    elif args.control_path:
        workflow["motion_path"] = "control"
    guidance_rescale = _guidance_rescale(args.guidance_rescale, pipe.scheduler)
    if on_step is not None:
        workflow["callback_on_step_end"] = lambda call, step, timestep, tensors: (
            on_step(step + 1, call.num_timesteps) or {}
        )
    start = time.perf_counter()
    frames = pipe(
        prompt,
        negative_prompt=args.negative_prompt,
        num_frames=num_frames,
        height=args.height,
        width=args.width,
        num_inference_steps=steps,
        guidance_scale=args.guidance_scale,
        guidance_rescale=guidance_rescale,
        eta=args.eta,
        mg_scale=args.mg_scale,
        mg_window=tuple(args.mg_window),
        mg_energy=args.mg_energy,
        mg_gradient=args.mg_gradient,
        motion_path_projection=args.motion_path_projection,
        **_motion_options(args),
        motion_scale=parse_motion_scale(args.motion_scale),
        pag_scale=args.pag_scale,
        motion_subject=args.motion_subject,
        motion_scene=args.motion_scene,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        **control,
        **workflow,
    ).frames[0]
    seconds = time.perf_counter() - start
    resolved = {
        "video": str(Path(output).resolve()), "frames": len(frames), "height": frames[0].height,
        "width": frames[0].width, "steps": steps, "scheduler": type(pipe.scheduler).__name__,
        "guidance_rescale": guidance_rescale,
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "sampling_seconds": round(seconds, 2),
        "harivo": __version__, "torch": torch.__version__,
    }  # fmt: skip
    settings = record(vars(args), resolved)
    with interrupts_deferred():  # Ctrl-C now: the video and its settings are both written, then it stops
        path = save_video(frames, output, fps=args.fps, comment=json.dumps(settings))
        write_settings(path, settings)
    print(f"Wrote {path} and its settings ({len(frames)} frames, {seconds:.1f} s of sampling on {device}).")
    return path


def _workflow_options(args: argparse.Namespace, controlled: bool) -> dict:
    """The prompt (a keyframe dict with --prompt-at), the frame count and the --video / --image inputs of the call,
    read and checked before any model loads."""
    from .video_io import input_budget, read_frames, read_image

    budget = input_budget(not args.skip_memory_check)
    if args.strength is not None and not (args.video or args.image):
        raise ValueError("--strength needs --video or --image (the input it re-generates).")
    if args.video_motion and not args.video:
        raise ValueError("--video-motion needs --video (the input video).")
    if args.video and args.image:
        raise ValueError("Pass at most one of --video and --image.")
    if args.free_init is not None and (args.video or args.image):
        raise ValueError(
            "--free-init restarts from noise, so it is for text-to-video: drop it with --video / --image."
        )
    if controlled and (args.video or args.image):
        raise ValueError("--control does not combine with --video or --image yet; use one of them.")
    if args.video_motion and args.motion is not None:
        raise ValueError("Pass at most one of --video-motion and --motion.")
    options: dict = {"prompt": args.prompt}
    if args.prompt_at:
        keyframes = {0: args.prompt}
        for frame, text in args.prompt_at:
            if not re.fullmatch(r"[0-9]+", frame):
                raise ValueError(f"--prompt-at FRAME must be a frame number (0, 1, ...), got {frame!r}.")
            if int(frame) in keyframes:
                what = "the positional prompt's" if int(frame) == 0 else "given twice"
                raise ValueError(f"--prompt-at frame {int(frame)} is {what}: give each keyframe once.")
            keyframes[int(frame)] = text
        options["prompt"] = keyframes
    num_frames = args.num_frames
    if args.video:
        video = read_frames(args.video, budget)
        options.update(video=video, strength=0.8 if args.strength is None else args.strength)
        if args.video_motion:
            options["motion_path"] = "video"
        num_frames = len(video) if num_frames is None else num_frames
    if args.image:
        options.update(image=read_image(args.image, budget), strength=0.8 if args.strength is None else args.strength)
    if bool(args.ip_adapter) != bool(args.ip_adapter_image):
        raise ValueError("--ip-adapter and --ip-adapter-image go together: give the IP-Adapter file and the image.")
    if args.ip_adapter_scale is not None and not args.ip_adapter:
        raise ValueError("--ip-adapter-scale needs --ip-adapter.")
    if args.ip_adapter:
        weights = Path(args.ip_adapter).expanduser()
        if not weights.is_file() or not (weights.parent / "image_encoder").is_dir():
            raise FileNotFoundError(
                f"--ip-adapter {weights} must be a weight file in a folder that also holds image_encoder/ (the"
                " h94/IP-Adapter layout, e.g. models/ip-adapter_sd15.safetensors)."
            )
        options["ip_adapter_image"] = read_image(args.ip_adapter_image, budget)
    options["num_frames"] = 16 if num_frames is None else num_frames
    return options


def _workflow_pipeline(pipe, workflow: dict):
    """A pipeline of its own for this call, over the loaded components: video-to-video or image-to-video for the
    call's inputs, else one of the loaded pipeline's class."""
    from .pipelines import HarivoImageToVideoPipeline, HarivoVideoToVideoPipeline

    if "video" in workflow:
        return HarivoVideoToVideoPipeline.from_pipe(pipe)
    if "image" in workflow:
        return HarivoImageToVideoPipeline.from_pipe(pipe)
    return type(pipe).from_pipe(pipe)


def _long_videos(
    pipe, num_frames: int, context_length: int | None, context_stride: int | None, loop: bool = False,
    weighting_scheme: str = "pyramid",
) -> None:  # fmt: skip
    """FreeNoise windows when the video is longer than the temporal layers take, or when a window is asked for."""
    max_frames = pipe.adapter.max_frames
    if (
        context_length is None
        and context_stride is None
        and not loop
        and (not isinstance(num_frames, int) or num_frames <= max_frames)
    ):
        return
    length = min(16, max_frames) if context_length is None else context_length
    stride = min(4, length) if context_stride is None else context_stride
    try:
        pipe.enable_free_noise(
            context_length=length, context_stride=stride, weighting_scheme=weighting_scheme, closed_loop=loop
        )
    except ValueError as error:
        raise ValueError(str(error).replace("`context_length`", "--context-length").replace(
            "`context_stride`", "--context-stride")) from None  # fmt: skip
    if isinstance(num_frames, int) and num_frames > length:
        windows = len(pipe._free_noise.windows(num_frames))
        print(
            f"{num_frames} frames in {windows} overlapping windows of {length}: about {windows} times one window's work."
        )


def _control_options(args: argparse.Namespace) -> dict:
    """The ControlNet arguments of the pipeline call, read and checked before any model loads."""
    from .video_io import input_budget, read_frames

    if not args.control:
        for flag, value in (("--controlnet", args.controlnet), ("--control-frames", args.control_frames),
                            ("--control-scale", args.control_scale), ("--control-path", args.control_path)):  # fmt: skip
            if value:
                raise ValueError(f"{flag} needs --control (a folder of condition images or a video file).")
        return {}
    if args.control_path and args.motion is not None:
        raise ValueError("Pass at most one of --control-path and --motion.")
    if args.control_path is None:  # silhouettes on keyframes: the path between them fills the other frames
        embedded = not (args.controlnet or args.base_model)
        args.control_path = embedded and args.control_frames is not None and args.motion is None
    nets = len(args.controlnet) if args.controlnet else 1
    if len(args.control) != nets:
        raise ValueError(
            f"Got {len(args.control)} --control for {nets} ControlNet(s); give one --control per --controlnet."
        )
    budget = input_budget(not args.skip_memory_check)
    frames = [read_frames(path, budget) for path in args.control]
    options = {"conditioning_frames": frames if nets > 1 else frames[0]}
    if args.control_frames is not None:
        try:
            options["controlnet_frame_indices"] = [int(i) for i in args.control_frames.split(",")]
        except ValueError:
            raise ValueError(
                f"--control-frames must be frame numbers separated by commas (e.g. 0,15), got {args.control_frames!r}."
            ) from None
    if args.control_scale is not None:
        if len(args.control_scale) not in (1, nets):
            raise ValueError(
                f"Got {len(args.control_scale)} --control-scale values for {nets} ControlNet(s); give one, or one per"
                " --controlnet."
            )
        scales = args.control_scale  # one value acts for every net
        options["controlnet_conditioning_scale"] = scales[0] if len(scales) == 1 else list(scales)
    return options


def _controlnets(args: argparse.Namespace) -> list[str] | None:
    """The ControlNets to load: --controlnet, else with the embedded model and --control its Shapes ControlNet."""
    if not args.control:
        return None
    if args.controlnet:
        return list(args.controlnet)
    if args.base_model:
        raise ValueError("--control needs --controlnet (a ControlNet trained for this base model).")
    from .defaults import default_controlnet_path

    return [str(default_controlnet_path())]


def parse_motion_scale(text: str | None) -> float | list[float] | dict[str, float]:
    """`--motion-scale`: `1.2`, one per frame `0,0.5,1`, or per U-Net block `down=1,up=0.5` (checked by the
    pipeline against the frames and blocks)."""
    if text is None:
        return 1.0
    try:
        if "=" in text:
            pairs = [item.split("=", 1) for item in text.split(",")]
            return {key.strip(): float(value) for key, value in pairs}
        if "," in text:
            return [float(item) for item in text.split(",")]
        return float(text)
    except ValueError:
        raise ValueError(
            f"--motion-scale {text!r}: give a number (1.2), one per frame (0,0.5,1) or one per U-Net block"
            " (down=1,mid=0.5,up=1.2)."
        ) from None


def _motion_options(args: argparse.Namespace) -> dict:
    """The pipeline's motion-path mask and windows, where given (else the adapter's or pipeline's defaults)."""
    from .models.adapter import SAMPLING_WINDOWS  # lazily, like every heavy import here

    options = {"motion_path_mask": args.motion_path_mask}
    for name in SAMPLING_WINDOWS:
        if getattr(args, name) is not None:
            options[name] = tuple(getattr(args, name))
    return options


def evaluate(args: argparse.Namespace) -> None:
    from .evaluation.suite import (
        EvalSettings,
        evaluation_prompts,
        format_table,
        generate_clips,
        render_reference_clips,
        score_clips,
        through_vae,
        write_results,
    )
    from .video_io import contact_sheet

    if args.prompts_per_group * len(args.seeds) < 2:
        raise ValueError(
            "harivo eval needs at least two clips per prompt group (diversity and the FVD-analog compare clips):"
            " raise --prompts-per-group or pass more --seeds."
        )
    for seed in args.seeds:
        check_seed(seed)
    if args.through_vae and not args.real:
        raise ValueError("--through-vae scores rendered clips through the VAE: pass it with --real.")
    check_output_folder(args.output_dir)
    groups = evaluation_prompts(args.prompts_per_group)
    prompts = [p for group in groups.values() for p in group]
    settings = EvalSettings(
        seeds=tuple(args.seeds),
        num_frames=args.num_frames,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        mg_scale=args.mg_scale,
        mg_window=tuple(args.mg_window),
        motion_path_projection=args.motion_path_projection,
        extra={**_motion_options(args), "mg_gradient": args.mg_gradient},
    )
    start = time.perf_counter()
    if args.real and not args.through_vae:
        clips, label = render_reference_clips(prompts, settings.seeds, settings.num_frames), "rendered clips"
    else:
        device, dtype = _runtime(args)
        loras = parse_loras(args.lora)
        pipe = _load_pipeline(
            args.base_model, args.adapter, None, args.base_config, allow_pickle=args.allow_pickle, torch_dtype=dtype
        )
        apply_loras(pipe, loras)
        pipe = _prepare_pipeline(pipe, args.scheduler, device, args.timestep_spacing)
    if args.through_vae:
        clips = through_vae(render_reference_clips(prompts, settings.seeds, settings.num_frames), pipe.vae)
        label = "rendered clips through the VAE"
    elif not args.real:
        label = args.adapter or "embedded default model"
        settings.guidance_rescale = _guidance_rescale(args.guidance_rescale, pipe.scheduler)
        if args.frame_by_frame:
            if settings.motion_path_projection is None:  # the image model alone: no path either
                settings.motion_path_projection = 0.0
            with pipe.video_unet.temporal_layers_disabled():
                clips = generate_clips(pipe, prompts, settings)
            label += " (frame by frame)"
        else:
            clips = generate_clips(pipe, prompts, settings)
    reference = render_reference_clips(prompts, settings.seeds, settings.num_frames, offset=1000)
    rows = {str(label): score_clips(clips, groups, reference=reference)}
    seconds = time.perf_counter() - start
    folder = write_results(args.output_dir, rows, {"prompts": groups, "settings": vars(settings), "seconds": seconds})
    first = settings.seeds[0]
    contact_sheet(clips[first], prompts, scale=2, max_frames=8, long_exposure=True).save(folder / "samples.png")
    print(format_table(rows))
    print(f"Wrote {folder}/results.json, table.md and samples.png ({seconds:.0f} s).")


def evaluate_videos(args: argparse.Namespace) -> None:
    import csv

    from .data.webvid import decode_frames

    if not (args.i3d and args.reference) and not args.clip:
        raise ValueError("Nothing to compute: pass --i3d with --reference for FVD, and/or --clip for the CLIP score.")
    args.device = str(resolve_device(args.device))
    suffixes = {".mp4", ".webm", ".avi", ".gif", ".mov", ".mkv"}

    def read_folder(folder: str) -> dict:
        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)
        if not paths:
            raise FileNotFoundError(f"No videos ({', '.join(sorted(suffixes))}) in {folder}.")
        return {p.name: decode_frames(p, args.num_frames, 1) for p in paths}

    generated = read_folder(args.generated)
    results = {"num_generated": len(generated)}
    if args.i3d and args.reference:
        from .evaluation.fvd import I3DFeatureExtractor, fvd

        reference = read_folder(args.reference)
        results["fvd"] = fvd(reference.values(), generated.values(), I3DFeatureExtractor(args.i3d, args.device))
        results["num_reference"] = len(reference)
    if args.clip:
        from .evaluation.clip_score import ClipScorer

        if not args.captions:
            raise ValueError("--clip needs --captions (a CSV with `name` and `path` columns).")
        with open(args.captions, newline="") as handle:
            captions = {row["path"]: row["name"] for row in csv.DictReader(handle)}
        missing = sorted(set(generated) - set(captions))
        if missing:
            raise ValueError(f"No caption for {len(missing)} video(s) in {args.captions}, e.g. {missing[0]}.")
        names = sorted(generated)
        results["clip_score"] = ClipScorer(args.clip, args.device)(
            [generated[n] for n in names], [captions[n] for n in names]
        )
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def _guidance_rescale(value: float | None, scheduler) -> float:
    """`--guidance-rescale` if given, else what the model's schedule wants (`default_guidance_rescale`)."""
    from .schedulers import default_guidance_rescale

    return default_guidance_rescale(scheduler) if value is None else value


def _load_pipeline(
    base_model: str | None,
    adapter: str | None,
    controlnet: list[str] | None = None,
    base_config: str | None = None,
    **kwargs,
):
    """The pipeline of --base-model / --base-config / --adapter (`HarivoControlNetPipeline` with `controlnet`;
    `kwargs` go to `from_pretrained` / `from_single_file`): neither model given, the embedded model; a base model
    without an adapter (a DreamBooth folder or single file of the Shapes base), the embedded adapter."""
    from .defaults import default_model_paths
    from .pipelines import HarivoControlNetPipeline, HarivoPipeline
    from .pipelines.loading import has_component

    given_base, config = base_model, base_config
    adapter_alone = bool(adapter) and not base_model  # e.g. trained on the embedded base, training's fallback
    single_file = bool(base_model) and Path(base_model).suffix in WEIGHT_SUFFIXES
    if config and not single_file:
        raise ValueError("--base-config is for a single-file --base-model (.safetensors or .ckpt).")
    embedded_base, embedded_adapter = default_model_paths()
    defaulted = not adapter and (single_file or (bool(base_model) and not has_component(Path(base_model), "adapter")))
    if not base_model:
        base_model, adapter = embedded_base, adapter or embedded_adapter
    elif defaulted:
        adapter = embedded_adapter
        config = config or (embedded_base if single_file else None)
    cls = HarivoControlNetPipeline if controlnet else HarivoPipeline
    if controlnet:
        kwargs["controlnet"] = controlnet if len(controlnet) > 1 else controlnet[0]
    try:
        if single_file:
            return cls.from_single_file(base_model, adapter=adapter, config=config, **kwargs)
        return cls.from_pretrained(base_model, adapter=adapter, **kwargs)
    except IncompatibleAdapterError as error:
        if adapter_alone:
            raise IncompatibleAdapterError(
                f"--adapter {adapter} was not trained on the embedded Shapes base model ({error}): pass --base-model"
                " (the text-to-image model it was trained on)."
            ) from error
        if not defaulted:
            raise
        raise IncompatibleAdapterError(
            f"--base-model {given_base} is not a Shapes-world base model, so the embedded adapter does not fit it"
            f" ({error}): pass --adapter (one trained on this base model)."
        ) from error


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in NOISE)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    text = " ".join(str(message).split())
    return f"warning: {text}\n"


def quiet_libraries() -> None:
    """A clean command-line run: library warnings stay visible as one line each, known noise and the libraries' own
    loading progress bars go."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    warnings.formatwarning = _one_line_warning
    for text in NOISE:
        warnings.filterwarnings("ignore", message=f".*{re.escape(text)}")
    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()
        library.set_verbosity_warning()
        for handler in library.get_logger().handlers:  # records of every module's logger pass these
            handler.addFilter(_DropNoise())
            handler.setFormatter(logging.Formatter("warning: %(message)s"))


# The errors a command reports as one line (what to change), not as a traceback
USER_ERRORS = (
    HarivoLoadError,
    IncompatibleAdapterError,
    CheckpointFileError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    TrainingDivergedError,
    SamplingDivergedError,
    ShardError,
    MemoryError,
)


def parse_generate(parser: argparse.ArgumentParser, argv: list[str] | None, args: argparse.Namespace):
    """`harivo generate --from SETTINGS ...`: the file's options, overridden by those given on the command line."""
    from .settings import check_options, read_settings

    command = parser.subcommands["generate"]
    actions = {action.dest: action for action in command._actions if action.dest != "help"}
    options = check_options(read_settings(args.from_settings, set(actions)), actions, args.from_settings)
    command.set_defaults(**options)
    try:
        args = parser.parse_args(argv)
    finally:
        command.set_defaults(**{action.dest: action.default for action in command._actions if action.dest in options})
    if args.output is None:  # beside the original, never over it
        source = Path(args.from_settings)
        name = source.name.removesuffix(".json")
        original = source.with_name(name)
        args.output = str(original.with_name(f"{original.stem}-again{original.suffix or '.mp4'}"))
    return args


def check_output_folder(folder: str | os.PathLike) -> None:
    """Before any work: a one-line error when `folder`, or a folder above it, is a file (the results could not be
    written after the work)."""
    path = Path(folder).expanduser().absolute()
    file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if file is not None:
        raise FileExistsError(errno.EEXIST, "File exists", str(file))


# Pipeline keywords whose `generate` flag has another name
FLAG_OF_KEYWORD = {
    "num_inference_steps": "--steps", "conditioning_frames": "--control", "controlnet_frame_indices": "--control-frames",
    "controlnet_conditioning_scale": "--control-scale", "motion_path": "--motion", "context_length": "--context-length",
    "context_stride": "--context-stride",
}  # fmt: skip


def in_flags(message: str, command: argparse.ArgumentParser) -> str:
    """A library message in the command line's words: each `keyword` the command takes as a flag becomes the flag
    (`num_frames` -> --num-frames)."""
    flags = {action.dest: max(action.option_strings, key=len) for action in command._actions if action.option_strings}
    flags = {**flags, **FLAG_OF_KEYWORD}
    return re.sub(r"`(\w+)`", lambda match: flags.get(match[1], match[0]), message)


def describe_error(error: BaseException) -> str:
    """One line for a user error: its message on one line; an operating-system error on a path said plainly (a
    folder that is a file, `[Errno 17] File exists` from `mkdir`, says so)."""
    if isinstance(error, FileExistsError | NotADirectoryError) and error.filename is not None:
        file = next((p for p in (Path(error.filename), *Path(error.filename).parents) if p.is_file()), None)
        if file is not None:
            return f"{file} is a file, not a folder: choose another output folder."
    if isinstance(error, OSError) and error.errno is not None and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}."
    return " ".join(str(error).split())  # one line, whatever the library wrote


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "generate" and args.from_settings:
            args = parse_generate(parser, argv, args)
        if args.command == "ui":
            from .ui import launch

            launch(args)
            return
        quiet_libraries()
        if args.command == "generate":
            generate(args)
        elif args.command == "train":
            train(args)
        elif args.command == "dreambooth":
            dreambooth(args)
        elif args.command == "precompute":
            precompute_latents(args)
        elif args.command == "eval":
            evaluate(args)
        elif args.command == "eval-videos":
            evaluate_videos(args)
    except USER_ERRORS as error:
        message = describe_error(error)
        if args.command in ("generate", "ui"):
            message = in_flags(message, parser.subcommands["generate"])
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # Ctrl-C: no traceback; what was written stays whole (videos and checkpoints)
        print(f"error: interrupted (harivo {args.command} stopped).", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
