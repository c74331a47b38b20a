"""The comparison table: what each part of HARIVO (and of ours) does on the same frozen Shapes T2I model.

    python benchmarks/comparison_table.py                 # the full table (hours on 2 CPU cores; resumable)
    python benchmarks/comparison_table.py --quick         # the same pipeline on tiny settings (minutes)

Every row uses the same frozen text-to-image model (the embedded default's), the same video data (the Shapes
video world), the recipe of `configs/shapes/harivo.yaml` for steps, batch and learning rate, the same sampler,
prompts and seeds:

1. the T2I model frame by frame (no temporal layers);
2. the AnimateDiff recipe: temporal layers trained with the diffusion loss only; sampled, like every trained row,
   with the windows the recipe saves in its adapter (temporal layers on the first half of the steps), and once with
   its temporal layers on every step, as AnimateDiff samples;
3. the AnimateDiff recipe plus one HARIVO component at a time (mapping network, frame tokens, `L_reg`, `L_trsa`,
   `L_dc`, MG sampling), and plus our motion path;
4. full HARIVO (every component of the paper);
5. the shipped recipe (`configs/shapes/harivo.yaml`, then its path predictor refit by `path_predictor.yaml`), with
   the motion-path projection moving the whole frame, moving what the subject's words attend to, moving what they
   attend to more than the scene's words, and, the default, that with the moving layer kept near the subject's core
   from 40 % of the steps on (`motion_path_core_window`);
6. rendered clips through the base model's VAE (the floor of flicker and background change a latent video model
   with this VAE can reach), and rendered clips themselves (the upper bound).

Key rows are trained with three seeds (`TRAINING_SEEDS`): their spread is over training and sampling seeds
together. Plus the MG alpha sweep (0 / 10 / 40 / 150) on full HARIVO. Everything lands in `--output`:
`results.json` (all numbers), `table.md`, `compact.md` (docs/results.md's one-table summary of the components), `samples.png` (one row of
frames per method) and `mg_sweep.png`.
Finished rows are cached there (trained adapters, every clip and the scores), so a rerun after a crash continues
where it stopped; key rows are computed first; `--rescore` scores the cached clips again (after a metric changed).
Every scored row's numbers are also kept in `--store` (by default `benchmarks/results/comparison_rows.json`,
committed: a few kB a row), so that a fresh clone, without the clips, reuses the rows measured before and computes
only the missing ones (`samples.png` shows the rows whose clips are here).
"""

import argparse
import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.state import AcceleratorState
from diffusers import AutoencoderKL

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
    through_vae,
    write_results,
)
from harivo.schedulers import default_guidance_rescale
from harivo.training import Trainer, load_config
from harivo.training.config import STAGES
from harivo.video_io import contact_sheet

try:
    from benchmarks.results_page import publish
except ModuleNotFoundError:  # run as a script: benchmarks/ itself is on the path
    from results_page import publish

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "shapes" / "harivo.yaml"
STORE = Path(__file__).resolve().parent / "results" / "comparison_rows.json"  # the full table's scored rows
# The shipped recipe's last stage: its path predictor refit on captions with words substituted.
REFIT_CONFIG = CONFIG.with_name("path_predictor.yaml")
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
SHIPPED = {}  # configs/shapes/harivo.yaml as it is
# Training settings added after this table's cache began, at the values that train exactly as before they existed
# (same computation, same random draws): left out of the recipe's fingerprint at those values, so that adding an
# option does not discard hours of cached adapters. Anything else that changes makes the fingerprint change.
NEUTRAL_SINCE_CACHE = {"harivo.reg_frames": 0}  # L_reg on every frame, no random frame choice
# The same for `Row` fields: at these values a field added later is left out of the row's cache folder name.
ROW_FIELDS_SINCE_CACHE = {"through_vae": False}
MG_ALPHAS = (0.0, 10.0, 40.0, 150.0)
TRAINING_SEEDS = (0, 1, 2)
KEY_ROWS = (
    "AnimateDiff recipe",
    "T2I frame by frame",
    "shipped recipe",
    "shipped recipe, whole-frame projection",
    "shipped recipe, subject mask without the scene",
    "shipped recipe, moving layer wherever the subject is",
)


@dataclass
class Row:
    name: str
    training: dict | None = None  # overrides of a trained adapter; None: no training
    mg_scale: float = 0.0
    frame_by_frame: bool = False
    real: bool = False
    through_vae: bool = False  # with `real`: the rendered clips encoded and decoded by the base model's VAE
    training_seeds: tuple[int, ...] = (0,)
    sampling: dict = field(default_factory=dict)  # other pipeline keywords


def build_rows() -> list[Row]:
    full = {**ANIMATEDIFF, **{k: v for c in COMPONENTS.values() for k, v in c.items()}}
    rows = [Row("T2I frame by frame", frame_by_frame=True)]
    rows.append(Row("AnimateDiff recipe", ANIMATEDIFF, training_seeds=TRAINING_SEEDS))
    # Every trained row samples with the recipe's recommended windows (saved in its adapter: temporal layers on the
    # first half of the steps); AnimateDiff itself runs its temporal layers on every step.
    every_step = {"temporal_window": (0.0, 1.0)}
    rows.append(Row("AnimateDiff recipe, temporal layers on every step", ANIMATEDIFF, sampling=every_step))
    rows += [Row(f"AnimateDiff + {name}", {**ANIMATEDIFF, **overrides}) for name, overrides in COMPONENTS.items()]
    paper_mg = {"mg_gradient": "full"}  # MG as the paper takes its gradient (through the U-Net)
    rows.append(Row("AnimateDiff + MG (alpha 40)", ANIMATEDIFF, mg_scale=40.0, sampling=paper_mg))
    rows.append(Row("AnimateDiff + motion path [ours]", {**ANIMATEDIFF, "harivo.motion_path": True}))
    rows += [Row(f"full HARIVO, MG alpha {alpha:g}", full, mg_scale=alpha, sampling=paper_mg) for alpha in MG_ALPHAS]
    everywhere = {"motion_path_core_window": (1.0, 1.0)}  # the moving layer wherever the subject's mask is
    rows.append(
        Row("shipped recipe, whole-frame projection", SHIPPED, training_seeds=TRAINING_SEEDS,
            sampling={"motion_path_mask": "frame", **everywhere})
    )  # fmt: skip
    rows.append(
        Row("shipped recipe, subject mask without the scene", SHIPPED, training_seeds=TRAINING_SEEDS,
            sampling={"motion_path_mask": "subject", "motion_scene": "", **everywhere})
    )  # fmt: skip
    rows.append(
        Row("shipped recipe, moving layer wherever the subject is", SHIPPED, training_seeds=TRAINING_SEEDS,
            sampling={"motion_path_mask": "subject", **everywhere})
    )  # fmt: skip
    rows.append(Row("shipped recipe", SHIPPED, training_seeds=TRAINING_SEEDS))  # its adapter's recommended sampling
    rows.append(Row("rendered clips through the VAE", real=True, through_vae=True))  # a latent model's floor
    rows.append(Row("rendered clips", real=True))
    return rows


def slug(overrides: dict) -> str:
    """A stable folder name for a setting (rows that train the same thing share it)."""
    import hashlib

    return hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:10]


def recipe_fingerprint(training: dict) -> str:
    """What every cached adapter and row depends on besides its own overrides: the resolved training config (the
    recipe file with this run's settings), so that a changed recipe never reuses an adapter trained with the old."""
    resolved = [dataclasses.asdict(recipe_config(path, training)) for path in (CONFIG, REFIT_CONFIG)]
    # The other stages' sections are never read by the harivo stage: a new stage must not invalidate the cache
    unread = {"output_dir", *(stage for stage in STAGES if stage != "harivo")}
    for config in resolved:
        for key, value in NEUTRAL_SINCE_CACHE.items():
            section, name = key.split(".")
            if config[section][name] == value:
                del config[section][name]
    return slug({"recipe": [{k: v for k, v in config.items() if k not in unread} for config in resolved]})


def recipe_config(path: Path, values: dict):
    """The training config of the recipe file `path` with `values` (`key: value` overrides) on top."""
    return load_config(path, [f"{key}={json.dumps(value)}" for key, value in values.items()])


def refit_path_predictor(adapter: Path, settings: dict, folder: Path) -> Path:
    """The shipped recipe's last stage on a trained adapter: `REFIT_CONFIG` (its own step count, unless the run is
    shorter), the adapter's other parts unchanged."""
    shorter = settings["max_steps"] < load_config(CONFIG).max_steps  # --quick or a short --steps
    steps = min(settings["max_steps"], load_config(REFIT_CONFIG).max_steps) if shorter else None
    values = {k: v for k, v in settings.items() if k not in ("max_steps", "checkpoint_every", "optim.lr_warmup_steps")}
    if steps is not None:  # as short as the adapter's own training
        values.update({"max_steps": steps, "checkpoint_every": max(steps // 3, 1), "optim.lr_warmup_steps": 0})
    return train_adapter({"harivo.adapter": str(adapter)}, values, folder, REFIT_CONFIG)


def train_adapter(overrides: dict, settings: dict, folder: Path, recipe: Path = CONFIG) -> Path:
    """`recipe` with `settings` and `overrides` trained into `folder` (resumed if begun; reused if finished)."""
    final = folder / "final"
    if (final / "harivo_adapter.json").is_file():
        return final
    config = recipe_config(recipe, {**settings, **overrides, "output_dir": str(folder)})
    Trainer(config, resume=True).train()
    AcceleratorState._reset_state(reset_partial_state=True)  # the next row starts its own Accelerator
    return final


def compute_run(
    row: Row, training_seed: int, args, training: dict, settings: EvalSettings, prompts, output: Path, recipe: str
):
    """`({sampling seed: [clip per prompt]}, cost)` of one row's adapter trained with `training_seed`."""
    cost = {"train_s": 0.0}
    if row.real:
        clips = render_reference_clips(prompts, settings.seeds, settings.num_frames)
        if row.through_vae:
            clips = through_vae(clips, AutoencoderKL.from_pretrained(args.base_model, subfolder="vae").eval())
        return clips, cost
    overrides = {**(row.training if row.training is not None else ANIMATEDIFF), "seed": training_seed}
    start = time.perf_counter()
    if row.training == SHIPPED and training_seed == 0 and is_shipped_recipe(training, args):
        adapter = DEFAULT_MODEL_DIR / "adapter"  # the shipped adapter is this recipe's first training seed
    else:  # the frame-by-frame row bypasses the temporal layers of an AnimateDiff-recipe adapter
        folder = output / "adapters" / slug({**overrides, "recipe": recipe})
        adapter = train_adapter(overrides, training, folder)
        if row.training == SHIPPED:  # and its path predictor refit, as the shipped adapter's was
            adapter = refit_path_predictor(adapter, training, folder / "path_predictor")
    cost["train_s"] = time.perf_counter() - start  # 0 when reused from another row
    pipe = HarivoPipeline.from_pretrained(args.base_model, adapter=str(adapter))
    rescale = default_guidance_rescale(pipe.scheduler)
    row_settings = EvalSettings(
        **{**asdict(settings), "mg_scale": row.mg_scale, "guidance_rescale": rescale, "extra": row.sampling}
    )
    start = time.perf_counter()
    if row.frame_by_frame:
        with pipe.video_unet.temporal_layers_disabled():
            clips = generate_clips(
                pipe, prompts, EvalSettings(**{**asdict(row_settings), "motion_path_projection": 0})
            )
    else:
        clips = generate_clips(pipe, prompts, row_settings)
    cost["sample_s_per_clip"] = (time.perf_counter() - start) / (len(prompts) * len(settings.seeds))
    return clips, cost


def training_settings(base_model: str, steps: int, quick: bool = False) -> dict:
    """Every row's training settings on top of its recipe (the shipped adapter's: 600 steps on the embedded base)."""
    return {
        "harivo.base_model": base_model,
        "max_steps": steps,
        "batch_size": 2 if quick else 4,
        "data.num_frames": 4 if quick else 16,
        "optim.lr_warmup_steps": min(50, steps // 4),
        "checkpoint_every": max(steps // 3, 1),
        "validate_every": 0,
        "num_validation_samples": 0,
    }


def animatediff_adapter(
    output: Path = Path("outputs/comparison"), training_seed: int = 0, quick: bool = False
) -> Path:
    """The AnimateDiff-recipe adapter of the table (trained into `output`'s cache, or reused from it)."""
    training = training_settings(str(DEFAULT_MODEL_DIR / "base"), 4 if quick else 600, quick)
    overrides = {**ANIMATEDIFF, "seed": training_seed}
    folder = output / "adapters" / slug({**overrides, "recipe": recipe_fingerprint(training)})
    return train_adapter(overrides, training, folder)


def is_shipped_recipe(training: dict, args) -> bool:
    """Whether the table trains with exactly the settings the embedded adapter was trained with."""
    return not args.quick and training["max_steps"] == 600 and args.base_model == str(DEFAULT_MODEL_DIR / "base")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny settings: checks the whole pipeline in minutes.")
    parser.add_argument("--output", default=None, help="Default: outputs/comparison (or outputs/comparison-quick).")
    parser.add_argument("--base-model", default=str(DEFAULT_MODEL_DIR / "base"), help="The frozen Shapes T2I model.")
    parser.add_argument("--steps", type=int, default=None, help="Training steps of every adapter.")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Sampling seeds.")
    parser.add_argument("--only", nargs="*", default=None, help="Row names to recompute; default: none.")
    parser.add_argument("--skip", nargs="*", default=(), help="Row names to leave out of this run's table.")
    parser.add_argument(
        "--training-seeds", type=int, default=None,
        help="At most this many training seeds per row (default: all; 1 gives every row one adapter, seed 0).",
    )  # fmt: skip
    parser.add_argument(
        "--store", default=None,
        help=f"JSON file of scored rows, reused where their clips are absent (default: {STORE.name} in"
        " benchmarks/results for the full table, none with --quick; 'none' for none).",
    )  # fmt: skip
    parser.add_argument("--rescore", action="store_true", help="Score the cached clips again.")
    parser.add_argument("--publish", action="store_true", help="Also write the table into docs/results.md.")
    args = parser.parse_args()
    if args.publish and args.quick:
        parser.error("--publish writes the full run's numbers into docs/results.md: drop --quick")

    quick = args.quick
    output = Path(args.output or ("outputs/comparison-quick" if quick else "outputs/comparison"))
    store = Path(args.store) if args.store else None if quick else STORE
    store = None if args.store == "none" else store
    steps = args.steps or (4 if quick else 600)
    num_frames = 4 if quick else 16
    training = training_settings(args.base_model, steps, quick)
    settings = EvalSettings(
        seeds=tuple(args.seeds or ((0,) if quick else (0, 1, 2))),
        num_frames=num_frames,
        num_inference_steps=4 if quick else 25,
        batch_size=18,
    )
    groups = evaluation_prompts(2 if quick else 6)
    prompts = [p for group in groups.values() for p in group]
    reference = render_reference_clips(prompts, settings.seeds, num_frames, offset=1000)
    rows = [row for row in build_rows() if row.name not in args.skip]
    recipe = recipe_fingerprint(training)
    most = 1 if quick else args.training_seeds
    training_seeds = {row.name: row.training_seeds[:most] for row in rows}

    # The key rows first, one training seed of each after the other, then the other rows; each run is cached
    key = [row for name in KEY_ROWS for row in rows if row.name == name]
    plan = [
        (row, seeds[i])
        for i in range(len(TRAINING_SEEDS))
        for row in key
        if i < len(seeds := training_seeds[row.name])
    ]
    plan += [(row, seed) for row in rows if row not in key for seed in training_seeds[row.name]]
    kept = read_store(store)  # what this run computes lands in `output` too, so the store is read once
    for row, training_seed in plan:
        folder = output / "rows" / row_slug(row, recipe, settings)
        clips_file = folder / f"training-seed-{training_seed}.npz"
        stored = training_seed in stored_runs(kept.get(folder.name), training_seeds[row.name])
        if (clips_file.is_file() or stored) and row.name not in (args.only or ()):
            continue
        print(f"== {row.name}, training seed {training_seed}", flush=True)
        clips, cost = compute_run(row, training_seed, args, training, settings, prompts, output, recipe)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(clips_file, **{str(seed): np.stack(videos) for seed, videos in clips.items()})
        clips_file.with_suffix(".json").write_text(json.dumps({"name": row.name, "cost": cost}))
        report(
            rows, training_seeds, groups, prompts, reference, settings, training, output, args, recipe, store, False
        )
    report(rows, training_seeds, groups, prompts, reference, settings, training, output, args, recipe, store)


def row_slug(row: Row, recipe: str, settings: EvalSettings) -> str:
    """The cache folder of a row: its settings, the recipe it trains on and the sampling it is scored with."""
    neutral = ROW_FIELDS_SINCE_CACHE.items()
    fields = {k: v for k, v in asdict(row).items() if (k, v) not in neutral}
    return slug({**fields, "recipe": recipe, "sampling": asdict(settings)})


def read_store(store: Path | None) -> dict:
    """The scored rows kept in `store`: {row folder name: {"name", "training_seeds", "scores", "costs"}}."""
    return json.loads(store.read_text()) if store is not None and store.is_file() else {}


def stored_runs(entry: dict | None, wanted) -> list[int]:
    """The training seeds a store entry pooled, if this run wants them all (its numbers are over exactly them)."""
    return entry["training_seeds"] if entry and set(entry["training_seeds"]) <= set(wanted) else []


def write_store(store: Path, entries: dict) -> None:
    """`entries` into `store`, whole or not at all (a crash mid-write leaves the previous file)."""
    store.parent.mkdir(parents=True, exist_ok=True)
    partial = store.with_name(store.name + ".tmp")
    partial.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    partial.replace(store)


def report(
    rows, training_seeds, groups, prompts, reference, settings, training, output, args, recipe, store, final=True
) -> None:  # fmt: skip
    """Score every row from its cached runs (scores are cached too, and kept in `store`) and write the table, and with
    `final` the figures (after each row only the tables: a killed run keeps its numbers, and the next run, which
    computes nothing again, draws them); a row whose clips are not here but whose runs `store` holds, all of them,
    takes its numbers from there."""
    results, samples, costs, partial = {}, {}, {}, {}
    entries = read_store(store)
    for row in rows:
        folder = output / "rows" / row_slug(row, recipe, settings)
        runs = [seed for seed in training_seeds[row.name] if (folder / f"training-seed-{seed}.npz").is_file()]
        kept = entries.get(folder.name)
        seeds = stored_runs(kept, training_seeds[row.name])
        if seeds and set(runs) <= set(seeds) and not (args.rescore and runs):
            runs = seeds
            results[row.name], costs[row.name] = kept["scores"], kept["costs"]
            if len(runs) < len(training_seeds[row.name]):
                partial[row.name] = f"{len(runs)} of {len(training_seeds[row.name])} training seeds so far"
            if (folder / "training-seed-0.npz").is_file():
                samples[row.name] = np.load(folder / "training-seed-0.npz")[str(settings.seeds[0])]
            continue
        if not runs:
            continue
        clips = {}
        for seed in runs:
            stored = np.load(folder / f"training-seed-{seed}.npz")
            clips.update({f"{seed}/{sampling}": list(stored[sampling]) for sampling in stored.files})
        scores_file = folder / "scores.json"
        cached = json.loads(scores_file.read_text()) if scores_file.is_file() else {}
        if args.rescore or cached.get("runs") != sorted(clips):
            cached = {"runs": sorted(clips), "scores": score_clips(clips, groups, reference=reference)}
            scores_file.write_text(json.dumps(cached))
        results[row.name] = cached["scores"]
        costs[row.name] = [json.loads((folder / f"training-seed-{s}.json").read_text())["cost"] for s in runs]
        samples[row.name] = np.stack(next(iter(clips.values())))
        if len(runs) < len(training_seeds[row.name]):
            partial[row.name] = f"{len(runs)} of {len(training_seeds[row.name])} training seeds so far"
        if store is not None and (not kept or set(kept["training_seeds"]) <= set(runs)):  # never fewer runs
            entries[folder.name] = {
                "name": row.name, "training_seeds": runs, "scores": results[row.name], "costs": costs[row.name]
            }  # fmt: skip
            write_store(store, entries)
    extra = {
        "prompts": groups,
        "eval_settings": asdict(settings),
        "training": training,
        "training_seeds": {name: list(seeds) for name, seeds in training_seeds.items()},
        "partial_rows": partial,
        "costs": costs,
        "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
    }
    folder = write_results(output, results, extra)
    (folder / "compact.md").write_text(compact_table(results, costs) + "\n")
    if not final:
        return
    starts = np.cumsum([0] + [len(group) for group in groups.values()])[:-1]  # first prompt of each group
    videos = [samples[name][i] for i in starts for name in samples]
    labels = [f"{name}: {prompts[i]}" for i in starts for name in samples]
    if videos:  # none when every row came from the store
        contact_sheet(videos, labels, scale=1, max_frames=8, long_exposure=True).save(folder / "samples.png")
    plot_mg_sweep(results, folder / "mg_sweep.png")
    print(format_table(results), flush=True)
    print(f"Wrote {folder}/results.json, table.md, compact.md, samples.png and mg_sweep.png", flush=True)
    if args.publish:
        publish("comparison_components", compact_table(results, costs))


# docs/results.md's one-table summary: column name and decimals of each headline metric.
COMPACT = {
    "fidelity": ("fidelity", 2),
    "fidelity_style": ("style", 2),
    "background_change": ("bg change", 1),
    "background_flicker": ("flicker", 1),
    "motion_correct": ("motion", 2),
    "jerk": ("jerk px", 1),
    "identity": ("identity", 2),
    "fvd": ("FVD-a", 0),
}


def compact_table(results: dict, costs: dict) -> str:
    """Markdown: one row per method, each cell the means of every prompt group (`in / out / textured`), and the
    mean training minutes of its adapters (`–` for rows that train nothing)."""
    lines = ["| row | " + " | ".join(name for name, _ in COMPACT.values()) + " | train min |"]
    lines.append("| --- |" + " ---: |" * (len(COMPACT) + 1))
    for name, scores in results.items():
        cells = [
            " / ".join(
                "–" if metric not in group else f"{group[metric]['mean']:.{digits}f}" for group in scores.values()
            )
            for metric, (_, digits) in COMPACT.items()
        ]
        minutes = np.mean([cost["train_s"] for cost in costs[name]]) / 60  # `report` sets both for every row
        cells.append(f"{minutes:.0f}" if minutes >= 1 else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
