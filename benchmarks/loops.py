"""Seamless loops on the embedded default model: the jump from the last frame to the first against the jumps
between neighbouring frames, with and without `closed_loop`, for each window blend.

    python benchmarks/loops.py            # 32 frames, windows of 16 every 4, 3 prompts x 2 seeds (minutes)
    python benchmarks/loops.py --quick    # tiny settings

`seam / neighbours` is the mean absolute pixel change from the last frame to the first over the mean change between
neighbouring frames (0-255 scale): 1 or less is a loop the eye does not see restart.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPTS = (
    "a large red circle moving right on a plain black background",
    "a small green square moving up on a plain white background",
    "a large yellow star on a striped black background",
)
ROWS = {
    "open clip (pyramid)": {"closed_loop": False, "weighting_scheme": "pyramid"},
    "loop, pyramid": {"closed_loop": True, "weighting_scheme": "pyramid"},
    "loop, overlap-linear": {"closed_loop": True, "weighting_scheme": "overlap-linear"},
    "loop, gaussian": {"closed_loop": True, "weighting_scheme": "gaussian"},
}


def seam_ratio(frames: np.ndarray) -> tuple[float, float]:
    """`(seam, neighbours)`: mean |last - first| and the mean |f[i+1] - f[i]|, 0-255."""
    frames = frames.astype(np.float32) * 255
    neighbours = float(np.abs(np.diff(frames, axis=0)).mean())
    return float(np.abs(frames[-1] - frames[0]).mean()), neighbours


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from harivo.generation import load_pipeline
    from harivo.schedulers import default_guidance_rescale, make_scheduler

    pipe = load_pipeline(None, None)
    pipe.scheduler = make_scheduler("dpm-solver++", pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    num_frames, length, stride, steps = (8, 4, 2, 3) if args.quick else (32, 16, 4, 15)
    prompts, seeds = (PROMPTS[:1], (0,)) if args.quick else (PROMPTS, (0, 1))
    results = {}
    for name, options in ROWS.items():
        pipe.enable_free_noise(context_length=length, context_stride=stride, **options)
        seams, neighbours, start = [], [], time.perf_counter()
        for prompt in prompts:
            for seed in seeds:
                frames = pipe(prompt, num_frames=num_frames, num_inference_steps=steps, output_type="np",
                              guidance_rescale=default_guidance_rescale(pipe.scheduler),
                              generator=torch.Generator().manual_seed(seed)).frames[0]  # fmt: skip
                seam, neighbour = seam_ratio(frames)
                seams.append(seam)
                neighbours.append(neighbour)
        results[name] = {
            "seam": float(np.mean(seams)), "neighbours": float(np.mean(neighbours)),
            "ratio": float(np.mean(np.array(seams) / np.maximum(neighbours, 1e-6))),
            "seconds_per_clip": (time.perf_counter() - start) / len(seams),
        }  # fmt: skip
    pipe.disable_free_noise()
    print(f"{num_frames} frames, windows of {length} every {stride}, {len(prompts)} prompts x {len(seeds)} seeds")
    print(
        "| clip | seam (last -> first) | neighbours | seam / neighbours | s / clip |\n| --- | ---: | ---: | ---: | ---: |"
    )
    for name, row in results.items():
        print(
            f"| {name} | {row['seam']:.1f} | {row['neighbours']:.1f} | {row['ratio']:.2f} | {row['seconds_per_clip']:.1f} |"
        )
    return results


if __name__ == "__main__":
    main()
