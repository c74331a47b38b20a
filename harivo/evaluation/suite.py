"""The Shapes-world evaluation: generate clips for two prompt groups over several seeds and score everything.

Groups (`shapes-world.md`): prompts *inside* the video training distribution, and prompts *outside* it, whose
attributes only the frozen image model saw. Every number is reported as the mean and spread over seeds: the
per-clip detector scores (`metrics.score_clip`) averaged per seed, diversity across seeds, and the FVD-analog
against rendered clips of the same prompts.
"""

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.shapes import DIRECTIONS, FULL_WORLD, IMAGE_WORLD, VIDEO_WORLD, ShapeScene, ShapesWorld, render_clip
from .classifier import ShapesVideoClassifier, load_shapes_classifier
from .detector import detect_clip
from .fvd import frechet_distance_from_features, shapes_features
from .metrics import score_clip

IN_DISTRIBUTION = "in video distribution"
OUT_OF_DISTRIBUTION = "outside video distribution"
TEXTURED = "textured backgrounds"
# What the table shows, in order, and which way is better.
HEADLINE_METRICS = {
    "fidelity": "higher",
    "fidelity_style": "higher",
    "texture_contrast": "higher",
    "background_change": "lower",
    "motion_correct": "higher",
    "identity": "higher",
    "area_variation": "lower",
    "background_flicker": "lower",
    "jerk": "lower",
    "diversity": "higher",
    "fvd": "lower",
}


def evaluation_prompts(num_per_group: int = 8, seed: int = 0, textured: bool = True) -> dict[str, list[str]]:
    """
    Fixed prompt groups, each direction equally often.

    Inside: compositions of the video world. Outside: compositions the image model learned (no held-out image
    composition) with at least one attribute the video data never shows. Textured backgrounds (with `textured`):
    the video world's shapes and colours on the striped and checkered backgrounds only the image model saw, so
    that what is measured is the background alone.
    """
    rng = np.random.default_rng(seed)
    inside = list(VIDEO_WORLD.scenes(with_motion=True))
    outside = [
        s
        for s in FULL_WORLD.scenes(with_motion=True)
        if not VIDEO_WORLD.contains(s) and not IMAGE_WORLD.is_held_out(s)
    ]
    groups = {
        IN_DISTRIBUTION: _pick(inside, num_per_group, rng),
        OUT_OF_DISTRIBUTION: _pick(outside, num_per_group, rng),
    }
    if textured:
        objects = ShapesWorld(shapes=VIDEO_WORLD.shapes, colours=VIDEO_WORLD.colours, styles=("striped", "checkered"))
        scenes = [s for s in objects.scenes(with_motion=True) if not IMAGE_WORLD.is_held_out(s)]
        shuffled = [scenes[i] for i in rng.permutation(len(scenes))]
        directions = itertools.islice(itertools.cycle(DIRECTIONS), num_per_group)
        groups[TEXTURED] = [  # the directions in turn, striped and checkered alternating
            [s for s in shuffled if (s.direction, s.style) == (d, ("striped", "checkered")[i % 2])][i // 4].caption
            for i, d in enumerate(directions)
        ]
    return groups


def _pick(scenes: list[ShapeScene], count: int, rng: np.random.Generator) -> list[str]:
    """`count` random captions, cycling through the directions."""
    shuffled = [scenes[i] for i in rng.permutation(len(scenes))]
    by_direction = {d: [s for s in shuffled if s.direction == d] for d in DIRECTIONS}
    directions = itertools.islice(itertools.cycle(DIRECTIONS), count)
    return [by_direction[d][i // len(DIRECTIONS)].caption for i, d in enumerate(directions)]


@dataclass
class EvalSettings:
    """How clips are generated for evaluation."""

    seeds: Sequence[int] = (0, 1, 2)
    num_frames: int = 16
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    guidance_rescale: float = 0.0
    mg_scale: float = 0.0
    mg_window: tuple[float, float] = (0.0, 0.5)
    motion_path_projection: float | None = None  # None: the pipeline's default (1 with a motion path predictor)
    batch_size: int = 8
    extra: dict = field(default_factory=dict)  # any other pipeline keyword


def generate_clips(pipe, prompts: Sequence[str], settings: EvalSettings, progress: bool = True) -> dict:
    """`{seed: [uint8 (F, H, W, 3) clip per prompt]}`; seed `s` of prompt `i` uses generator seed `s`."""
    pipe.set_progress_bar_config(disable=True)
    clips = {}
    bar = tqdm(total=len(settings.seeds) * len(prompts), desc="generate", disable=not progress)
    for seed in settings.seeds:
        clips[seed] = []
        for start in range(0, len(prompts), settings.batch_size):
            batch = list(prompts[start : start + settings.batch_size])
            generators = [torch.Generator().manual_seed(seed) for _ in batch]
            frames = pipe(
                batch,
                num_frames=settings.num_frames,
                num_inference_steps=settings.num_inference_steps,
                guidance_scale=settings.guidance_scale,
                guidance_rescale=settings.guidance_rescale,
                mg_scale=settings.mg_scale,
                motion_path_projection=settings.motion_path_projection,
                mg_window=settings.mg_window,
                generator=generators,
                output_type="np",
                **settings.extra,
            ).frames
            clips[seed].extend((np.asarray(f) * 255).round().clip(0, 255).astype(np.uint8) for f in frames)
            bar.update(len(batch))
    bar.close()
    return clips


def render_reference_clips(
    prompts: Sequence[str], seeds: Sequence[int], num_frames: int, resolution: int = 64, offset: int = 0
) -> dict:
    """Rendered ("real") clips of the same prompts, in the layout of `generate_clips`; `offset` picks other draws."""
    clips = {}
    for seed in seeds:
        clips[seed] = []
        for index, prompt in enumerate(prompts):
            rng = np.random.default_rng((seed + offset, index))
            clips[seed].append(render_clip(ShapeScene.from_caption(prompt), num_frames, rng, resolution)[0])
    return clips


@torch.no_grad()
def through_vae(clips: dict, vae, batch_size: int = 16) -> dict:
    """
    `clips` (the layout of `generate_clips`) encoded and decoded by `vae`: what a latent video model whose latents
    were exactly right would show. Rendered clips through it are the floor of the consistency metrics a model with
    this VAE can reach (the VAE redraws edges and textures a little differently as the object moves).

    Args:
        clips (`dict`): Seed -> list of `(F, H, W, 3)` uint8 clips.
        vae: A diffusers autoencoder (`AutoencoderKL`, or one whose `encode` returns `latents`).
        batch_size (`int`, defaults to 16): Frames per VAE call.
    """
    parameter = next(vae.parameters())
    result = {}
    for seed, videos in clips.items():
        result[seed] = []
        for video in videos:
            frames = torch.from_numpy(np.asarray(video)).permute(0, 3, 1, 2)
            decoded = []
            for chunk in frames.split(batch_size):
                pixels = (chunk.to(parameter.device, parameter.dtype) / 127.5) - 1
                encoded = vae.encode(pixels)
                latents = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
                decoded.append(vae.decode(latents).sample.float().clamp(-1, 1).cpu())
            pixels = ((torch.cat(decoded) + 1) * 127.5).round().to(torch.uint8)
            result[seed].append(pixels.permute(0, 2, 3, 1).numpy())
    return result


def diversity(clips_per_seed: Sequence[np.ndarray]) -> float:
    """Mean pairwise distance (pixels) between the first-frame object centres of one prompt's clips across seeds."""
    centers = [d.center for d in (detect_clip(clip[:1])[0] for clip in clips_per_seed) if d.found]
    if len(centers) < 2:
        return 0.0
    pairs = itertools.combinations(np.asarray(centers), 2)
    return float(np.mean([np.linalg.norm(a - b) for a, b in pairs]))


def _spread(values: Sequence[float]) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def score_clips(
    clips: dict,
    groups: dict[str, list[str]],
    classifier: ShapesVideoClassifier | None = None,
    reference: dict | None = None,
) -> dict:
    """
    Score clips laid out as `{seed: [clip per prompt]}` with prompts the concatenation of the groups.

    Returns:
        `dict`: per group, every metric as `{"mean", "std"}` over seeds (diversity: over prompts; FVD: one value
        over all seeds' clips, `std` 0), plus `num_clips`.
    """
    prompts = [p for group in groups.values() for p in group]
    seeds = list(clips)
    if any(len(clips[s]) != len(prompts) for s in seeds):
        raise ValueError("Every seed needs one clip per prompt, in the order of the groups.")
    classifier = classifier if classifier is not None else load_shapes_classifier()
    results, offset = {}, 0
    for name, group in groups.items():
        indices = range(offset, offset + len(group))
        offset += len(group)
        per_seed = []
        for seed in seeds:
            scores = [score_clip(clips[seed][i], ShapeScene.from_caption(prompts[i])) for i in indices]
            keys = dict.fromkeys(key for s in scores for key in s)  # texture_contrast: textured scenes only
            per_seed.append({key: float(np.mean([s[key] for s in scores if key in s])) for key in keys})
        group_result = {key: _spread([s[key] for s in per_seed]) for key in per_seed[0]}
        group_result["diversity"] = _spread([diversity([clips[s][i] for s in seeds]) for i in indices])
        if reference is not None:
            generated = [clips[s][i] for s in seeds for i in indices]
            real = [reference[s][i] for s in reference for i in indices]
            features = shapes_features(generated + real, classifier)
            fvd = frechet_distance_from_features(features[len(generated) :], features[: len(generated)])
            group_result["fvd"] = {"mean": fvd, "std": 0.0}
        group_result["num_clips"] = len(seeds) * len(group)
        results[name] = group_result
    return results


def format_table(rows: dict[str, dict], metrics: dict[str, str] = HEADLINE_METRICS) -> str:
    """Markdown: one table per prompt group, one row per method, `mean ± std` of each metric."""
    groups = list(next(iter(rows.values())))
    header = ["method"] + [f"{metric} {'↑' if better == 'higher' else '↓'}" for metric, better in metrics.items()]
    sections = []
    for group in groups:
        lines = [f"**{group}**", "", "| " + " | ".join(header) + " |", "|---" + "|---:" * len(metrics) + "|"]
        for method, result in rows.items():
            cells = [method]
            for metric in metrics:
                value = result.get(group, {}).get(metric)
                cells.append("–" if value is None else f"{value['mean']:.2f} ± {value['std']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def write_results(folder: str | Path, rows: dict[str, dict], extra: dict | None = None) -> Path:
    """Write `results.json` (every number) and `table.md` (the headline metrics) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"rows": rows, **(extra or {})}, indent=2) + "\n")
    (folder / "table.md").write_text(format_table(rows) + "\n")
    return folder
