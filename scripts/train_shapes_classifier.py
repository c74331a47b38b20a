"""Train the Shapes-world video classifier behind the FVD-analog and ship it in the package.

    python scripts/train_shapes_classifier.py            # ~2000 steps, a few minutes on 2 CPU cores

Prints the accuracy of every head on freshly rendered clips it never saw, then saves the weights to
`harivo/default_model/shapes_classifier` (or `--output`).
"""

import argparse
import json
import time

import numpy as np
import torch

from harivo.evaluation.classifier import (
    CLASSIFIER_DIR,
    classifier_accuracy,
    render_labelled_batch,
    train_shapes_classifier,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", default=str(CLASSIFIER_DIR))
    args = parser.parse_args()
    start = time.perf_counter()
    model = train_shapes_classifier(steps=args.steps, batch_size=args.batch_size)
    minutes = (time.perf_counter() - start) / 60
    rng = np.random.default_rng(12345)  # held-out clips: another seed than training's
    accuracy = {}
    for num_frames in (8, 16):
        clips, labels = render_labelled_batch(rng, 256, num_frames)
        accuracy[f"{num_frames} frames"] = classifier_accuracy(model, clips, labels)
    print(json.dumps({"steps": args.steps, "minutes": round(minutes, 1), "accuracy": accuracy}, indent=2))
    model.save_pretrained(args.output)
    print(f"saved to {args.output}")


if __name__ == "__main__":
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    main()
