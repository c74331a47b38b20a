"""Check `harivo train --estimate`'s activation count against a real CPU training step, at a size a CPU can run.

One video U-Net of Stable Diffusion 1.5's layout at 30 % of its width (random weights) with a fresh HARIVO
adapter, trained one step on one sample: the bytes the estimate counts on meta tensors (attention as fused kernels
keep it), the bytes autograd really saved on CPU, and the process's peak memory growth over forward + backward
(resident set, sampled every millisecond) against the estimate's activations + gradients.

    python benchmarks/train_memory.py [--resolution 128] [--num-frames 16]
"""

import argparse
import threading
import time

import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel

from harivo import HarivoAdapter
from harivo.models.video_unet import HarivoUNet
from harivo.training.estimate import GIB, SD15_UNET, activation_bytes

QUARTER = {**SD15_UNET, "block_out_channels": (96, 192, 384, 384), "cross_attention_dim": 192}


def build(meta: bool):
    torch.manual_seed(0)
    with init_empty_weights(include_buffers=True) if meta else torch.device("cpu"):
        unet = UNet2DConditionModel.from_config(QUARTER)
        adapter = HarivoAdapter.from_unet(unet.config, max_frames=32, motion_num_attention_heads=8)
        return HarivoUNet.from_unet2d(unet, adapter)


def resident() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def peak_growth(step) -> int:
    """Peak resident-set growth while `step()` runs."""
    start, peak, running = resident(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], resident() - start)
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        step()
    finally:
        running[0] = False
        thread.join()
    return peak[0]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args(argv)
    size = (args.resolution, args.num_frames)
    checkpointing = args.gradient_checkpointing
    estimated = activation_bytes(build(meta=True), *size, torch.float32, checkpointing)
    model = build(meta=False)
    trainable = [p for p in model.adapter.parameters() if p.requires_grad]
    gradients = 4 * sum(p.numel() for p in trainable)
    latent = args.resolution // 8
    sample = torch.randn(1, 4, args.num_frames, latent, latent)
    text = torch.randn(1, 77, QUARTER["cross_attention_dim"])

    def step():
        if checkpointing:
            model.unet.enable_gradient_checkpointing()
        model(sample, torch.tensor([500]), text).square().mean().backward()

    started = time.perf_counter()
    measured = peak_growth(step)
    seconds = time.perf_counter() - started
    counted = activation_bytes(model, *size, torch.float32, checkpointing)  # after: the step ran on a fresh heap
    print(
        f"SD-1.5 layout at 30 % width, {args.resolution}²×{args.num_frames}, batch 1, fp32, gradient checkpointing {'on' if checkpointing else 'off'}, one CPU step ({seconds:.1f} s)"
    )
    print("| | GiB |\n| --- | ---: |")
    print(f"| activations, estimated on meta tensors (fused attention) | {estimated / GIB:.3f} |")
    print(f"| activations autograd saved on this CPU | {counted / GIB:.3f} |")
    print(f"| estimate: activations + adapter gradients | {(estimated + gradients) / GIB:.3f} |")
    print(f"| measured: peak resident growth over forward + backward | {measured / GIB:.3f} |")
    print(f"estimate / measured = {(estimated + gradients) / measured:.2f}")
    return {"estimated": estimated, "saved": counted, "gradients": gradients, "measured": measured}


if __name__ == "__main__":
    torch.set_num_threads(2)  # the timings' machine: both cores (a test calling `main` keeps its own)
    main()
