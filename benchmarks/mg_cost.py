"""MG's cost against what it buys: the paper's full gradient and the cheap `x0` gradient, side by side.

    python benchmarks/mg_cost.py            # the embedded default model, 4 prompts per group, 2 seeds (~30 min on 2 cores)
    python benchmarks/mg_cost.py --quick    # tiny settings, a minute

Every row samples the embedded model with its recommended settings and the same prompts and seeds; only MG
differs. `mg_gradient="full"` back-propagates the temporal energy through the U-Net at each guided step (a forward
with gradients and a backward); `"x0"` holds the model output constant, which makes the clean-latent prediction
linear in `z_t`, so the gradient is the energy's own at `x0_hat` and a guided step costs a plain one. Scored with
`harivo.evaluation` (inside the video data, outside it, textured backgrounds), with each row's sampling seconds per
clip; `mg_cost.png` draws the cost against flicker and jerk. Rows are cached in `--output` (a rerun continues).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import where_style_is_lost

EVERY_STEP = (0.0, 1.0)
DPM_SOLVER = {"scheduler": "dpm-solver++", "num_inference_steps": 15}
ROWS = {
    "MG off": {},
    "full gradient, alpha 10, first half (the paper's form)": {"mg_scale": 10.0, "mg_gradient": "full"},
    "full gradient, alpha 10, every step": {"mg_scale": 10.0, "mg_window": EVERY_STEP, "mg_gradient": "full"},
    "x0 gradient, alpha 10, every step": {"mg_scale": 10.0, "mg_window": EVERY_STEP, "mg_gradient": "x0"},
    "x0 gradient, alpha 40, every step": {"mg_scale": 40.0, "mg_window": EVERY_STEP, "mg_gradient": "x0"},
    "x0 gradient, alpha 100, every step": {"mg_scale": 100.0, "mg_window": EVERY_STEP, "mg_gradient": "x0"},
    # the CLI's and the web UI's default sampler, whose schedule keeps a tiny alpha_bar at the pure-noise step
    "MG off, dpm-solver++ 15 steps": DPM_SOLVER,
    "x0 gradient, alpha 10, every step, dpm-solver++ 15 steps": {
        "mg_scale": 10.0,
        "mg_window": EVERY_STEP,
        "mg_gradient": "x0",
        **DPM_SOLVER,
    },
}
METRICS = {
    "fidelity": "higher",
    "motion_correct": "higher",
    "identity": "higher",
    "background_flicker": "lower",
    "jerk": "lower",
    "background_change": "lower",
    "fvd": "lower",
}


def plot(rows: dict, path: Path) -> None:
    """Cost (seconds per clip) against flicker and jerk, one point per row, averaged over the prompt groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("background_flicker", "jerk")):
        for name, scores in rows.items():
            groups = list(scores.values())
            cost = groups[0]["seconds_per_clip"]["mean"]
            value = sum(group[metric]["mean"] for group in groups) / len(groups)
            axis.scatter(cost, value, marker="o" if "x0" in name else "s")
            axis.annotate(name.split(" (")[0], (cost, value), fontsize=7, xytext=(4, 3), textcoords="offset points")
        axis.set_xlabel("seconds per clip (2 CPU cores)")
        axis.set_ylabel(f"{metric} (lower is better)")
    figure.suptitle("MG: cost against consistency (squares: full gradient, circles: x0 gradient)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    rows = where_style_is_lost.main(
        argv, ROWS, "outputs/mg_cost", METRICS, __doc__, prompts_per_group=4, seeds=(0, 1), publish_as=None
    )
    output = Path(argv[argv.index("--output") + 1]) if "--output" in argv else Path("outputs/mg_cost")
    plot(rows, output / "mg_cost.png")
    (output / "rows.json").write_text(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
