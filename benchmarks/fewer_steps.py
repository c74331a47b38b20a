"""The embedded default model in fewer steps: samplers and step counts against DDIM in 25 steps, side by side.

    python benchmarks/fewer_steps.py            # the embedded default model, 4 prompts per group, 2 seeds (~15 min)
    python benchmarks/fewer_steps.py --quick    # tiny settings, a minute

Every row samples the embedded model with its recommended settings, the same prompts and seeds; only the sampler
(`make_scheduler`: the model's own noise schedule), the number of steps and DeepCache (`enable_deep_cache`) differ. Scored with `harivo.evaluation`
(inside the video data, outside it, textured backgrounds) with each row's sampling seconds per clip. Rows are cached
in `--output` (a rerun continues).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import where_style_is_lost

ROWS = {
    "ddim, 25 steps (the previous default)": {},
    "ddim, 15 steps": {"num_inference_steps": 15},
    "dpm-solver++, 15 steps (the adapter's recommendation)": {"scheduler": "dpm-solver++", "num_inference_steps": 15},
    "dpm-solver++, 10 steps": {"scheduler": "dpm-solver++", "num_inference_steps": 10},
    "unipc, 10 steps": {"scheduler": "unipc", "num_inference_steps": 10},
    "dpm-solver++, 8 steps": {"scheduler": "dpm-solver++", "num_inference_steps": 8},
    "dpm-solver++, 15 steps, DeepCache every 2nd step": {
        "scheduler": "dpm-solver++",
        "num_inference_steps": 15,
        "cache": 2,
    },
    "dpm-solver++, 15 steps, DeepCache every 3rd step": {
        "scheduler": "dpm-solver++",
        "num_inference_steps": 15,
        "cache": 3,
    },
}
METRICS = {
    "fidelity": "higher",
    "fidelity_style": "higher",
    "motion_correct": "higher",
    "identity": "higher",
    "background_flicker": "lower",
    "jerk": "lower",
    "background_change": "lower",
    "fvd": "lower",
}


def main(argv: list[str] | None = None) -> dict:
    return where_style_is_lost.main(
        argv, ROWS, "outputs/fewer_steps", METRICS, __doc__, prompts_per_group=4, seeds=(0, 1)
    )


if __name__ == "__main__":
    main()
