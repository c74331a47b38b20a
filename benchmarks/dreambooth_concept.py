"""DreamBooth under video, in the Shapes world: teach the base model a shape no data had, animate it with the shipped
adapter unchanged.

    python benchmarks/dreambooth_concept.py            # ~40 min on 2 CPU cores
    python benchmarks/dreambooth_concept.py --quick    # the same pipeline on tiny settings (a minute)

1. Renders 20 still images of a heart (`render_concept_images`; "heart" is in no caption, image or clip of the
   world), captioned with the identifier "v" in the shape's place, and 20 of the world's shapes in a colour no
   caption has (orange), named "q".
2. Trains `configs/shapes/dreambooth.yaml` on the embedded base: the heart with a full fine-tune and with a rank-4
   LoRA, and the orange style with a rank-4 LoRA.
3. Generates videos with the embedded adapter, unchanged, and scores them with the detector (the heart added to
   its templates): the new concept moving (fine-tuned base under video vs the same base frame by frame), and the
   world's own shapes moving on the fine-tuned base vs the original (prior preservation).
Writes `results.json` and `table.md` into `--output`.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.state import AcceleratorState

from harivo import HarivoPipeline
from harivo.data.shapes import ShapeScene, render_concept_images
from harivo.defaults import DEFAULT_MODEL_DIR
from harivo.evaluation.metrics import score_clip
from harivo.training import Trainer, load_config

try:
    from benchmarks.results_page import publish
except ModuleNotFoundError:  # run as a script: benchmarks/ itself is on the path
    from results_page import publish

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "shapes" / "dreambooth.yaml"
CONCEPT = [  # the new shape, named by the identifier "v": (prompt, the scene it asks for)
    (
        "a large red v moving right on a plain black background",
        ShapeScene("heart", "red", "large", "black", "plain", "right"),
    ),
    (
        "a large blue v moving left on a plain white background",
        ShapeScene("heart", "blue", "large", "white", "plain", "left"),
    ),
    (
        "a large yellow v moving down on a striped black background",
        ShapeScene("heart", "yellow", "large", "black", "striped", "down"),
    ),
    (
        "a large green v moving up on a plain grey background",
        ShapeScene("heart", "green", "large", "grey", "plain", "up"),
    ),
]
STYLE = [  # the new palette colour (orange), named by the identifier "q"
    ("a large q circle moving right on a plain black background", ShapeScene("circle", "orange", "large", "black", "plain", "right")),
    ("a large q square moving left on a plain white background", ShapeScene("square", "orange", "large", "white", "plain", "left")),
    ("a large q star moving down on a striped black background", ShapeScene("star", "orange", "large", "black", "striped", "down")),
    ("a large q triangle moving up on a plain grey background", ShapeScene("triangle", "orange", "large", "grey", "plain", "up")),
]  # fmt: skip
KNOWN = [(p, ShapeScene.from_caption(p)) for p in (
    "a large red circle moving right on a plain black background",
    "a large blue square moving left on a plain white background",
    "a large yellow star moving down on a striped black background",
    "a large green triangle moving up on a plain grey background",
)]  # fmt: skip
# What each model is scored on: (group, prompts, frame by frame)
PLAN = {
    "original base": [("heart", CONCEPT, False), ("orange", STYLE, False), ("known shapes", KNOWN, False)],
    "DreamBooth, full": [("heart", CONCEPT, False), ("heart", CONCEPT, True), ("known shapes", KNOWN, False)],
    "DreamBooth, LoRA rank 4": [("heart", CONCEPT, False), ("heart", CONCEPT, True), ("known shapes", KNOWN, False)],
    "style LoRA rank 4 (orange)": [("orange", STYLE, False), ("orange", STYLE, True), ("known shapes", KNOWN, False)],
}
LORA = ["dreambooth.lora_rank=4", "dreambooth.train_text_encoder=false", "optim.learning_rate=1e-3"]
METRICS = ("fidelity", "fidelity_shape", "fidelity_colour", "motion_correct", "identity", "background_flicker", "jerk")


def scores(pipe, prompts, seeds, frame_by_frame=False, **kwargs) -> dict:
    """Mean detector scores of `prompts` (`(prompt, scene)` pairs) over `seeds`, with the video model or with its
    temporal layers off (the same base frame by frame)."""
    rows = []
    texts = [prompt for prompt, _ in prompts]
    for seed in seeds:
        generator = [torch.Generator().manual_seed(seed * 100 + i) for i in range(len(prompts))]
        if frame_by_frame:
            with pipe.video_unet.temporal_layers_disabled():
                frames = pipe(
                    texts, generator=generator, motion_path_projection=0.0, output_type="np", **kwargs
                ).frames
        else:
            frames = pipe(texts, generator=generator, output_type="np", **kwargs).frames
        for clip, (_, scene) in zip(frames, prompts):
            rows.append(score_clip(np.round(clip * 255).astype(np.uint8), scene))
    return {m: float(np.mean([r[m] for r in rows if m in r])) for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=None)
    parser.add_argument("--publish", action="store_true", help="Also write the table into docs/results.md.")
    args = parser.parse_args()
    if args.publish and args.quick:
        parser.error("--publish writes the full run's numbers into docs/results.md: drop --quick")
    output = Path(args.output or ("outputs/dreambooth-quick" if args.quick else "outputs/dreambooth"))
    render_concept_images(output / "heart_images", "v", shape="heart", count=20)
    render_concept_images(output / "orange_images", "q", colour="orange", count=20)
    base, adapter = DEFAULT_MODEL_DIR / "base", DEFAULT_MODEL_DIR / "adapter"
    steps = 4 if args.quick else 1000
    runs = {
        "full": ("heart_images", "v", []),
        "lora": ("heart_images", "v", LORA),
        "style": ("orange_images", "q", LORA),
    }
    models, cost = {}, {}
    for name, (images, identifier, extra) in runs.items():
        overrides = [f"output_dir={output / name}", f"dreambooth.instance_data={output / images}",
                     f"dreambooth.base_model={base}", f"dreambooth.identifier={identifier}", f"max_steps={steps}",
                     f"dreambooth.class_data={output / 'class_images'}", "dreambooth.validation_prompts=[]", *extra]  # fmt: skip
        if args.quick:
            overrides += ["dreambooth.num_class_images=4", "dreambooth.class_generation_steps=2", "checkpoint_every=2"]
        start = time.perf_counter()
        models[name] = Trainer(load_config(CONFIG, overrides), resume=True).train()
        cost[f"train_{name}_s"] = time.perf_counter() - start
        AcceleratorState._reset_state(reset_partial_state=True)
    pipes = {
        "original base": HarivoPipeline.from_pretrained(base, adapter=adapter),
        "DreamBooth, full": HarivoPipeline.from_pretrained(models["full"], adapter=adapter),
    }
    for name, key in (("DreamBooth, LoRA rank 4", "lora"), ("style LoRA rank 4 (orange)", "style")):
        pipes[name] = HarivoPipeline.from_pretrained(base, adapter=adapter)
        pipes[name].load_lora_weights(models[key], adapter_name=key)
    seeds = (0,) if args.quick else (0, 1, 2)
    kwargs = {"num_frames": 4 if args.quick else 16, "num_inference_steps": 2 if args.quick else 25}
    sizes = {"full U-Net": models["full"] / "unet", "LoRA": models["lora"]}
    results = {
        "cost": cost, "steps": steps, "seeds": list(seeds),
        "sizes_mb": {k: sum(f.stat().st_size for f in v.rglob("*.safetensors")) / 1e6 for k, v in sizes.items()},
    }  # fmt: skip
    lines = ["| base model | prompts | " + " | ".join(METRICS) + " |", "|---|---|" + "---:|" * len(METRICS)]
    for name, plan in PLAN.items():
        pipe = pipes[name]
        pipe.set_progress_bar_config(disable=True)
        for group, prompts, frame_by_frame in plan:
            label = f"{group}, {'frame by frame' if frame_by_frame else 'video'}"
            start = time.perf_counter()
            values = scores(pipe, prompts, seeds, frame_by_frame, **kwargs)
            cost[f"sample {name} {label} s"] = time.perf_counter() - start
            results.setdefault(name, {})[label] = values
            lines.append(f"| {name} | {label} | " + " | ".join(f"{values[m]:.2f}" for m in METRICS) + " |")
            print(lines[-1], flush=True)
            (output / "results.json").write_text(json.dumps(results, indent=2))
    (output / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.publish:
        publish("dreambooth_concept", "\n".join(lines))


if __name__ == "__main__":
    main()
