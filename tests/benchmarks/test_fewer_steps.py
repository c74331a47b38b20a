"""The fewer-steps benchmark on tiny settings: a row with another sampler runs on a pipeline of its own."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fewer_steps
import where_style_is_lost


def test_a_sampler_and_cache_row_leaves_the_models_pipeline_alone(tmp_path, monkeypatch):
    row = "dpm-solver++, 15 steps, DeepCache every 2nd step"  # another sampler and the cache, on a pipeline of its own
    used = []
    run_row = where_style_is_lost.run_row

    def spy(pipe, options, prompts, settings):
        clips = run_row(pipe, options, prompts, settings)
        used.append((type(pipe.scheduler).__name__, pipe.deep_cache_enabled))
        return clips

    monkeypatch.setattr(where_style_is_lost, "run_row", spy)
    rows = fewer_steps.main(["--quick", "--output", str(tmp_path), "--rows", row])
    assert list(rows) == [row] and used == [("DDIMScheduler", False)]
    assert rows[row]["in video distribution"]["seconds_per_clip"]["mean"] > 0
