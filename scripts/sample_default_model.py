"""Generate with the embedded default model: the README's figure and the model card's detector scores.

    python scripts/sample_default_model.py --figure docs/images/default_model_samples.png --seeds 4

Prompts come in three groups (`shapes-world.md`): inside the video training distribution, outside it (attributes
only the frozen image model saw), and textured backgrounds (the video data's objects on striped and checkered
backgrounds). Video scores are `harivo eval`'s (mean and spread over seeds) on
these hand-picked prompts; the image model is scored on seen and held-out compositions.
"""

import argparse
import json
import time

import numpy as np
import torch

from harivo import HarivoPipeline
from harivo.data import VIDEO_WORLD, ShapeScene
from harivo.defaults import default_model_paths, load_default_pipeline
from harivo.evaluation.metrics import mean_scores, score_clip
from harivo.evaluation.suite import (
    IN_DISTRIBUTION,
    OUT_OF_DISTRIBUTION,
    TEXTURED,
    EvalSettings,
    generate_clips,
    render_reference_clips,
    score_clips,
)
from harivo.schedulers import default_guidance_rescale
from harivo.video_io import contact_sheet

PROMPTS = {
    IN_DISTRIBUTION: [
        "a small red circle moving left on a plain black background",
        "a large green square moving up on a plain white background",
        "a large blue triangle moving right on a plain grey background",
        "a small green circle moving down on a plain black background",
    ],
    OUT_OF_DISTRIBUTION: [
        "a large yellow star moving right on a plain black background",
        "a large red square moving left on a striped white background",
        "a small magenta triangle moving up on a checkered grey background",
        "a large cyan circle moving down on a plain white background",
    ],
    TEXTURED: [  # the video data's shapes and colours on backgrounds only the image model saw
        "a large blue square moving left on a checkered white background",  # a composition the image model never saw
        "a large red circle moving right on a striped black background",
        "a small green triangle moving up on a striped white background",
        "a large red square moving down on a checkered grey background",
    ],
}


def score_text_to_image(base, num_prompts: int, steps: int, guidance_scale: float = 7.5) -> dict:
    """Image fidelity of the base model on seen compositions and on the held-out ones (never seen together)."""
    from diffusers import StableDiffusionPipeline

    from harivo.data import FULL_WORLD, IMAGE_WORLD

    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    held_out = [s for s in FULL_WORLD.scenes(with_motion=False) if IMAGE_WORLD.is_held_out(s)]
    groups = {
        "seen compositions": [IMAGE_WORLD.sample(rng, with_motion=False) for _ in range(num_prompts)],
        "held-out compositions": [held_out[i] for i in rng.choice(len(held_out), num_prompts, replace=False)],
    }
    results = {}
    for group, scenes in groups.items():
        images = pipe(
            [scene.caption for scene in scenes],
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            guidance_rescale=default_guidance_rescale(pipe.scheduler),
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images
        images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        results[group] = mean_scores([score_clip(image[None], scene) for image, scene in zip(images, scenes)])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", help="Write a contact sheet (one row per prompt, first seed) here.")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--mg-scale", type=float, default=0.0)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--json", help="Write the scores here.")
    parser.add_argument("--t2i-prompts", type=int, default=24, help="Prompts per group for the image model.")
    parser.add_argument("--base-model", help="Score this base model instead of the default one.")
    parser.add_argument("--adapter", help="... with this adapter.")
    parser.add_argument("--t2i-only", action="store_true", help="Score the text-to-image model only.")
    args = parser.parse_args()
    base = args.base_model or default_model_paths()[0]
    if args.t2i_only:
        print(json.dumps(score_text_to_image(base, args.t2i_prompts, args.steps, args.guidance_scale), indent=2))
        return

    if args.base_model:
        pipe = HarivoPipeline.from_pretrained(args.base_model, adapter=args.adapter, torch_dtype=torch.float32)
    else:
        pipe = load_default_pipeline()
    for group, prompts in PROMPTS.items():
        for prompt in prompts:
            assert VIDEO_WORLD.contains(ShapeScene.from_caption(prompt)) == (group == IN_DISTRIBUTION), prompt
    settings = EvalSettings(
        seeds=tuple(range(args.seeds)),
        num_frames=args.num_frames,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        guidance_rescale=default_guidance_rescale(pipe.scheduler),
        mg_scale=args.mg_scale,
    )
    prompts = [p for group in PROMPTS.values() for p in group]
    start = time.perf_counter()
    clips = generate_clips(pipe, prompts, settings)
    elapsed = time.perf_counter() - start
    reference = render_reference_clips(prompts, settings.seeds, settings.num_frames, offset=1000)
    results = score_clips(clips, PROMPTS, reference=reference)
    results["seconds_per_clip"] = elapsed / (len(prompts) * args.seeds)
    results["text_to_image"] = score_text_to_image(base, args.t2i_prompts, args.steps, args.guidance_scale)
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    if args.figure:
        contact_sheet(clips[0], prompts, scale=1, max_frames=8, long_exposure=True).save(args.figure)
        print(f"Wrote {args.figure}")


if __name__ == "__main__":
    main()
