"""Perturbed-attention guidance on the embedded default model: `pag_scale` 0 (off, shipped), 1.5 and 3.

    python benchmarks/pag.py            # 4 prompts per group, 2 seeds (a few minutes)
    python benchmarks/pag.py --quick    # tiny settings

Every row samples the embedded model with its recommended settings (DPM-Solver++ 15 steps), the same prompts and
seeds; only `pag_scale` differs (the mid block's self-attention perturbed, diffusers' default layers). Scored with
`harivo.evaluation` (inside the video data, outside it, textured backgrounds) with each row's seconds per clip.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import where_style_is_lost

SHIPPED = {"scheduler": "dpm-solver++", "num_inference_steps": 15}
ROWS = {
    "PAG off (shipped)": SHIPPED,
    "pag_scale 1.5": {**SHIPPED, "pag_scale": 1.5},
    "pag_scale 3": {**SHIPPED, "pag_scale": 3.0},
}
METRICS = {"fidelity": "higher", "fidelity_style": "higher", "motion_correct": "higher", "identity": "higher",
           "background_flicker": "lower", "jerk": "lower", "fvd": "lower"}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    return where_style_is_lost.main(
        argv, ROWS, "outputs/pag", METRICS, __doc__, prompts_per_group=4, seeds=(0, 1), publish_as=None
    )


if __name__ == "__main__":
    main()
