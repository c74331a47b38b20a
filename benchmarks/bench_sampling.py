"""Sampling cost, side by side in one run: diffusers' AnimateDiffPipeline vs HarivoPipeline (MG off / on, motion-path
projection).

Same frozen U-Net, same temporal layers, same scheduler, seeds and sizes. Random weights: this measures cost,
not quality. Run: `python -m benchmarks.bench_sampling [--size small] [--device cuda]`.
"""

import argparse
import time

import torch
from diffusers import AnimateDiffPipeline, AutoencoderKL, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging

from harivo import HarivoAdapter, HarivoPipeline
from harivo.utils.tiny import tiny_stable_diffusion, tiny_text_encoder

FULL = {"mg_gradient": "full"}  # the paper's MG gradient, through the U-Net
SIZES = {  # U-Net channels, latent side
    "tiny": ((16, 32), 8),
    "small": ((64, 128, 256), 32),
    "sd15": ((320, 640, 1280, 1280), 64),  # Stable Diffusion 1.5's U-Net, VAE and text width at 512x512 (GPU)
}


def build(size: str):
    sd = tiny_stable_diffusion()
    channels, latent = SIZES[size]
    if size == "sd15":  # diffusers' defaults are SD 1.5's architecture; random weights
        torch.manual_seed(0)
        sd.unet = UNet2DConditionModel(sample_size=latent, cross_attention_dim=768)
        sd.vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=latent * 8,
        )  # fmt: skip
        sd.text_encoder = tiny_text_encoder(len(sd.tokenizer), hidden_size=768)
    elif size != "tiny":
        torch.manual_seed(0)
        sd.unet = UNet2DConditionModel(
            sample_size=latent,
            block_out_channels=channels,
            layers_per_block=1,
            norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D",) * (len(channels) - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(channels) - 1),
            cross_attention_dim=32,
            attention_head_dim=8,
        )
    adapter = HarivoAdapter.from_unet(sd.unet, num_frame_tokens=4, max_frames=32, motion_num_attention_heads=4)
    components = {k: getattr(sd, k) for k in ("vae", "text_encoder", "tokenizer", "scheduler")}
    harivo = HarivoPipeline(**components, unet=sd.unet, adapter=adapter)
    animatediff = AnimateDiffPipeline(**components, unet=harivo.unet, motion_adapter=None)
    return harivo, animatediff, latent * harivo.vae_scale_factor


def measure(pipe, repeats: int, device: torch.device, **kwargs) -> tuple[float, float]:
    """Median seconds per call and peak GPU memory in MiB (nan on CPU)."""
    pipe(**{**kwargs, "num_inference_steps": 1})  # warm-up
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe(**kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return sorted(times)[len(times) // 2], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--variants", action="store_true", help="Also MG off with torch.compile and with CPU offload.")
    args = parser.parse_args()
    diffusers_logging.set_verbosity_error()
    device = torch.device(args.device)
    harivo, animatediff, side = build(args.size)
    dtype = getattr(torch, args.dtype)
    for pipe in (harivo, animatediff):
        pipe.to(device, dtype)
        pipe.set_progress_bar_config(disable=True)
    call = {"prompt": "a red circle moving left", "num_frames": args.frames, "height": side, "width": side}
    call["num_inference_steps"], call["output_type"] = args.steps, "latent"
    path = torch.stack(
        [torch.arange(args.frames) * 0.5, torch.zeros(args.frames)], dim=-1
    )  # half a pixel right per frame
    rows = [
        ("diffusers AnimateDiffPipeline", animatediff, {}),
        ("HarivoPipeline, MG off (alpha=0)", harivo, {"mg_scale": 0.0}),
        ("HarivoPipeline, motion-path projection", harivo, {"motion_path": path, "motion_path_projection": 1.0}),
        ("HarivoPipeline, MG alpha=40, first half", harivo, {"mg_scale": 40.0, "mg_window": (0.0, 0.5), **FULL}),
        ("HarivoPipeline, MG alpha=40, every step", harivo, {"mg_scale": 40.0, "mg_window": (0.0, 1.0), **FULL}),
        ("HarivoPipeline, MG x0 gradient, every step", harivo,
         {"mg_scale": 40.0, "mg_window": (0.0, 1.0), "mg_gradient": "x0"}),
    ]  # fmt: skip
    print(
        f"size={args.size} device={device} dtype={args.dtype} frames={args.frames} {side}x{side}px steps={args.steps}"
        f" (median of {args.repeats})"
    )
    print(f"{'configuration':46s} {'s/video':>9s} {'s/step':>8s} {'peak MiB':>9s}", flush=True)
    for name, pipe, extra in rows:
        seconds, peak = measure(pipe, args.repeats, device, **call, **extra)
        print(f"{name:46s} {seconds:9.3f} {seconds / args.steps:8.4f} {peak:9.1f}", flush=True)
    if args.variants and device.type == "cuda":
        compiled = HarivoPipeline.from_pipe(harivo)
        compiled.unet = torch.compile(harivo.unet)
        seconds, peak = measure(compiled, args.repeats, device, **call, mg_scale=0.0)
        print(
            f"{'HarivoPipeline, MG off, torch.compile(unet)':46s} {seconds:9.3f} {seconds / args.steps:8.4f} {peak:9.1f}"
        )
        offloaded = HarivoPipeline.from_pipe(harivo)
        offloaded.enable_model_cpu_offload(device=device)
        seconds, peak = measure(offloaded, args.repeats, device, **call, mg_scale=0.0)
        print(
            f"{'HarivoPipeline, MG off, model CPU offload':46s} {seconds:9.3f} {seconds / args.steps:8.4f} {peak:9.1f}"
        )


if __name__ == "__main__":
    main()
