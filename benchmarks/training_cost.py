"""
What each HARIVO loss term costs a training step, side by side in one run: step time and peak memory.

    python benchmarks/training_cost.py                 # SD-1.5 widths, 64x64 px, 2 clips x 8 frames, CPU (~10 min)
    python benchmarks/training_cost.py --device cuda --side 256 --frames 16 --checkpointing   # what the GPU check runs

The U-Net has Stable Diffusion 1.5's widths (320/640/1280/1280 channels, 768-d text) with random weights: this
measures cost, not quality. One training step = the losses' forward (`HarivoLoss`: noise, the video U-Net, the extra
forward of `L_reg`, the attention maps of `L_trsa`, the h-space of `L_dc`), the backward into the adapter and an
AdamW step. Each row runs in a fresh process, so its peak memory is its own (the process's peak resident memory on
CPU, `torch.cuda.max_memory_allocated` on GPU); the time is the median of `--steps` steps after one warm-up step.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

try:
    from benchmarks.results_page import publish
except ModuleNotFoundError:  # run as a script: benchmarks/ itself is on the path
    from results_page import publish

# name: (frame tokens, LossWeights(diffusion, reg, trsa, dc), share of the frames L_reg compares)
ROWS = {
    "AnimateDiff recipe (diffusion loss only)": (0, (1.0, 0.0, 0.0, 0.0), 1.0),
    "+ frame tokens": (4, (1.0, 0.0, 0.0, 0.0), 1.0),
    "+ frame tokens + L_reg": (4, (1.0, 0.1, 0.0, 0.0), 1.0),
    "+ frame tokens + L_reg on a quarter of the frames": (4, (1.0, 0.1, 0.0, 0.0), 0.25),
    "+ frame tokens + L_trsa": (4, (1.0, 0.0, 0.1, 0.0), 1.0),
    "+ frame tokens + L_dc": (4, (1.0, 0.0, 0.0, 0.01), 1.0),
    "all four (HARIVO)": (4, (1.0, 0.1, 0.1, 0.01), 1.0),
    "all four, L_reg on a quarter of the frames": (4, (1.0, 0.1, 0.1, 0.01), 0.25),
}


def sd15_unet(side: int):
    """A U-Net with Stable Diffusion 1.5's architecture (diffusers' defaults are SD 1.5's), random weights."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=side // 8, cross_attention_dim=768)


def measure(name: str, args: argparse.Namespace) -> dict:
    """One row, in this process: seconds per step (median) and peak memory in MiB."""
    import torch
    from diffusers import DDPMScheduler

    from harivo.losses import HarivoLoss, LossWeights
    from harivo.models import HarivoAdapter, HarivoUNet

    device = torch.device(args.device)
    tokens, weights, reg_share = ROWS[name]
    unet = sd15_unet(args.side).requires_grad_(False)
    adapter = HarivoAdapter.from_unet(unet, num_frame_tokens=tokens, max_frames=max(args.frames, 16))
    model = HarivoUNet.from_unet2d(unet, adapter).to(device).train()
    if args.checkpointing:
        model.unet.enable_gradient_checkpointing()
    reg_frames = 0 if reg_share == 1 else max(1, round(args.frames * reg_share))
    loss_fn = HarivoLoss(LossWeights(*weights), reg_frames=reg_frames).to(device)
    dtype = torch.bfloat16 if args.mixed_precision and device.type == "cuda" else None
    optimizer = torch.optim.AdamW([p for p in adapter.parameters() if p.requires_grad], lr=1e-5)
    scheduler = DDPMScheduler()
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(args.clips, 4, args.frames, args.side // 8, args.side // 8, device=device)
    text = torch.randn(args.clips, 77, 768, device=device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = loss_fn(model, scheduler, latents, text, generator=generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": statistics.median(times), "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--side", type=int, default=64, help="Frame side in pixels (latents are 1/8; default 64).")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="Measured steps per row, after a warm-up step.")
    parser.add_argument("--checkpointing", action="store_true", help="Gradient checkpointing in the U-Net.")
    parser.add_argument("--mixed-precision", action="store_true", help="bf16 autocast (GPU).")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # one row, in a child process
    parser.add_argument("--publish", action="store_true", help="Also write the table into docs/results.md.")
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(args.row, args)))
        return
    print(
        f"SD-1.5 widths, {args.clips} clips x {args.frames} frames of {args.side}x{args.side} px on {args.device}"
        f"{', gradient checkpointing' if args.checkpointing else ''}; median of {args.steps} steps"
    )
    lines = [
        f"| {'configuration':50s} | s / step | x recipe | peak MiB | x recipe |",
        f"|{'-' * 52}|---------:|---------:|---------:|---------:|",
    ]
    print("\n".join(lines), flush=True)
    first = None
    for name in args.rows:
        forwarded = [a for a in sys.argv[1:] if a != "--rows" and a not in ROWS]
        result = subprocess.run(
            [sys.executable, __file__, *forwarded, "--row", name], capture_output=True, text=True, check=False
        )
        if result.returncode:
            lines.append(f"| {name:50s} | failed: {result.stderr.strip().splitlines()[-1]} |")
        else:
            row = json.loads(result.stdout.strip().splitlines()[-1])
            first = first or row
            lines.append(
                f"| {name:50s} | {row['seconds']:8.2f} | {row['seconds'] / first['seconds']:8.2f} |"
                f" {row['peak_mib']:8.0f} | {row['peak_mib'] / first['peak_mib']:8.2f} |"
            )
        print(lines[-1], flush=True)
    if args.publish:
        publish("training_cost", "\n".join(lines))


if __name__ == "__main__":
    main()
