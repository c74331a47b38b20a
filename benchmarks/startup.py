"""
How long the command line takes to answer and how much of `harivo generate`'s wall time is sampling, side by side.

    python benchmarks/startup.py            # 16 frames, the embedded model's recommended sampling, 3 runs each
    python benchmarks/startup.py --quick    # 4 frames, 3 steps, 1 run

Each number is the median of fresh processes (what a user waits for): `harivo --help`, `harivo generate --help`,
importing the libraries `generate` needs, and `harivo generate` itself next to the sampling time it reports in its
settings file (`resolved.sampling_seconds`).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from benchmarks.results_page import publish
except ModuleNotFoundError:  # run as a script: benchmarks/ itself is on the path
    from results_page import publish

HARIVO = [sys.executable, "-m", "harivo.cli"]
PROMPT = "a large red circle moving right on a plain white background"


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 frames, 3 steps, one run of each.")
    parser.add_argument("--runs", type=int, default=None, help="Runs per number (default: 3, or 1 with --quick).")
    parser.add_argument("--publish", action="store_true", help="Also write the table into docs/results.md.")
    args = parser.parse_args()
    if args.publish and args.quick:
        parser.error("--publish writes the full run's numbers into docs/results.md: drop --quick")
    runs = args.runs or (1 if args.quick else 3)
    frames, steps = (4, 3) if args.quick else (16, None)

    rows: dict[str, float] = {}
    rows["harivo --help"] = statistics.median(wall([*HARIVO, "--help"]) for _ in range(runs))
    rows["harivo generate --help"] = statistics.median(wall([*HARIVO, "generate", "--help"]) for _ in range(runs))
    rows["python -c 'import harivo'"] = statistics.median(
        wall([sys.executable, "-c", "import harivo"]) for _ in range(runs)
    )
    imports = [sys.executable, "-c", "import harivo.pipelines, harivo.video_io"]
    rows["importing torch, diffusers, transformers, harivo.pipelines"] = statistics.median(
        wall(imports) for _ in range(runs)
    )
    walls, samplings = [], []
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "clip.mp4"
        for _ in range(runs):
            command = [*HARIVO, "generate", PROMPT, "-o", str(video), "--num-frames", str(frames)]
            command += ["--steps", str(steps)] if steps else []  # else the sampling the adapter recommends
            walls.append(wall(command))
            samplings.append(json.loads(video.with_name("clip.mp4.json").read_text())["resolved"]["sampling_seconds"])
    generate, sampling = statistics.median(walls), statistics.median(samplings)
    rows[f"harivo generate ({frames} frames, {steps or 'recommended'} steps, embedded model): wall"] = generate
    rows["  of which sampling (the pipeline call)"] = sampling
    rows["  of which the rest (start, imports, loading, writing)"] = generate - sampling

    width = max(len(name) for name in rows)
    lines = [f"| {'what':<{width}} | seconds |", f"|{'-' * (width + 2)}|--------:|"]
    lines += [f"| {name:<{width}} | {seconds:7.2f} |" for name, seconds in rows.items()]
    print("\n".join(lines))
    if args.publish:
        publish("startup", "\n".join(lines))


if __name__ == "__main__":
    main()
