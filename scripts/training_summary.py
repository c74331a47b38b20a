"""Print a markdown summary of Shapes-world training runs (for the default model's card).

python scripts/training_summary.py outputs/shapes/vae outputs/shapes/t2i outputs/shapes/harivo
"""

import json
import sys
from pathlib import Path

import yaml

LOSS_KEYS = ("total", "mse", "l1", "kl", "diffusion", "caption_content", "reg", "trsa", "dc")


def summarize(run: Path) -> dict:
    config = yaml.safe_load((run / "config.yaml").read_text())
    records = [json.loads(line) for line in (run / "logs.jsonl").read_text().splitlines()]
    records = [r for r in records if "total" in r]
    last = records[-max(1, len(records) // 10) :]  # the last tenth of the run
    losses = {k: sum(r[k] for r in last) / len(last) for k in LOSS_KEYS if k in last[-1]}
    throughput = sum(r["samples_per_s"] for r in records[1:] or records) / len(records[1:] or records)
    unit = "clips" if config["stage"] == "harivo" else "images"
    return {
        "stage": config["stage"],
        "steps": records[-1]["step"],
        "batch": config["batch_size"],
        "wall_min": records[-1]["elapsed_s"] / 60,
        "throughput": f"{throughput:.1f} {unit}/s",
        "losses": ", ".join(f"{k} {v:.4f}" for k, v in losses.items()),
    }


def main(runs: list[str]) -> None:
    print("| stage | steps | batch | wall time (min) | throughput | final losses (mean of the last 10%) |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for run in runs:
        s = summarize(Path(run))
        print(
            f"| {s['stage']} | {s['steps']} | {s['batch']} | {s['wall_min']:.1f} | {s['throughput']} | {s['losses']} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
