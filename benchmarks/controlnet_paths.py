"""Following a ControlNet along paths the video data never had: HARIVO + the Shapes ControlNet vs the frozen image model
+ the same ControlNet frame by frame vs the AnimateDiff recipe + it; dense and on keyframes only, one net and two at
once (`--rows`), and the cost of a step.

    python benchmarks/controlnet_paths.py            # the embedded default model and Shapes ControlNet (~50 min, 2 CPUs)
    python benchmarks/controlnet_paths.py --quick    # tiny settings, a minute

Each clip's condition is the prompted object's silhouette along one of `harivo.evaluation.control.CONTROL_PATHS`
(diagonal, arc, zig-zag, slower and faster than the video data): the video data only ever moved an object straight
along an axis at 1.5-2.5 px a frame. Prompts name no motion; half are inside the video data, half outside it (a star,
yellow, magenta, textured backgrounds). Scored with `harivo.evaluation.control.control_scores`. Every row is cached in
`--output` keyed by its settings and the model files, so a rerun continues. The AnimateDiff-recipe row trains (or
reuses) the comparison table's adapter of that recipe, training seed 0, in `outputs/comparison`.
"""

import argparse
import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from harivo.data.shapes import ShapeScene
from harivo.defaults import default_controlnet_path, default_model_paths
from harivo.evaluation.control import CONTROL_PATHS, control_path, control_scores, silhouette_clip
from harivo.evaluation.metrics import mean_scores
from harivo.pipelines import HarivoControlNetPipeline
from harivo.schedulers import default_guidance_rescale

try:
    from benchmarks.results_page import publish
except ModuleNotFoundError:  # run as a script: benchmarks/ itself is on the path
    from results_page import publish

PROMPTS = {
    "inside": ["a large red circle on a plain black background", "a large blue square on a plain white background"],
    "outside": [
        "a large yellow star on a plain grey background",
        "a large magenta triangle on a striped black background",
    ],
}
KEYFRAMES = "keyframes"  # the first and last frame only
ROWS = {
    "T2I + ControlNet, frame by frame": {"frame_by_frame": True},
    "HARIVO + ControlNet": {},
    "HARIVO + ControlNet, keyframes only": {"keyframes": True},
    "HARIVO + ControlNet, keyframes + path from control": {"keyframes": True, "motion_path": "control"},
    "T2I + ControlNet frame by frame, keyframes only": {"frame_by_frame": True, "keyframes": True},
    "HARIVO + the ControlNet twice (0.5 + 0.5)": {"twice": True, "adapter": "twice"},
    "AnimateDiff recipe + ControlNet": {"adapter": "animatediff"},
    # Twice --num-frames, in long-video windows of --num-frames (stride a quarter of it): each window's ControlNet
    # reads its own frames' conditions
    "HARIVO + ControlNet, twice as long in windows": {"long": True},
    "HARIVO + ControlNet, keyframes only, twice as long in windows": {"keyframes": True, "long": True},
    "HARIVO + ControlNet, keyframes + path from control, twice as long in windows": {
        "keyframes": True,
        "motion_path": "control",
        "long": True,
    },
}
# What docs/results.md's table ran (about 50 min on 2 CPU cores, 25 of them training the AnimateDiff-recipe adapter)
DEFAULT_PATHS = ["diagonal", "arc", "zig-zag", "fast up-left"]
DEFAULT_ROWS = [
    name for name in ROWS if "twice" not in name and name != "T2I + ControlNet frame by frame, keyframes only"
]
METRICS = {
    "position_error": ("px", "lower"),
    "follow": ("", "higher"),
    "fidelity": ("", "higher"),
    "fidelity_shape": ("", "higher"),
    "fidelity_colour": ("", "higher"),
    "identity": ("", "higher"),
    "jerk": ("px", "lower"),
    "background_flicker": ("", "lower"),
    "keyframe_error": ("px", "lower"),
    "between_error": ("px", "lower"),
}


def fingerprint(*folders: Path) -> str:
    digest = hashlib.sha1()
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cases(args) -> list[tuple[str, str, str]]:
    """`(group, prompt, path)` of every call of a row, in the order its clips are stored (each call: every seed)."""
    return [(g, p, path) for g, prompts in PROMPTS.items() for p in prompts for path in args.paths]


def row_frames(name: str, args) -> int:
    """The frames of a row's clips: twice `--num-frames` for the long-video rows."""
    return args.num_frames * (2 if ROWS[name].get("long") else 1)


def controlled_frames(name: str, num_frames: int) -> list[int]:
    return [0, num_frames - 1] if ROWS[name].get("keyframes") else list(range(num_frames))


def run_row(pipe, name: str, args) -> tuple[np.ndarray, float]:
    """`(clips (calls * seeds, F, H, W, 3) uint8, seconds per clip)` of one row."""
    options = dict(ROWS[name])
    for key in ("adapter", "keyframes", "frame_by_frame", "twice", "long"):
        options.pop(key, None)
    num_frames = row_frames(name, args)
    controlled = controlled_frames(name, num_frames)
    clips, elapsed = [], 0.0
    for _, prompt, path_name in cases(args):
        scene = ShapeScene.from_caption(prompt)
        conditions = silhouette_clip(scene, control_path(path_name, num_frames))[controlled]
        kwargs = {"conditioning_frames": conditions, **options}
        if ROWS[name].get("keyframes"):
            kwargs["controlnet_frame_indices"] = controlled
        if ROWS[name].get("twice"):
            kwargs.update(conditioning_frames=[conditions, conditions], controlnet_conditioning_scale=[0.5, 0.5])
        bypass = pipe.video_unet.temporal_layers_disabled() if ROWS[name].get("frame_by_frame") else None
        if ROWS[name].get("long"):
            pipe.enable_free_noise(context_length=args.num_frames, context_stride=max(args.num_frames // 4, 1))
        start = time.perf_counter()
        with bypass or contextlib.nullcontext():
            frames = pipe(
                [prompt] * len(args.seeds),
                num_frames=num_frames,
                num_inference_steps=args.steps,
                guidance_rescale=default_guidance_rescale(pipe.scheduler),
                generator=[torch.Generator().manual_seed(seed) for seed in args.seeds],
                output_type="np",
                **kwargs,
            ).frames
        elapsed += time.perf_counter() - start
        pipe.disable_free_noise()
        clips += [(np.asarray(video) * 255).round().clip(0, 255).astype(np.uint8) for video in frames]
    return np.stack(clips), elapsed / len(clips)


def score_row(clips: np.ndarray, name: str, args) -> dict:
    """Mean scores per prompt group. With keyframes only, the path to follow is the straight line between the two
    keyframes' silhouettes (all that two frames say); otherwise the path the silhouettes were drawn along."""
    num_frames = row_frames(name, args)
    controlled = controlled_frames(name, num_frames)
    keyframes = bool(ROWS[name].get("keyframes"))
    scores = {group: [] for group in PROMPTS}
    for index, (group, prompt, path_name) in enumerate(cases(args)):
        centers = control_path(path_name, num_frames)
        if keyframes:
            progress = np.linspace(0.0, 1.0, num_frames)[:, None]
            centers = centers[0] + progress * (centers[-1] - centers[0])
        scene = ShapeScene.from_caption(prompt)
        for clip in clips[index * len(args.seeds) : (index + 1) * len(args.seeds)]:
            scores[group].append(control_scores(clip, scene, centers, controlled if keyframes else None))
    return {group: mean_scores(per_clip) for group, per_clip in scores.items()}


def row_file(output: Path, name: str, suffix: str) -> Path:
    return output / f"row-{hashlib.sha1(name.encode()).hexdigest()[:10]}{suffix}"


def step_cost(pipe, args) -> dict:
    """Seconds per denoising step, plain vs with one ControlNet on every frame vs on two frames (same call)."""
    scene = ShapeScene.from_caption(PROMPTS["inside"][0])
    silhouettes = silhouette_clip(scene, control_path("diagonal", args.num_frames))
    calls = {
        "plain step": {"controlnet_conditioning_scale": 0.0, "conditioning_frames": silhouettes},
        "ControlNet step (every frame)": {"conditioning_frames": silhouettes},
        "ControlNet step (2 keyframes)": {
            "conditioning_frames": silhouettes[[0, -1]],
            "controlnet_frame_indices": [0, args.num_frames - 1],
        },
    }
    costs = {}
    for label, kwargs in calls.items():
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            pipe(PROMPTS["inside"][0], num_frames=args.num_frames, num_inference_steps=args.steps,
                 generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs)  # fmt: skip
            runs.append((time.perf_counter() - start) / args.steps)
        costs[label] = min(runs)
    return costs


def figure(output: Path, args, rows: dict) -> None:
    """`figure.png`: the conditions of one prompt outside the video data along the arc, and each row's first clip."""
    from harivo.video_io import contact_sheet

    prompts = [p for group in PROMPTS.values() for p in group]
    prompt, path_name = PROMPTS["outside"][0], "arc" if "arc" in args.paths else args.paths[0]
    position = (prompts.index(prompt) * len(args.paths) + args.paths.index(path_name)) * len(args.seeds)
    scene = ShapeScene.from_caption(prompt)
    videos = [silhouette_clip(scene, control_path(path_name, args.num_frames))]
    labels = [f"condition: {path_name} ({prompt})"]
    for name in args.rows:
        clips = np.load(row_file(output, name, ".npz"))["clips"]
        videos.append(clips[position][:: row_frames(name, args) // args.num_frames])  # a long clip: every other frame
        labels.append(name)
    contact_sheet(videos, labels, scale=2).save(output / "figure.png")


def format_rows(rows: dict) -> str:
    lines = []
    for group in PROMPTS:
        header = ["method"] + [f"{m} {'↑' if better == 'higher' else '↓'}" for m, (_, better) in METRICS.items()]
        lines += [f"\n**{group} the video data**\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, row in rows.items():
            means = row["groups"][group]
            cells = [f"{means[m]:.2f}" if m in means else "–" for m in METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--paths", nargs="+", choices=list(CONTROL_PATHS), default=DEFAULT_PATHS)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=DEFAULT_ROWS)
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 frames, 3 steps, 2 paths.")
    parser.add_argument("--rescore", action="store_true", help="Score the cached clips again.")
    parser.add_argument("--publish", action="store_true", help="Also write the table into docs/results.md.")
    parser.add_argument("--output", default="outputs/controlnet_paths")
    args = parser.parse_args(argv)
    if args.publish and args.quick:
        parser.error("--publish writes the full run's numbers into docs/results.md: drop --quick")
    if args.quick:
        args.seeds, args.num_frames, args.steps, args.paths = [0], 4, 3, ["diagonal", "arc"]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    base, adapter = default_model_paths()
    controlnet = default_controlnet_path()
    pipe = HarivoControlNetPipeline.from_pretrained(base, adapter=adapter, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    model = fingerprint(base, adapter, controlnet)
    rows, pipes = {}, {None: pipe}
    for name in args.rows:
        settings = {"row": ROWS[name], "seeds": args.seeds, "steps": args.steps, "frames": args.num_frames,
                    "paths": args.paths, "prompts": PROMPTS, "model": model, "quick": args.quick}  # fmt: skip
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        cached, clips_file = row_file(output, name, ".json"), row_file(output, name, ".npz")
        if cached.is_file() and clips_file.is_file() and json.loads(cached.read_text()).get("key") == key:
            rows[name] = json.loads(cached.read_text())
            if args.rescore:
                rows[name]["groups"] = score_row(np.load(clips_file)["clips"], name, args)
                cached.write_text(json.dumps(rows[name], indent=1))
            continue
        print(f"== {name}", flush=True)
        which = ROWS[name].get("adapter")
        if which == "twice" and which not in pipes:  # two nets: the same Shapes ControlNet twice
            pipes[which] = HarivoControlNetPipeline.from_pipe(pipe, controlnet=[pipe.controlnet, pipe.controlnet])
            pipes[which].set_progress_bar_config(disable=True)
        if which not in pipes:  # the comparison table's AnimateDiff-recipe adapter (trained once, ~25 min on 2 CPUs)
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also when run as a script
            from benchmarks.comparison_table import animatediff_adapter

            adapter_folder = animatediff_adapter(quick=args.quick)
            pipes[which] = HarivoControlNetPipeline.from_pretrained(
                base, adapter=adapter_folder, controlnet=controlnet
            )
            pipes[which].set_progress_bar_config(disable=True)
        clips, seconds = run_row(pipes[which], name, args)
        np.savez_compressed(clips_file, clips=clips)
        rows[name] = {"key": key, "name": name, "seconds_per_clip": seconds, "groups": score_row(clips, name, args)}
        cached.write_text(json.dumps(rows[name], indent=1))
    figure(output, args, rows)
    table = format_rows(rows)
    costs = step_cost(pipe, args)
    cost_lines = "\n".join(f"- {label}: {seconds * 1000:.0f} ms" for label, seconds in costs.items())
    text = (
        f"{len(args.seeds)} seeds x {sum(map(len, PROMPTS.values()))} prompts x {len(args.paths)} paths"
        f" ({', '.join(args.paths)}), {args.num_frames} frames, {args.steps} steps\n{table}\n\nCost per denoising step"
        f" (batch of 1, classifier-free guidance, best of 3):\n{cost_lines}\n"
    )
    (output / "results.md").write_text(text)
    print(text)
    if args.publish:
        publish("controlnet_paths", table)
    return rows


if __name__ == "__main__":
    main()
