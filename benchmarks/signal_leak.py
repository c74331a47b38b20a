"""Does a video model *make* motion, or *read* it from the signal its noise schedule leaves at the first step?

    python benchmarks/signal_leak.py                          # the embedded default model
    python benchmarks/signal_leak.py --base-model B --adapter A --clips 8

A noise schedule whose last training step is not pure noise (SD 1.5's keeps `alpha_bar = 0.0047` at t = 999)
trains the temporal layers on inputs that still hold a faint copy of the clip. If they learn to read the trajectory
from that copy, sampling from pure noise gives them nothing to read. This samples rendered clips of the Shapes video
world from the sampler's first timestep in four ways and scores the results with the world's detector:

- `pure noise`: normal sampling;
- `clip at the first step`: the clip noised to the first timestep, what training shows the model there;
- `motion part only`: only each frame's difference from the clip's mean frame, noised the same way;
- `clip, frame by frame`: as the second, with the temporal layers off (the image model alone).

If the second and third rows move the object the right way and the first does not, the model reads motion rather
than makes it. With a zero-terminal-SNR schedule the first step is pure noise and all rows but the first start
from the same input as it.
"""

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from harivo.data.shapes import VIDEO_WORLD, render_clip, to_model_range
from harivo.evaluation.metrics import mean_scores, score_clip
from harivo.generation import load_pipeline
from harivo.utils.text import encode_captions

CONDITIONS = ("pure noise", "clip at the first step", "motion part only", "clip, frame by frame")
METRICS = ("motion_correct", "travel", "jerk", "fidelity", "identity")


@torch.no_grad()
def _sample(pipe, latents, prompt_embeds, steps: int, guidance_scale: float, temporal: bool) -> np.ndarray:
    """DDIM-sample from `latents` (already the noisy start) with the pipeline's own guided prediction."""
    pipe._guidance_scale, pipe._guidance_rescale = guidance_scale, 0.0
    pipe.scheduler.set_timesteps(steps)
    context = nullcontext() if temporal else pipe.video_unet.temporal_layers_disabled()
    with context:
        for t in pipe.scheduler.timesteps:
            output = pipe._predict_noise(latents, t, prompt_embeds, None)
            latents = pipe.scheduler.step(output, t, latents).prev_sample
    video = pipe.video_processor.postprocess_video(video=pipe.decode_latents(latents, 16), output_type="np")
    return (np.asarray(video) * 255).round().clip(0, 255).astype(np.uint8)


def signal_leak(pipe, num_clips: int = 8, num_frames: int = 16, steps: int = 25, guidance_scale: float = 7.5,
                seed: int = 0) -> dict:  # fmt: skip
    """Scores (means over `num_clips` rendered clips) per condition, and the first timestep's `alpha_bar`."""
    rng = np.random.default_rng(seed)
    scenes = [VIDEO_WORLD.sample(rng, with_motion=True) for _ in range(num_clips)]
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    pixels = torch.stack([to_model_range(render_clip(s, num_frames, rng, resolution)[0]) for s in scenes])
    vae = pipe.vae
    with torch.no_grad():
        clean = vae.encode(pixels.flatten(0, 1).to(vae.device, vae.dtype)).latent_dist.mean
    clean = (clean * vae.config.scaling_factor).unflatten(0, (num_clips, num_frames)).transpose(1, 2)  # (N,C,F,h,w)
    captions = [scene.caption for scene in scenes]
    text = encode_captions(pipe.tokenizer, pipe.text_encoder, captions)
    prompt_embeds = torch.cat([encode_captions(pipe.tokenizer, pipe.text_encoder, [""] * num_clips), text])
    generator = torch.Generator().manual_seed(seed)
    warper = pipe.adapter.path_predictor
    if warper is None or not warper.config.warp_noise:
        noise = torch.randn(clean.shape, generator=generator)
    else:  # as the pipeline samples: warped along the path the prompt predicts
        noise = warper.noise(clean.shape, warper(text.float(), num_frames), generator)
    noise = pipe.adapter.mapping_network(noise.to(clean))
    pipe.scheduler.set_timesteps(steps)
    first = int(pipe.scheduler.timesteps[0])
    alpha_bar = pipe.scheduler.alphas_cumprod[first].to(clean)
    motion = clean - clean.mean(dim=2, keepdim=True)
    starts = {
        "pure noise": noise,
        "clip at the first step": alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise,
        "motion part only": alpha_bar.sqrt() * motion + (1 - alpha_bar).sqrt() * noise,
    }
    starts["clip, frame by frame"] = starts["clip at the first step"]
    results = {"first_timestep": first, "alpha_bar": float(alpha_bar), "clips": num_clips, "rows": {}}
    for name in CONDITIONS:
        clips = _sample(pipe, starts[name], prompt_embeds, steps, guidance_scale, temporal=name != CONDITIONS[-1])
        scores = mean_scores([score_clip(clip, scene) for clip, scene in zip(clips, scenes)])
        results["rows"][name] = {metric: scores.get(metric, 0.0) for metric in METRICS}
    return results


def format_results(results: dict) -> str:
    lines = [
        f"first timestep {results['first_timestep']}, alpha_bar {results['alpha_bar']:.2e}, {results['clips']} clips",
        "| start | " + " | ".join(METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for name, row in results["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.2f}" for m in METRICS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-model", help="Text-to-image model (default: the embedded Shapes model).")
    parser.add_argument("--adapter", help="HARIVO adapter (default: the embedded one).")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--output", help="Also write the results here as JSON.")
    args = parser.parse_args(argv)
    pipe = load_pipeline(args.base_model, args.adapter)
    pipe.set_progress_bar_config(disable=True)
    results = signal_leak(pipe, args.clips, args.num_frames, args.steps, args.guidance_scale)
    print(format_results(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
