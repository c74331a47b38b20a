"""How much of a U-Net step DeepCache skips: one video U-Net forward, whole and as a cached step, side by side.

    python benchmarks/deep_cache.py            # the embedded model's U-Net and one of Stable Diffusion 1.5's width
    python benchmarks/deep_cache.py --quick    # the test: tiny sizes

A cached step runs only the outermost blocks (`cache_branch_id` 0, or 1: one level deeper) and takes the deep
blocks' outputs kept at the last full step. The Stable Diffusion 1.5 U-Net has random weights (its speed does not
depend on them) and a fresh HARIVO adapter. Timed on CPU, median of 3 after a warm-up, guidance's two branches as
one batch of 2 videos. Quality is `benchmarks/fewer_steps.py`'s (the embedded model, DeepCache rows).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def time_call(call, repeats: int = 3) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_seconds(pipe, num_frames: int, latent: int, repeats: int) -> dict[str, float]:
    """One U-Net forward of a 2-video batch: whole, and cached with branch 0 and 1."""
    unet = pipe.video_unet
    sample = torch.randn(2, unet.config.in_channels, num_frames, latent, latent)
    text = torch.randn(2, 77, unet.config.cross_attention_dim)
    results = {"whole": time_call(lambda: unet(sample, 500, text), repeats)}
    levels = len(unet.base_unet.down_blocks)
    for branch in range(min(2, levels - 1)):
        pipe.enable_deep_cache(cache_interval=2, cache_branch_id=branch)
        with pipe._deep_cache_during_call():
            pipe._deep_cache_step(0, ())
            unet(sample, 500, text)  # the full step that keeps the deep features
            cached = lambda: (pipe._deep_cache_step(1, ()), unet(sample, 400, text))  # noqa: E731 (each a step)
            results[f"cached, branch {branch}"] = time_call(cached, repeats)
        pipe.disable_deep_cache()
    return results


def sd15_width_pipe():
    from accelerate.utils import set_seed
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from harivo import HarivoAdapter
    from harivo.pipelines import HarivoPipeline
    from harivo.training.estimate import SD15_UNET

    set_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET)
    adapter = HarivoAdapter.from_unet(unet.config, max_frames=32)
    return HarivoPipeline(None, None, None, unet, adapter, DDIMScheduler())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from harivo.generation import load_pipeline

    results = {}
    with torch.no_grad():
        embedded = load_pipeline(None, None)
        frames, latent = (4, 8) if args.quick else (16, 16)
        results[f"embedded model, 64 px x {frames} frames"] = step_seconds(
            embedded, frames, latent, 1 if args.quick else 3
        )
        if not args.quick:
            results["SD-1.5 width, 128 px x 8 frames"] = step_seconds(sd15_width_pipe(), 8, 16, 3)
    print("| U-Net | whole step (s) | cached, branch 0 | cached, branch 1 |\n| --- | ---: | ---: | ---: |")
    for name, seconds in results.items():
        whole = seconds["whole"]
        cells = [f"{seconds[key]:.2f} ({whole / seconds[key]:.1f}x)" if key in seconds else "-"
                 for key in ("cached, branch 0", "cached, branch 1")]  # fmt: skip
        print(f"| {name} | {whole:.2f} | {' | '.join(cells)} |")
    return results


if __name__ == "__main__":
    torch.set_num_threads(2)  # the timings' machine: both cores (a test calling `main` keeps its own)
    main()
