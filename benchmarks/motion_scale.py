"""Motion strength on the embedded default model: `motion_scale` from 0 (the image model frame by frame) to 1.5.

    python benchmarks/motion_scale.py            # 4 prompts per group, 2 seeds (a few minutes)
    python benchmarks/motion_scale.py --quick    # tiny settings

Every row samples the embedded model with its recommended settings, the same prompts and seeds; only `motion_scale`
differs (the motion-path projection scales with it). Scored with `harivo.evaluation` (inside the video data, outside
it, textured backgrounds): `travel` is how far the object moves along the prompted direction (pixels).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import where_style_is_lost

ROWS = {
    "motion_scale 0 (the image model frame by frame)": {"scheduler": "dpm-solver++", "num_inference_steps": 15,
                                                        "motion_scale": 0.0},
    "motion_scale 0.5": {"scheduler": "dpm-solver++", "num_inference_steps": 15, "motion_scale": 0.5},
    "motion_scale 1 (the trained model)": {"scheduler": "dpm-solver++", "num_inference_steps": 15},
    "motion_scale 1.5": {"scheduler": "dpm-solver++", "num_inference_steps": 15, "motion_scale": 1.5},
}  # fmt: skip
METRICS = {
    "travel": "higher",
    "motion_correct": "higher",
    "fidelity": "higher",
    "identity": "higher",
    "background_flicker": "lower",
    "jerk": "lower",
    "fvd": "lower",
}


def main(argv: list[str] | None = None) -> dict:
    return where_style_is_lost.main(
        argv, ROWS, "outputs/motion_scale", METRICS, __doc__, prompts_per_group=4, seeds=(0, 1), publish_as=None
    )


if __name__ == "__main__":
    main()
