"""The embedded default model in fewer steps: samplers and step counts against DDIM in 25 steps, side by side.

    python benchmarks/fewer_steps.py            # the embedded default model, 4 prompts per group, 3 seeds (~25 min)
    python benchmarks/fewer_steps.py --quick    # tiny settings, a minute

Every row samples the embedded model with its recommended settings, the same prompts and seeds; only the sampler
(`make_scheduler`: the model's own noise schedule), the number of steps, DeepCache (`enable_deep_cache`) and the
few-step variant (`harivo generate --fast`: the distilled LoRA, DDIM with trailing timesteps, no guidance) differ.
Scored with `harivo.evaluation`
(inside the video data, outside it, textured backgrounds) with each row's sampling seconds per clip. Rows are cached
in `--output` (a rerun continues).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import where_style_is_lost

from harivo.defaults import DEFAULT_MODEL_DIR
from harivo.loras import FAST_FOLDER

FAST = str(DEFAULT_MODEL_DIR / "adapter" / FAST_FOLDER)  # the embedded model's few-step variant (4 steps)
ROWS = {
    "ddim, 25 steps (the previous default)": {},
    "dpm-solver++, 15 steps (the adapter's recommendation)": {"scheduler": "dpm-solver++", "num_inference_steps": 15},
    "dpm-solver++, 8 steps": {"scheduler": "dpm-solver++", "num_inference_steps": 8},
    "dpm-solver++, 4 steps": {"scheduler": "dpm-solver++", "num_inference_steps": 4},
    "lcm, 4 steps (not distilled)": {"scheduler": "lcm", "num_inference_steps": 4},
    "distilled (--fast), 4 steps": {"fast": FAST, "num_inference_steps": 4},
    "distilled, 1 step (distilled for 4)": {"fast": FAST, "num_inference_steps": 1},
    "distilled, 2 steps (distilled for 4)": {"fast": FAST, "num_inference_steps": 2},
    "distilled, 8 steps (distilled for 4)": {"fast": FAST, "num_inference_steps": 8},
    "dpm-solver++, 15 steps, DeepCache every 2nd step": {
        "scheduler": "dpm-solver++",
        "num_inference_steps": 15,
        "cache": 2,
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
        argv,
        ROWS,
        "outputs/fewer_steps",
        METRICS,
        __doc__,
        prompts_per_group=4,
        seeds=(0, 1, 2),
        publish_as="fewer_steps",
    )


if __name__ == "__main__":
    main()
