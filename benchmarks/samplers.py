"""Every sampler `harivo generate --scheduler` offers, scored side by side on one model with `harivo.evaluation`.

    python benchmarks/samplers.py                    # the embedded default model (about 4 min on 2 CPU cores)
    python benchmarks/samplers.py --quick            # tiny settings, seconds

Rows are the samplers as harivo builds them (`make_scheduler`: the base's noise schedule and prediction type). A
sampler harivo refuses for this model is also run *forced* past the check, built the way diffusers' `from_config`
builds it, to show what the refusal prevents: PNDM drops a zero-terminal-SNR schedule, and DDPM / Euler-ancestral
add per-step noise that bypasses the adapter's noise mapping network.
"""

import argparse
import json
from pathlib import Path

from harivo.evaluation.suite import (
    EvalSettings,
    evaluation_prompts,
    format_table,
    generate_clips,
    render_reference_clips,
    score_clips,
)
from harivo.generation import load_pipeline
from harivo.pipelines import checks
from harivo.schedulers import SCHEDULERS, default_guidance_rescale, make_scheduler


def sampler_rows(pipe, prompts_per_group: int, settings: EvalSettings) -> tuple[dict, dict]:
    """Scores per sampler (`{label: groups}`) and why a sampler was refused (`{name: message}`)."""
    base = pipe.scheduler
    groups = evaluation_prompts(prompts_per_group)
    prompts = [p for group in groups.values() for p in group]
    reference = render_reference_clips(prompts, settings.seeds, settings.num_frames, offset=1000)
    rows, refused = {}, {}
    for name, scheduler_cls in SCHEDULERS.items():
        try:
            pipe.scheduler = make_scheduler(name, base)
            pipe.check_inputs("x", 1, 64, 64, 1, 7.5, None, None, None, 0.0, (0, 0.5), "frame_difference", "np", [])
            label, forced = name, False
        except ValueError as error:
            refused[name] = str(error)
            pipe.scheduler = scheduler_cls.from_config(base.config)  # what diffusers would have built
            label, forced = f"{name} (refused; forced)", True
        check = checks.check_scheduler
        if forced:  # measure what the refusal prevents
            checks.check_scheduler = lambda *args: None
        try:
            clips = generate_clips(pipe, prompts, settings, progress=False)
        except Exception as error:  # a forced sampler may not run at all
            if not forced:
                raise
            refused[name] += f" Forced, it fails: {type(error).__name__}: {str(error).splitlines()[0]}"
            continue
        finally:
            checks.check_scheduler = check
        rows[label] = score_clips(clips, groups, reference=reference)
        print(f"{label}: done", flush=True)
    pipe.scheduler = base
    return rows, refused


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model")
    parser.add_argument("--adapter")
    parser.add_argument("--prompts-per-group", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 prompt per group, 4 frames, 2 steps.")
    parser.add_argument("--output", default="samplers.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts_per_group, args.num_frames, args.steps = 1, 4, 2
    pipe = load_pipeline(args.base_model, args.adapter)
    settings = EvalSettings(
        seeds=tuple(args.seeds),
        num_frames=args.num_frames,
        num_inference_steps=args.steps,
        guidance_rescale=default_guidance_rescale(pipe.scheduler),
    )
    rows, refused = sampler_rows(pipe, args.prompts_per_group, settings)
    metrics = {"fidelity": "higher", "identity": "higher", "background_flicker": "lower", "jerk": "lower",
               "motion_correct": "higher", "fvd": "lower"}  # fmt: skip
    print(format_table(rows, metrics))
    for name, message in refused.items():
        print(f"- {name} refused: {message}")
    results = {"rows": rows, "refused": refused, "settings": vars(args)}
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
