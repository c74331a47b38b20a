"""Where the image model's knowledge is lost in the video, and what keeps it: one trained adapter, sampled part by part.

    python benchmarks/where_style_is_lost.py             # the embedded default model (about 1 h on 2 CPU cores)
    python benchmarks/where_style_is_lost.py --quick     # tiny settings, a minute

Every row samples the same adapter with the same prompts, seeds and sampler, adding one sampling-time part at a
time: the frozen T2I model frame by frame (the adapter's noise, temporal layers bypassed), the temporal layers,
the motion-path projection moving the whole frame, moving only the subject, the temporal layers only in the first
half of the steps, the projection on 80 % of them, the scene's words counted against the subject's mask, the moving
layer kept near the subject's core from 40 % of the steps on (the embedded adapter's defaults), and MG on
the 80 % row; last, rendered clips encoded and decoded by the model's VAE, the floor of flicker and background
change for any model that samples in this VAE's latents. No training: each row differs from the one above in one
setting (the MG row from the 80 % row). Scored with `harivo.evaluation` in three groups (inside the video data,
outside it, textured backgrounds); the `vs T2I` column is the row's fidelity over the frame-by-frame row's, the
issue's "95 % of the image model" bar. Each row is cached in `--output` (a rerun continues); `--rescore` scores the
cached clips again.
"""

import argparse
import hashlib
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from harivo.defaults import default_model_paths
from harivo.evaluation.suite import (
    EvalSettings,
    evaluation_prompts,
    format_table,
    generate_clips,
    render_reference_clips,
    score_clips,
    through_vae,
)
from harivo.generation import load_pipeline
from harivo.loras import FAST_CONFIG
from harivo.schedulers import default_guidance_rescale, make_scheduler

try:
    from benchmarks.results_page import publish
except ModuleNotFoundError:  # run as a script: benchmarks/ itself is on the path
    from results_page import publish

# Every row states its windows, whatever the adapter recommends (the embedded one: the core row's)
WHOLE_MASK = {"motion_path_core_window": (1.0, 1.0)}  # the moving layer wherever the subject's mask is
ALWAYS = {"temporal_window": (0.0, 1.0), "motion_path_window": (0.0, 0.5), **WHOLE_MASK}
# The shipped sampling before the core
SHIPPED = {
    "motion_path_mask": "subject",
    "temporal_window": (0.0, 0.5),
    "motion_path_window": (0.0, 0.8),
    **WHOLE_MASK,
}
SUBJECT_ALONE = {"motion_path_mask": "subject", "motion_scene": ""}  # the mask before the scene counted against it
ROWS = {
    "T2I frame by frame": {"frame_by_frame": True, "motion_path_projection": 0.0},
    "temporal layers": {**ALWAYS, "motion_path_projection": 0.0},
    "+ projection, whole frame": {**ALWAYS, "motion_path_mask": "frame"},
    "+ projection, subject only": {**ALWAYS, **SUBJECT_ALONE},
    "+ temporal layers in the first half": {**ALWAYS, **SUBJECT_ALONE, "temporal_window": (0.0, 0.5)},
    "+ projection on 80 % of the steps": {**SHIPPED, **SUBJECT_ALONE},
    "+ the scene's words against the subject's": SHIPPED,
    "+ the moving layer near the subject's core (shipped)": {**SHIPPED, "motion_path_core_window": (0.4, 1.0)},
    "projection on 80 % + MG alpha 10": {**SHIPPED, **SUBJECT_ALONE, "mg_scale": 10.0, "mg_gradient": "full"},
    "rendered clips through the VAE (the floor)": {"through_vae": True},
}
METRICS = {
    "fidelity": "higher",
    "fidelity_shape": "higher",
    "fidelity_colour": "higher",
    "fidelity_style": "higher",
    "texture_contrast": "higher",
    "background_change": "lower",
    "motion_correct": "higher",
    "jerk": "lower",
    "identity": "higher",
    "background_flicker": "lower",
}


def run_row(pipe, options: dict, prompts: list[str], settings: EvalSettings) -> dict:
    """The clips of one row: `options` are `EvalSettings` fields or pipeline keywords (`frame_by_frame`: the
    temporal layers bypassed)."""
    options = dict(options)
    if options.pop("through_vae", False):  # no sampling: what the VAE makes of clips with exactly right latents
        return through_vae(render_reference_clips(prompts, settings.seeds, settings.num_frames), pipe.vae)
    frame_by_frame = options.pop("frame_by_frame", False)
    sampler = options.pop("scheduler", None)
    spacing = None
    cache = options.pop("cache", None)  # DeepCache's interval
    fast = options.pop("fast", None)  # a few-step variant's folder: its LoRA, sampled as it was distilled
    if fast is not None:
        variant = json.loads((Path(fast) / FAST_CONFIG).read_text())
        sampler, spacing = variant["scheduler"], variant["timestep_spacing"]
        options.setdefault("guidance_scale", variant["guidance_scale"])
    names = {item.name for item in fields(EvalSettings)} - {"extra"}
    chosen = {key: options.pop(key) for key in list(options) if key in names}
    row_settings = EvalSettings(**{**asdict(settings), **chosen, "extra": options})
    if sampler is not None or cache is not None:  # a pipeline of its own over the same components
        pipe = type(pipe).from_pipe(pipe)
        if sampler is not None:
            pipe.scheduler = make_scheduler(sampler, pipe.scheduler, spacing)
        if cache is not None:
            pipe.enable_deep_cache(cache_interval=cache)
        pipe.set_progress_bar_config(disable=True)
    if fast is not None:  # merged into the shared U-Net for this row only, as `harivo generate --fast` merges it
        pipe.load_lora_weights(fast, adapter_name="fast")
        pipe.fuse_lora(components=["unet"], lora_scale=1.0, adapter_names=["fast"])
        try:
            return generate_clips(pipe, prompts, row_settings)
        finally:
            pipe.unfuse_lora(components=["unet"])
            pipe.unload_lora_weights()
    if frame_by_frame:
        with pipe.video_unet.temporal_layers_disabled():
            return generate_clips(pipe, prompts, row_settings)
    return generate_clips(pipe, prompts, row_settings)


def model_fingerprint(base_model: str | None, adapter: str | None) -> str:
    """The identity of the sampled model: the contents of every file of a local base model and adapter folder (the
    embedded ones by default), or a hub id as it is. A cached row of another model is never reused."""
    default_base, default_adapter = default_model_paths()
    digest = hashlib.sha1()
    for given, default in ((base_model, default_base), (adapter, default_adapter)):
        folder = Path(given) if given is not None else default
        if not folder.is_dir():
            digest.update(str(given).encode())
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(options: dict, settings: EvalSettings, prompts: list[str], model: str) -> str:
    """What a cached row depends on: its options, the sampling settings, the prompts and the model."""
    fields = {"row": repr(options), "settings": asdict(settings), "prompts": prompts, "model": model}
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def main(
    argv: list[str] | None = None,
    rows: dict[str, dict] = ROWS,
    output: str = "outputs/where_style_is_lost",
    metrics: dict[str, str] = METRICS,
    description: str = __doc__,
    prompts_per_group: int = 6,
    seeds: tuple[int, ...] = (0, 1, 2),
    publish_as: str | None = "where_style_is_lost",
) -> dict:
    """Sample, score and tabulate `rows` (each cached in `--output`; `seconds_per_clip` is each row's sampling time
    over its clips). `--publish` writes the table into docs/results.md's block `publish_as` (None: refused)."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--base-model")
    parser.add_argument("--adapter")
    parser.add_argument("--prompts-per-group", type=int, default=prompts_per_group)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 prompt per group, 4 frames, 3 steps, 1 seed.")
    parser.add_argument("--rows", nargs="+", choices=list(rows), default=list(rows))
    parser.add_argument("--rescore", action="store_true", help="Score the cached clips again.")
    parser.add_argument("--publish", action="store_true", help="Also write the table into docs/results.md.")
    parser.add_argument("--output", default=output)
    args = parser.parse_args(argv)
    if args.publish and publish_as is None:
        parser.error(
            "--publish: this benchmark's table has no block in docs/results.md (its numbers are in the model card)"
        )
    if args.publish and args.quick:
        parser.error("--publish writes the full run's numbers into docs/results.md: drop --quick")
    if args.quick:
        args.prompts_per_group, args.num_frames, args.steps, args.seeds = 1, 4, 3, [0, 1]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args.base_model, args.adapter)
    pipe.set_progress_bar_config(disable=True)
    settings = EvalSettings(
        seeds=tuple(args.seeds),
        num_frames=args.num_frames,
        num_inference_steps=args.steps,
        guidance_rescale=default_guidance_rescale(pipe.scheduler),
        batch_size=18,
    )
    groups = evaluation_prompts(args.prompts_per_group)
    prompts = [p for group in groups.values() for p in group]
    reference = render_reference_clips(prompts, settings.seeds, settings.num_frames, offset=1000)
    model = model_fingerprint(args.base_model, args.adapter)
    options, rows = rows, {}
    for index, name in enumerate(args.rows):
        clips_file, scores_file = output / f"row-{index}.npz", output / f"row-{index}.json"
        key = cache_key(options[name], settings, prompts, model)
        if clips_file.is_file() and scores_file.is_file() and json.loads(scores_file.read_text()).get("key") == key:
            stored = np.load(clips_file)
            clips = {int(seed): list(stored[seed]) for seed in stored.files}
            cached = json.loads(scores_file.read_text())
            rows[name], seconds = cached["scores"], cached.get("seconds_per_clip", float("nan"))
            if not args.rescore:
                continue
        else:
            print(f"== {name}", flush=True)
            start = time.perf_counter()
            clips = run_row(pipe, options[name], prompts, settings)
            seconds = (time.perf_counter() - start) / sum(len(videos) for videos in clips.values())
            np.savez_compressed(clips_file, **{str(seed): np.stack(videos) for seed, videos in clips.items()})
        rows[name] = score_clips(clips, groups, reference=reference)
        for values in rows[name].values():
            values["seconds_per_clip"] = {"mean": seconds, "std": 0.0}
        record = {"name": name, "options": repr(options[name]), "key": key, "scores": rows[name]}
        scores_file.write_text(json.dumps({**record, "seconds_per_clip": seconds}))
    base = rows.get("T2I frame by frame")
    for scores in rows.values():
        for group, values in scores.items():
            if base is not None:
                ratio = values["fidelity"]["mean"] / max(base[group]["fidelity"]["mean"], 1e-9)
                values["vs T2I"] = {"mean": ratio, "std": 0.0}
    ratio = {"vs T2I": "higher"} if base is not None else {}
    table = format_table(rows, {**ratio, **metrics, "seconds_per_clip": "lower"})
    (output / "table.md").write_text(table + "\n")
    (output / "results.json").write_text(json.dumps({"rows": rows, "prompts": groups, "settings": asdict(settings)}))
    print(table)
    if args.publish:
        publish(publish_as, table)
    return rows


if __name__ == "__main__":
    main()
