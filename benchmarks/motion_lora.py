"""A motion the video data never had, learned from 3 clips (`harivo motion-lora`) and applied to other subjects.

The embedded model's video data only ever moved an object straight along an axis. This renders 3 reference clips of
a diagonal (down-right, 1.6 px a frame: a red circle, a blue square, a green triangle on plain backgrounds), trains a
motion LoRA on them with the CLI's defaults, and samples prompts of other shapes, colours and backgrounds that name
no motion, side by side: the model alone; the clips' path alone (`--motion`, no LoRA); the LoRA's weights alone
(with the path the adapter predicts from the prompt); the LoRA as `--lora` loads it (its weights and its path); and
the model and the LoRA's weights with the motion-path projection off (what the temporal layers do on their own).
Scored with `harivo.evaluation`: the path error (the detected centre's distance from where the clips' path, started
at the object's first position, puts it) and the share of frames within 4 px of it, fidelity, identity, and the
background's change.

    python benchmarks/motion_lora.py            # ~10 min on 2 CPU cores (the LoRA is cached in --output)
    python benchmarks/motion_lora.py --quick    # tiny settings, a minute
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from harivo.data.shapes import ShapeScene, render_frame
from harivo.defaults import load_default_pipeline
from harivo.evaluation.control import control_scores
from harivo.evaluation.detector import detect_clip
from harivo.evaluation.metrics import mean_scores
from harivo.loras import carried_motion_path
from harivo.schedulers import default_guidance_rescale, make_scheduler
from harivo.video_io import contact_sheet, save_video

try:
    from benchmarks.results_page import publish
except ModuleNotFoundError:  # run as a script: benchmarks/ itself is on the path
    from results_page import publish

REFERENCES = [
    "a large red circle on a plain black background",
    "a large blue square on a plain white background",
    "a large green triangle on a plain grey background",
]
VELOCITY = (1.6, 1.6)  # pixels a frame: down-right
START = (14.0, 14.0)
PROMPTS = {
    "inside": ["a large blue circle on a plain grey background", "a large red triangle on a plain white background"],
    "outside": ["a large yellow star on a striped black background", "a large magenta circle on a checkered white background"],
}  # fmt: skip
# Each row: whether the LoRA's weights are loaded, and the call's motion-path settings ("path": the LoRA's carried path)
ROWS = {
    "model alone": (False, {}),
    "model alone, no path projection": (False, {"motion_path_projection": 0.0}),
    "the clips' path alone (--motion)": (False, {"motion_path": "path"}),
    "motion LoRA weights alone": (True, {}),
    "motion LoRA weights, no path projection": (True, {"motion_path_projection": 0.0}),
    "motion LoRA (--lora)": (True, {"motion_path": "path"}),
}
METRICS = {"path_error": "lower", "follow": "higher", "fidelity": "higher", "identity": "higher",
           "background_change": "lower"}  # fmt: skip


def reference_clips(folder: Path, num_frames: int) -> None:
    """The 3 reference clips (and their captions) of the diagonal motion."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, caption in enumerate(REFERENCES):
        scene = ShapeScene.from_caption(caption)
        frames = [
            render_frame(scene, (START[0] + VELOCITY[0] * t, START[1] + VELOCITY[1] * t)) for t in range(num_frames)
        ]
        save_video(np.stack(frames), folder / f"clip{index}.mp4")
        (folder / f"clip{index}.txt").write_text(caption)


def train_lora(output: Path, args) -> Path:
    """The motion LoRA, trained once (a rerun with the same settings reuses it)."""
    from harivo.cli import main as harivo

    final = output / "lora" / "final"
    settings = {"steps": args.steps, "frames": args.num_frames, "quick": args.quick}
    stamp = output / "lora" / "settings.json"
    if final.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return final
    reference_clips(output / "clips", args.num_frames + 8)
    start = time.perf_counter()
    harivo(["motion-lora", "--videos", str(output / "clips"), "--max-steps", str(args.steps), "--num-frames",
            str(args.num_frames), "-o", str(output / "lora"), "num_validation_samples=0"])  # fmt: skip
    stamp.write_text(json.dumps(settings))
    (output / "lora" / "seconds.txt").write_text(f"{time.perf_counter() - start:.0f}")
    return final


def path_scores(clip: np.ndarray, scene: ShapeScene) -> dict:
    """`control_scores` against the clips' path started where the object first appears."""
    found = [d.center for d in detect_clip(clip) if d.found]
    start = np.asarray(found[0]) if found else np.asarray(START)
    centers = start + np.arange(len(clip))[:, None] * np.asarray(VELOCITY)
    scores = control_scores(clip, scene, centers)
    scores["path_error"] = scores.pop("position_error")
    return scores


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="Training steps of the LoRA (the CLI's default).")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--sampling-steps", type=int, default=None, help="Default: the adapter's recommended.")
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 frames, 2 training and 2 sampling steps.")
    parser.add_argument("--publish", action="store_true", help="Also write the table into docs/results.md.")
    parser.add_argument("--output", default="outputs/motion_lora_benchmark")
    args = parser.parse_args(argv)
    if args.publish and args.quick:
        parser.error("--publish writes the full run's numbers into docs/results.md: drop --quick")
    if args.quick:
        args.seeds, args.num_frames, args.steps, args.sampling_steps = [0], 4, 2, 2
    output = Path(args.output)
    lora = train_lora(output, args)
    path = carried_motion_path([str(lora)], args.num_frames)
    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    recommended = pipe.adapter.sampling_defaults  # sampled as `harivo generate` samples by default
    pipe.scheduler = make_scheduler(
        recommended.get("scheduler", "dpm-solver++"), pipe.scheduler, recommended.get("timestep_spacing")
    )
    if args.sampling_steps is None:
        steps = recommended.get("num_inference_steps", 15)
        args.sampling_steps = steps[0] if isinstance(steps, list | tuple) else steps
    rescale = default_guidance_rescale(pipe.scheduler)
    results, figure, labels = {}, [], []
    for row, (weights, options) in ROWS.items():
        if weights:
            pipe.load_lora_weights(str(lora), adapter_name="motion")
        kwargs = {key: path if value == "path" else value for key, value in options.items()}
        per_group, seconds = {}, []
        for group, prompts in PROMPTS.items():
            scores = []
            for prompt in prompts:
                start = time.perf_counter()
                videos = pipe(
                    [prompt] * len(args.seeds), num_frames=args.num_frames, num_inference_steps=args.sampling_steps,
                    guidance_rescale=rescale,
                    generator=[torch.Generator().manual_seed(s) for s in args.seeds], output_type="np", **kwargs,
                ).frames  # fmt: skip
                seconds.append((time.perf_counter() - start) / len(args.seeds))
                clips = [(np.clip(v, 0, 1) * 255).round().astype(np.uint8) for v in videos]
                scores += [path_scores(clip, ShapeScene.from_caption(prompt)) for clip in clips]
                if prompt == PROMPTS["outside"][0]:
                    figure.append(clips[0])
                    labels.append(f"{row}: {prompt}")
            per_group[group] = mean_scores(scores)
        if weights:
            pipe.unload_lora_weights()
        results[row] = {"groups": per_group, "seconds_per_clip": float(np.mean(seconds))}
        print(row, {g: {m: round(s[m], 2) for m in METRICS} for g, s in per_group.items()}, flush=True)
    references = [
        np.stack([np.asarray(f) for f in _read(p)])[: args.num_frames]
        for p in sorted((output / "clips").glob("*.mp4"))
    ]
    contact_sheet([*references, *figure], [*REFERENCES, *labels], scale=2).save(output / "figure.png")
    trained = (output / "lora" / "seconds.txt").read_text() if (output / "lora" / "seconds.txt").is_file() else "?"
    table = format_table(results, args, trained)
    (output / "results.md").write_text(table + "\n")
    (output / "results.json").write_text(json.dumps(results, indent=1))
    print(table)
    if args.publish:
        publish("motion_lora", table)
    return results


def _read(path: Path):
    from harivo.video_io import read_frames

    return read_frames(path)


def format_table(results: dict, args, trained: str) -> str:
    lines = [
        f"3 reference clips of a diagonal (down-right, {VELOCITY[0]} px a frame), a motion LoRA trained {args.steps}"
        f" steps ({trained} s on this machine); {len(args.seeds)} seeds x 2 prompts per group naming no motion,"
        f" {args.num_frames} frames, the adapter's recommended sampler, {args.sampling_steps} steps"
    ]
    for group in PROMPTS:
        header = ["row"] + [f"{m} {'↑' if better == 'higher' else '↓'}" for m, better in METRICS.items()]
        lines += [f"\n**{group} the video data's shapes, colours and backgrounds**\n", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]  # fmt: skip
        for row, result in results.items():
            means = result["groups"][group]
            lines.append(f"| {row} | " + " | ".join(f"{means[m]:.2f}" for m in METRICS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
