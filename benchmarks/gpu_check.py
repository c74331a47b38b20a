"""
The GPU numbers, in one short run (at most ~5 minutes on one GPU): what SD-1.5 users would run.

    python benchmarks/gpu_check.py [--out results.md]

1. Sampling at 512x512 x 16 frames, 25 steps, fp16, an SD-1.5-size U-Net, VAE and text width with random weights
   (`bench_sampling.py --size sd15`): diffusers' `AnimateDiffPipeline` against `HarivoPipeline` with MG off, the
   motion-path projection, MG with the full gradient (first half / every step), MG with the `x0` gradient, and MG off
   with `torch.compile` and with `enable_model_cpu_offload`; seconds per video and peak memory.
2. A training step at 256x256 x 16 frames with gradient checkpointing and bf16 autocast (`training_cost.py`): the
   AnimateDiff recipe against every HARIVO loss term.

Each part runs in its own process with a time limit; what finished is printed (and written to `--out`).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLING = "--size sd15 --device cuda --dtype float16 --frames 16 --steps 25 --repeats 1 --variants"
TRAINING = "--device cuda --side 256 --frames 16 --clips 1 --checkpointing --mixed-precision --steps 2"
PARTS = {  # script, its arguments, its time limit in seconds
    "sampling": ([str(HERE / "bench_sampling.py"), *SAMPLING.split()], 200),
    "training": ([str(HERE / "training_cost.py"), *TRAINING.split()], 100),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="Also write the report here.")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; this script measures a GPU (see bench_sampling.py for CPU).")
    report = [f"# GPU check: {torch.cuda.get_device_name()}, torch {torch.__version__}", ""]
    print(report[0], flush=True)
    for part in args.parts:
        command, limit = PARTS[part]
        start = time.perf_counter()
        try:
            result = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=limit)
            output, note = result.stdout, "" if result.returncode == 0 else f" (exit {result.returncode})"
            if result.returncode:
                output += "\n" + "\n".join(result.stderr.strip().splitlines()[-5:])
        except subprocess.TimeoutExpired as error:
            output, note = (
                (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (error.stdout or ""),
                (f" (stopped at its {limit} s limit)"),
            )
        section = [f"## {part}{note}, {time.perf_counter() - start:.0f} s", "", "```", output.strip(), "```", ""]
        print("\n".join(section), flush=True)
        report += section
    if args.out:
        Path(args.out).write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
