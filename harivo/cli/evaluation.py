"""`harivo eval` (the Shapes world's evaluation of a model) and `harivo eval-videos` (FVD and CLIP score of files)."""

import argparse
import json
import time
from pathlib import Path

from ..request import MODEL_OPTIONS, RUNTIME_OPTIONS, add_arguments
from .common import check_output_folder, check_seed

SAMPLING_OPTIONS = (
    "guidance_scale", "guidance_rescale", "mg_scale", "mg_window", "mg_gradient", "motion_path_projection",
    "motion_path_mask", "temporal_window", "motion_path_window", "motion_path_core_window",
)  # fmt: skip


def add_commands(commands) -> None:
    command = commands.add_parser(
        "eval", help="Shapes-world evaluation of a model: detector scores, diversity, FVD-analog, contact sheet."
    )
    add_arguments(command, MODEL_OPTIONS)
    command.add_argument("-o", "--output-dir", default="eval", help="Where results go (default: ./eval).")
    command.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Sampling seeds (default: 0 1 2).")
    command.add_argument("--prompts-per-group", type=int, default=8, help="Prompts in and out of the video data.")
    command.add_argument("--num-frames", type=int, default=16)
    command.add_argument("--steps", type=int, default=25)
    add_arguments(command, SAMPLING_OPTIONS)  # as `harivo generate` takes them
    command.add_argument(
        "--frame-by-frame", action="store_true", help="Bypass the temporal layers: the frozen T2I model per frame."
    )
    command.add_argument("--real", action="store_true", help="Score rendered clips instead (the upper bound).")
    command.add_argument(
        "--through-vae", action="store_true",
        help="With --real: encode and decode the rendered clips with the base model's VAE first, the floor of the"
        " consistency metrics (flicker, background change) a latent video model with this VAE can reach.",
    )  # fmt: skip
    add_arguments(command, RUNTIME_OPTIONS)
    command.set_defaults(run=evaluate)

    real = commands.add_parser(
        "eval-videos", help="FVD (I3D) and CLIP score of generated video files against real ones."
    )
    real.add_argument("--generated", required=True, help="Folder of generated videos (mp4/webm/avi/gif).")
    real.add_argument("--reference", help="Folder of real videos, for FVD.")
    real.add_argument("--i3d", help="I3D TorchScript file (i3d_torchscript.pt), for FVD.")
    real.add_argument("--clip", help="CLIP model folder or hub id, for the CLIP score.")
    real.add_argument("--captions", help="CSV with `name` (the caption) and `path` (file name in --generated).")
    real.add_argument("--num-frames", type=int, default=16, help="Frames read per video (default: 16).")
    real.add_argument("--device", default="cpu")
    real.add_argument("-o", "--output", default="eval_videos.json", help="JSON of the numbers.")

    real.set_defaults(run=evaluate_videos)


def evaluate(args: argparse.Namespace) -> None:
    from ..evaluation.suite import (
        EvalSettings,
        evaluation_prompts,
        format_table,
        generate_clips,
        render_reference_clips,
        score_clips,
        through_vae,
        write_results,
    )
    from ..generation import guidance_rescale_for, load_pipeline, motion_options, prepare_pipeline, runtime
    from ..loras import apply_loras, parse_loras
    from ..video_io import contact_sheet

    if args.prompts_per_group * len(args.seeds) < 2:
        raise ValueError(
            "harivo eval needs at least two clips per prompt group (diversity and the FVD-analog compare clips):"
            " raise --prompts-per-group or pass more --seeds."
        )
    for seed in args.seeds:
        check_seed(seed)
    if args.through_vae and not args.real:
        raise ValueError("--through-vae scores rendered clips through the VAE: pass it with --real.")
    check_output_folder(args.output_dir)
    groups = evaluation_prompts(args.prompts_per_group)
    prompts = [p for group in groups.values() for p in group]
    settings = EvalSettings(
        seeds=tuple(args.seeds),
        num_frames=args.num_frames,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        mg_scale=args.mg_scale,
        mg_window=tuple(args.mg_window),
        motion_path_projection=args.motion_path_projection,
        extra={**motion_options(args), "mg_gradient": args.mg_gradient},
    )
    start = time.perf_counter()
    if args.real and not args.through_vae:
        clips, label = render_reference_clips(prompts, settings.seeds, settings.num_frames), "rendered clips"
    else:
        device, dtype = runtime(args.device, args.dtype)
        loras = parse_loras(args.lora)
        pipe = load_pipeline(
            args.base_model, args.adapter, None, args.base_config, allow_pickle=args.allow_pickle, torch_dtype=dtype
        )
        apply_loras(pipe, loras, args.allow_pickle)
        pipe = prepare_pipeline(pipe, args.scheduler, device, args.timestep_spacing)
    if args.through_vae:
        clips = through_vae(render_reference_clips(prompts, settings.seeds, settings.num_frames), pipe.vae)
        label = "rendered clips through the VAE"
    elif not args.real:
        label = args.adapter or "embedded default model"
        settings.guidance_rescale = guidance_rescale_for(args.guidance_rescale, pipe.scheduler)
        if args.frame_by_frame:
            if settings.motion_path_projection is None:  # the image model alone: no path either
                settings.motion_path_projection = 0.0
            with pipe.video_unet.temporal_layers_disabled():
                clips = generate_clips(pipe, prompts, settings)
            label += " (frame by frame)"
        else:
            clips = generate_clips(pipe, prompts, settings)
    reference = render_reference_clips(prompts, settings.seeds, settings.num_frames, offset=1000)
    rows = {str(label): score_clips(clips, groups, reference=reference)}
    seconds = time.perf_counter() - start
    folder = write_results(args.output_dir, rows, {"prompts": groups, "settings": vars(settings), "seconds": seconds})
    first = settings.seeds[0]
    contact_sheet(clips[first], prompts, scale=2, max_frames=8, long_exposure=True).save(folder / "samples.png")
    print(format_table(rows))
    print(f"Wrote {folder}/results.json, table.md and samples.png ({seconds:.0f} s).")


def evaluate_videos(args: argparse.Namespace) -> None:
    import csv

    from ..data.webvid import decode_frames
    from ..generation import resolve_device

    if not (args.i3d and args.reference) and not args.clip:
        raise ValueError("Nothing to compute: pass --i3d with --reference for FVD, and/or --clip for the CLIP score.")
    args.device = str(resolve_device(args.device))
    suffixes = {".mp4", ".webm", ".avi", ".gif", ".mov", ".mkv"}

    def read_folder(folder: str) -> dict:
        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)
        if not paths:
            raise FileNotFoundError(f"No videos ({', '.join(sorted(suffixes))}) in {folder}.")
        return {p.name: decode_frames(p, args.num_frames, 1) for p in paths}

    generated = read_folder(args.generated)
    results = {"num_generated": len(generated)}
    if args.i3d and args.reference:
        from ..evaluation.fvd import I3DFeatureExtractor, fvd

        reference = read_folder(args.reference)
        results["fvd"] = fvd(reference.values(), generated.values(), I3DFeatureExtractor(args.i3d, args.device))
        results["num_reference"] = len(reference)
    if args.clip:
        from ..evaluation.clip_score import ClipScorer

        if not args.captions:
            raise ValueError("--clip needs --captions (a CSV with `name` and `path` columns).")
        with open(args.captions, newline="") as handle:
            captions = {row["path"]: row["name"] for row in csv.DictReader(handle)}
        missing = sorted(set(generated) - set(captions))
        if missing:
            raise ValueError(f"No caption for {len(missing)} video(s) in {args.captions}, e.g. {missing[0]}.")
        names = sorted(generated)
        results["clip_score"] = ClipScorer(args.clip, args.device)(
            [generated[n] for n in names], [captions[n] for n in names]
        )
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
