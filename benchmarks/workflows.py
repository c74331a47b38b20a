"""AnimateDiff's daily workflows on the embedded default model, measured in the Shapes world with the detector.

    python benchmarks/workflows.py            # ~25 min on 2 CPU cores
    python benchmarks/workflows.py --quick    # the same code on tiny settings (a minute)

1. Video-to-video: rendered clips re-generated with another colour, for each `strength` and with / without
   `motion_path="video"`: is the new colour read, does everything else stay, does the object stay on the input's
   path (mean distance of the centroids, pixels)?
2. Image-to-video: the first frame of rendered clips animated with their caption: PSNR of frame 0 against the image,
   identity (share of frames showing the image's colour and shape), motion in the prompted direction, jerk; next to
   text-to-video of the same prompts.
3. Prompt travel: keyframe prompts `{0: A, 6: A, 8: B}` (A held, then B over two frames) that change one attribute
   (colour, direction, background): is A read up to frame 6 and B from frame 8, does the rest stay, does the object
   jump (largest centroid step over the median step)? The shared layout window (the default) vs each frame's own
   text throughout.
4. Long videos: 64 frames in FreeNoise windows (16 frames, stride 4) with keyframe prompts that turn the object
   every 16 frames, against the same prompts' 16-frame clips; and the cost per frame at 16 to 128 frames.
5. FreeInit (3 iterations) against plain sampling on the image-to-video prompts: scores and cost.
6. FreeInit with an input video: section 1's recolouring at strength 0.6 along the input's path, plain and with
   FreeInit (each iteration runs the input's share of the schedule again).

Writes `results.json`, `table.md` and `workflows.png` (a contact sheet of examples) into `--output`.
"""

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from harivo import HarivoImageToVideoPipeline, HarivoVideoToVideoPipeline, load_default_pipeline
from harivo.data.shapes import ShapeScene, render_clip
from harivo.evaluation.detector import detect_clip, motion_direction
from harivo.evaluation.metrics import score_clip
from harivo.video_io import contact_sheet

V2V = [  # (input caption, the prompt that changes its colour)
    ("a large red circle moving right on a plain black background", "blue"),
    ("a large green square moving left on a plain white background", "red"),
    ("a large red circle moving down on a striped white background", "green"),
    ("a large blue triangle moving up on a checkered black background", "red"),
]
I2V = [
    "a large red circle moving right on a plain black background",
    "a large blue square moving left on a plain white background",
    "a large green triangle moving down on a plain grey background",
    "a large yellow star moving up on a plain black background",
    "a large red circle moving down on a striped white background",
    "a large blue square moving right on a checkered black background",
]
TRAVEL = {  # what changes at frame 8: (frame 0's prompt, frame 8's prompt)
    "colour": ("a large red circle moving right on a plain black background",
               "a large blue circle moving right on a plain black background"),
    "direction": ("a large green square moving right on a plain black background",
                  "a large green square moving left on a plain black background"),
    "background": ("a large red circle moving right on a plain black background",
                   "a large red circle moving right on a plain white background"),
}  # fmt: skip
LONG = {  # 64 frames: right, then left, right, left; each held 12 frames and turning in 4
    0: "a large red circle moving right on a plain black background",
    12: "a large red circle moving right on a plain black background",
    16: "a large red circle moving left on a plain black background",
    28: "a large red circle moving left on a plain black background",
    32: "a large red circle moving right on a plain black background",
    44: "a large red circle moving right on a plain black background",
    48: "a large red circle moving left on a plain black background",
}


def to_uint8(video: np.ndarray) -> np.ndarray:
    return (np.asarray(video) * 255).round().astype(np.uint8)


def centers(frames: np.ndarray) -> np.ndarray:
    return np.array([d.center if d.center else (np.nan, np.nan) for d in detect_clip(frames)])


def changed(scene: ShapeScene, **attributes) -> ShapeScene:
    values = {name: getattr(scene, name) for name in ("shape", "colour", "size", "background", "style", "direction")}
    return ShapeScene(**{**values, **attributes})


def video_to_video(pipe, settings) -> tuple[dict, list]:
    v2v = HarivoVideoToVideoPipeline.from_pipe(pipe)
    rows, examples = {}, []
    for strength in settings["strengths"]:
        for path in (None, "video"):
            scores = []
            for number, (caption, colour) in enumerate(V2V[: settings["clips"]]):
                scene = ShapeScene.from_caption(caption)
                target = changed(scene, colour=colour)
                frames, trajectory = render_clip(scene, settings["frames"], np.random.default_rng(number))
                out = to_uint8(settings["sample"](v2v, target.caption, video=list(frames), strength=strength,
                                                  motion_path=path)[0])  # fmt: skip
                score = score_clip(out, target)
                kept = np.mean([score[f"fidelity_{name}"] for name in ("shape", "size", "background", "style")])
                offset = np.linalg.norm(centers(out) - trajectory.centers, axis=1)
                scores.append({"new colour": score["fidelity_colour"], "rest kept": kept,
                               "path error px": float(np.nanmean(offset)) if np.isfinite(offset).any() else 64.0,
                               "motion_correct": score.get("motion_correct", 0.0),
                               "background_change": score["background_change"]})  # fmt: skip
                if number == 2 and strength == 0.8 and path is None:
                    examples += [(frames, f"v2v input: {caption}"), (out, f"v2v strength 0.8 -> {colour}")]
            rows[f"strength {strength}, path {path or 'none'}"] = mean(scores)
    return rows, examples


def image_to_video(pipe, settings) -> tuple[dict, list]:
    i2v = HarivoImageToVideoPipeline.from_pipe(pipe)
    rows, examples = {}, []
    for name, run in (("image-to-video", i2v), ("text-to-video (no image)", pipe)):
        scores = []
        for number, caption in enumerate(I2V[: settings["clips"]]):
            scene = ShapeScene.from_caption(caption)
            frames, _ = render_clip(scene, settings["frames"], np.random.default_rng(100 + number))
            image = frames[0]
            for seed in settings["seeds"]:
                extra = {"image": image} if run is i2v else {}
                out = to_uint8(settings["sample"](run, caption, seed=seed, **extra)[0])
                score = score_clip(out, scene)
                found = [(d.colour, d.shape) for d in detect_clip(out)]
                error = np.mean((out[0].astype(np.float64) - image) ** 2)
                scores.append({"psnr frame 0 dB": float(10 * np.log10(255**2 / max(error, 1e-10))),
                               "identity to the image": float(np.mean([f == (scene.colour, scene.shape) for f in found])),
                               "motion_correct": score.get("motion_correct", 0.0), "jerk": score["jerk"],
                               "background_change": score["background_change"], "fidelity": score["fidelity"]})  # fmt: skip
                if number == 4 and seed == settings["seeds"][0]:
                    examples.append((out, f"{name}: {caption}"))
        rows[name] = mean(scores)
    return rows, examples


def prompt_travel(pipe, settings) -> tuple[dict, list]:
    rows, examples, frames = {}, [], settings["frames"]
    key = frames // 2
    for window_name, window in (("shared layout (default)", (0.5, 1.0)), ("own text throughout", (0.0, 1.0))):
        for what, (first, second) in TRAVEL.items():
            a, b = ShapeScene.from_caption(first), ShapeScene.from_caption(second)
            scores = []
            for seed in settings["seeds"]:
                hold = key - 2  # A held until two frames before the keyframe, then B: a switch over two frames
                out = to_uint8(settings["sample"](pipe, {0: first, hold: first, key: second}, seed=seed,
                                                  prompt_travel_window=window)[0])  # fmt: skip
                detections = detect_clip(out)
                path = centers(out)
                steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
                steps = steps[np.isfinite(steps)]
                if what == "direction":
                    before = float(motion_direction(path[: hold + 1], 2.0) == a.direction)
                    after = float(motion_direction(path[key:], 2.0) == b.direction)
                else:
                    before = np.mean([getattr(d, what) == getattr(a, what) for d in detections[: hold + 1]])
                    after = np.mean([getattr(d, what) == getattr(b, what) for d in detections[key:]])
                rest = [n for n in ("shape", "colour", "background", "style") if getattr(a, n) == getattr(b, n)]
                kept = np.mean([[getattr(d, n) == getattr(a, n) for n in rest] for d in detections])
                jump = float(steps.max() / max(np.median(steps), 0.5)) if len(steps) else 0.0
                scores.append({"A before": float(before), "B after": float(after), "rest kept": float(kept),
                               "largest step / median": jump})  # fmt: skip
                if seed == settings["seeds"][0] and window == (0.5, 1.0):
                    examples.append((out, f"prompt travel, {what}: A to frame {hold}, B from frame {key}"))
            rows[f"{what}, {window_name}"] = mean(scores)
    return rows, examples


def long_videos(pipe, settings) -> tuple[dict, list]:
    rows, examples = {}, []
    length = settings["long_frames"]
    keyframes = {frame * length // 64: text for frame, text in LONG.items()}
    scene = ShapeScene.from_caption(LONG[0])
    pipe.enable_free_noise(context_length=settings["frames"], context_stride=settings["stride"])
    try:
        for name, frames, prompt in (("64 frames, FreeNoise", length, keyframes),
                                     ("16 frames (one window)", settings["frames"], LONG[0])):  # fmt: skip
            scores = []
            for seed in settings["seeds"]:
                out = to_uint8(settings["sample"](pipe, prompt, seed=seed, num_frames=frames)[0])
                score = score_clip(out, changed(scene, direction=None))
                path = centers(out)
                segments = []
                for start, text in sorted(keyframes.items()) if frames == length else [(0, LONG[0])]:
                    stop = min(start + length // 4 - length // 16, frames)
                    if start % (length // 4) == 0:
                        direction = ShapeScene.from_caption(text).direction
                        segments.append(float(motion_direction(path[start:stop], 2.0) == direction))
                scores.append({"identity": score["identity"], "fidelity": score["fidelity"],
                               "direction per segment": float(np.mean(segments)), "jerk": score["jerk"],
                               "background_flicker": score["background_flicker"]})  # fmt: skip
                if seed == settings["seeds"][0] and frames == length:
                    examples.append((out, f"long: {length} frames, turning every {length // 4}"))
            rows[name] = mean(scores)
        for frames in settings["cost_frames"]:  # sampling time per frame: flat when the cost is linear in length
            start = time.perf_counter()
            settings["sample"](pipe, LONG[0], num_frames=frames)
            rows[f"cost at {frames} frames"] = {"seconds per frame": (time.perf_counter() - start) / frames}
    finally:
        pipe.disable_free_noise()
    return rows, examples


def free_init(pipe, settings) -> tuple[dict, list]:
    rows, examples = {}, []
    for name, iterations in (
        ("plain sampling", 0),
        (f"FreeInit, {settings['free_init']} iterations", settings["free_init"]),
    ):
        if iterations:
            pipe.enable_free_init(num_iters=iterations)
        scores, start = [], time.perf_counter()
        try:
            for number, caption in enumerate(I2V[: settings["clips"]]):
                for seed in settings["seeds"]:
                    out = to_uint8(settings["sample"](pipe, caption, seed=seed)[0])
                    score = score_clip(out, ShapeScene.from_caption(caption))
                    scores.append({key: score.get(key, 0.0) for key in ("fidelity", "motion_correct", "identity",
                                   "jerk", "background_flicker", "background_change")})  # fmt: skip
                    if number == 4 and seed == settings["seeds"][0]:
                        examples.append((out, f"{name}: {caption}"))
        finally:
            pipe.disable_free_init()
        rows[name] = {**mean(scores), "seconds per clip": (time.perf_counter() - start) / len(scores)}
    return rows, examples


def free_init_with_a_video(pipe, settings) -> tuple[dict, list]:
    """Video-to-video (the first section's recolouring, strength 0.6, the input's motion path) plain and with
    FreeInit: each iteration runs the input's last 60 % of the schedule again from the last result."""
    v2v = HarivoVideoToVideoPipeline.from_pipe(pipe)
    rows, examples = {}, []
    for name, iterations in (("video-to-video", 0), (f"video-to-video + FreeInit, {settings['free_init']} iterations",
                                                     settings["free_init"])):  # fmt: skip
        if iterations:
            v2v.enable_free_init(num_iters=iterations)
        scores, start = [], time.perf_counter()
        try:
            for number, (caption, colour) in enumerate(V2V[: settings["clips"]]):
                scene = ShapeScene.from_caption(caption)
                target = changed(scene, colour=colour)
                frames, trajectory = render_clip(scene, settings["frames"], np.random.default_rng(number))
                out = to_uint8(settings["sample"](v2v, target.caption, video=list(frames), strength=0.6,
                                                  motion_path="video")[0])  # fmt: skip
                score = score_clip(out, target)
                offset = np.linalg.norm(centers(out) - trajectory.centers, axis=1)
                scores.append({"new colour": score["fidelity_colour"], "identity": score.get("identity", 0.0),
                               "path error px": float(np.nanmean(offset)) if np.isfinite(offset).any() else 64.0,
                               "jerk": score.get("jerk", 0.0), "background_flicker": score["background_flicker"]})  # fmt: skip
                if number == 2:
                    examples.append((out, f"{name}: {target.caption}"))
        finally:
            v2v.disable_free_init()
        rows[name] = {**mean(scores), "seconds per clip": (time.perf_counter() - start) / len(scores)}
    return rows, examples


def mean(scores: list[dict]) -> dict:
    return {name: float(np.mean([s[name] for s in scores])) for name in scores[0]}


def markdown(results: dict) -> str:
    lines = []
    for section, rows in results.items():
        if not isinstance(rows, dict) or not rows:
            continue
        lines += [f"**{section}**", ""]
        columns = list(dict.fromkeys(column for row in rows.values() for column in row))
        lines += ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for name, row in rows.items():
            values = [f"{row[c]:.2f}" if c in row else "" for c in columns]
            lines.append(f"| {name} | " + " | ".join(values) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Tiny settings: checks the code, not the numbers.")
    parser.add_argument("--output", default="outputs/workflows", help="Where the results go.")
    parser.add_argument("--only", nargs="+", default=None, help="Sections to run (the others are kept from before).")
    args = parser.parse_args()
    quick = args.quick
    settings = {
        "frames": 8 if quick else 16, "steps": 2 if quick else 25, "seeds": (0,) if quick else (0, 1),
        "clips": 1 if quick else 6, "strengths": (0.8,) if quick else (0.4, 0.6, 0.8, 1.0), "stride": 4,
        "long_frames": 16 if quick else 64, "free_init": 2 if quick else 3, "cost_frames": (8, 16) if quick else (16, 32, 64, 128),
    }  # fmt: skip
    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def sample(run, prompt, seed: int = 0, **kwargs):
        kwargs.setdefault("num_frames", settings["frames"])
        if "video" in kwargs:
            kwargs.pop("num_frames")
        return run(prompt, num_inference_steps=settings["steps"], output_type="np",
                   generator=torch.Generator().manual_seed(seed), **kwargs).frames  # fmt: skip

    settings["sample"] = sample
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results_file = output / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() and args.only else {}
    sections: dict[str, Callable] = {"video-to-video": video_to_video, "image-to-video": image_to_video,
                                     "prompt travel": prompt_travel, "long videos": long_videos,
                                     "FreeInit": free_init, "FreeInit with an input video": free_init_with_a_video}  # fmt: skip
    for name, section in sections.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        results[name], shown = section(pipe, settings)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        results_file.write_text(json.dumps(results, indent=2))
        np.savez(output / f"examples-{name.replace(' ', '-')}.npz", labels=np.array([label for _, label in shown]),
                 **{f"video{i}": video for i, (video, _) in enumerate(shown)})  # fmt: skip
    (output / "table.md").write_text(markdown(results))
    videos, labels = [], []  # every section's examples, this run's or an earlier one's
    for name in sections:
        file = output / f"examples-{name.replace(' ', '-')}.npz"
        if file.is_file():
            with np.load(file) as cached:
                labels += [str(label) for label in cached["labels"]]
                videos += [cached[f"video{i}"] for i in range(len(cached["labels"]))]
    if videos:
        contact_sheet(videos, labels, scale=2, max_frames=16).save(output / "workflows.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
