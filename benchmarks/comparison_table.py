"""The comparison table: does HARIVO beat the AnimateDiff recipe on the same frozen Shapes T2I model?

    python benchmarks/comparison_table.py                 # the full table (about 2 h on 2 CPU cores)
    python benchmarks/comparison_table.py --quick         # the same pipeline on tiny settings (minutes)

Every row uses the same frozen text-to-image model (the embedded default's), the same video data (the Shapes
video world), the same number of training steps, batch and learning rate, the same sampler, prompts and seeds:

1. the T2I model frame by frame (no temporal layers);
2. the AnimateDiff recipe: temporal layers trained with the diffusion loss only;
3. the AnimateDiff recipe plus one HARIVO component at a time (mapping network, frame tokens, `L_reg`, `L_trsa`,
   `L_dc`, MG sampling);
4. full HARIVO (every component);
5. rendered clips (the upper bound).

Plus the MG alpha sweep (0 / 10 / 40 / 150) on full HARIVO. Everything lands in `--output`: `results.json` (all
numbers), `table.md`, `samples.png` (one row of frames per method) and `mg_sweep.png`. Finished rows are cached
there (trained adapters and scores), so a rerun after a crash continues where it stopped.
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.state import AcceleratorState

from harivo import HarivoPipeline
from harivo.defaults import DEFAULT_MODEL_DIR
from harivo.evaluation.suite import (
    HEADLINE_METRICS,
    IN_DISTRIBUTION,
    OUT_OF_DISTRIBUTION,
    EvalSettings,
    evaluation_prompts,
    format_table,
    generate_clips,
    render_reference_clips,
    score_clips,
    write_results,
)
from harivo.schedulers import default_guidance_rescale
from harivo.training import Trainer, load_config
from harivo.video_io import contact_sheet

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "shapes" / "harivo.yaml"
# The AnimateDiff recipe: temporal layers only, diffusion loss only.
ANIMATEDIFF = {
    "harivo.num_frame_tokens": 0,
    "harivo.motion_conditioning": False,
    "harivo.motion_path": False,
    "harivo.noise_frame_correlation": 0.0,
    "harivo.train_mapping_network": False,
    "harivo.weight_reg": 0.0,
    "harivo.weight_trsa": 0.0,
    "harivo.weight_dc": 0.0,
}
# Each HARIVO component, as overrides on top of the AnimateDiff recipe.
COMPONENTS = {
    "mapping network": {"harivo.train_mapping_network": True, "harivo.noise_frame_correlation": 0.5},
    "frame tokens": {"harivo.num_frame_tokens": 4},
    "L_reg": {"harivo.weight_reg": 0.1},
    "L_trsa": {"harivo.weight_trsa": 0.1},
    "L_dc": {"harivo.weight_dc": 0.01},
}
MG_ALPHAS = (0.0, 10.0, 40.0, 150.0)


@dataclass
class Row:
    name: str
    training: dict | None = None  # overrides of a trained adapter; None: no training
    mg_scale: float = 0.0
    frame_by_frame: bool = False
    real: bool = False
    extra: dict = field(default_factory=dict)


def build_rows() -> list[Row]:
    full = {**ANIMATEDIFF, **{k: v for c in COMPONENTS.values() for k, v in c.items()}}
    rows = [Row("T2I frame by frame", frame_by_frame=True), Row("AnimateDiff recipe", ANIMATEDIFF)]
    rows += [Row(f"AnimateDiff + {name}", {**ANIMATEDIFF, **overrides}) for name, overrides in COMPONENTS.items()]
    rows.append(Row("AnimateDiff + MG (alpha 40)", ANIMATEDIFF, mg_scale=40.0))
    rows.append(Row("AnimateDiff + motion path [ours]", {**ANIMATEDIFF, "harivo.motion_path": True}))
    rows += [Row(f"full HARIVO, MG alpha {alpha:g}", full, mg_scale=alpha) for alpha in MG_ALPHAS]
    rows.append(Row("rendered clips", real=True))
    return rows


def slug(overrides: dict) -> str:
    """A stable folder name for a training setting (rows that train the same thing share it)."""
    import hashlib

    return hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:10]


def train_adapter(overrides: dict, settings: dict, folder: Path) -> Path:
    final = folder / "final"
    if (final / "harivo_adapter.json").is_file():
        return final
    values = {**settings, **overrides, "output_dir": str(folder)}
    config = load_config(CONFIG, [f"{key}={json.dumps(value)}" for key, value in values.items()])
    Trainer(config, resume=True).train()
    AcceleratorState._reset_state(reset_partial_state=True)  # the next row starts its own Accelerator
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny settings: checks the whole pipeline in minutes.")
    parser.add_argument("--output", default=None, help="Default: outputs/comparison (or outputs/comparison-quick).")
    parser.add_argument("--base-model", default=str(DEFAULT_MODEL_DIR / "base"), help="The frozen Shapes T2I model.")
    parser.add_argument("--steps", type=int, default=None, help="Training steps of every adapter.")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--only", nargs="*", default=None, help="Row names to (re)compute; default: all.")
    parser.add_argument("--skip", nargs="*", default=(), help="Row names to leave out of this run's table.")
    args = parser.parse_args()

    quick = args.quick
    output = Path(args.output or ("outputs/comparison-quick" if quick else "outputs/comparison"))
    steps = args.steps or (4 if quick else 600)
    num_frames = 4 if quick else 16
    training = {
        "harivo.base_model": args.base_model,
        "max_steps": steps,
        "batch_size": 2 if quick else 4,
        "data.num_frames": num_frames,
        "optim.learning_rate": 1e-4,
        "harivo.timestep_bias": 2.0,
        "optim.lr_warmup_steps": min(50, steps // 4),
        "checkpoint_every": max(steps // 3, 1),
        "validate_every": 0,
        "num_validation_samples": 0,
    }
    settings = EvalSettings(
        seeds=tuple(args.seeds or ((0,) if quick else (0, 1, 2))),
        num_frames=num_frames,
        num_inference_steps=4 if quick else 25,
        batch_size=16,
    )
    groups = evaluation_prompts(2 if quick else 6)
    prompts = [p for group in groups.values() for p in group]
    reference = render_reference_clips(prompts, settings.seeds, num_frames, offset=1000)

    rows_dir = output / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    results, samples, costs = {}, {}, {}
    for row in build_rows():
        if row.name in args.skip:
            continue
        cache = rows_dir / f"{slug(asdict(row))}.json"
        clips_file = cache.with_suffix(".npz")
        if cache.is_file() and clips_file.is_file() and (args.only is None or row.name not in args.only):
            cached = json.loads(cache.read_text())
            results[row.name], costs[row.name] = cached["scores"], cached["cost"]
            samples[row.name] = np.load(clips_file)["clips"]
            continue
        print(f"== {row.name}", flush=True)
        cost = {}
        if row.real:
            clips = render_reference_clips(prompts, settings.seeds, num_frames)
        else:
            adapter = None
            if row.training is not None:
                start = time.perf_counter()
                adapter = train_adapter(row.training, training, output / "adapters" / slug(row.training))
                cost["train_s"] = time.perf_counter() - start  # 0 when reused from another row
            else:  # an untrained adapter is the T2I model frame by frame once its temporal layers are bypassed
                adapter = train_adapter(ANIMATEDIFF, training, output / "adapters" / slug(ANIMATEDIFF))
            pipe = HarivoPipeline.from_pretrained(args.base_model, adapter=str(adapter))
            rescale = default_guidance_rescale(pipe.scheduler)
            row_settings = EvalSettings(**{**asdict(settings), "mg_scale": row.mg_scale, "guidance_rescale": rescale})
            start = time.perf_counter()
            if row.frame_by_frame:
                with pipe.video_unet.temporal_layers_disabled():
                    clips = generate_clips(pipe, prompts, row_settings)
            else:
                clips = generate_clips(pipe, prompts, row_settings)
            cost["sample_s_per_clip"] = (time.perf_counter() - start) / (len(prompts) * len(settings.seeds))
        results[row.name] = score_clips(clips, groups, reference=reference)
        costs[row.name] = cost
        samples[row.name] = np.stack(clips[settings.seeds[0]])
        cache.write_text(json.dumps({"scores": results[row.name], "cost": cost}))
        np.savez_compressed(clips_file, clips=samples[row.name])

    extra = {
        "prompts": groups,
        "eval_settings": asdict(settings),
        "training": training,
        "costs": costs,
        "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
    }
    folder = write_results(output, results, extra)
    shown = [0, len(groups[IN_DISTRIBUTION])]  # first prompt of each group
    videos = [samples[name][i] for i in shown for name in samples]
    labels = [f"{name}: {prompts[i]}" for i in shown for name in samples]
    contact_sheet(videos, labels, scale=1, max_frames=8).save(folder / "samples.png")
    plot_mg_sweep(results, folder / "mg_sweep.png")
    print(format_table(results))
    print(f"Wrote {folder}/results.json, table.md, samples.png and mg_sweep.png")


def plot_mg_sweep(results: dict, path: Path) -> None:
    """Each headline metric against the MG alpha of full HARIVO, in and out of the video distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in HEADLINE_METRICS if m != "diversity"]
    columns = (len(metrics) + 1) // 2
    figure, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 5.6))
    axes = axes.ravel()
    for axis in axes[len(metrics) :]:
        axis.axis("off")
    for axis, metric in zip(axes, metrics):
        alphas = [a for a in MG_ALPHAS if f"full HARIVO, MG alpha {a:g}" in results]
        for group, style in ((IN_DISTRIBUTION, "o-"), (OUT_OF_DISTRIBUTION, "s--")):
            values = [results[f"full HARIVO, MG alpha {a:g}"][group].get(metric) for a in alphas]
            if not values or any(v is None for v in values):
                continue
            means = np.array([v["mean"] for v in values])
            stds = np.array([v["std"] for v in values])
            positions = [MG_ALPHAS.index(a) for a in alphas]
            axis.errorbar(positions, means, yerr=stds, fmt=style, capsize=3, label=group.split()[0])
        axis.set_xticks(np.arange(len(MG_ALPHAS)), [f"{a:g}" for a in MG_ALPHAS])
        axis.set_xlabel("MG alpha")
        axis.set_title(f"{metric} ({'↑' if HEADLINE_METRICS[metric] == 'higher' else '↓'})", fontsize=9)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
