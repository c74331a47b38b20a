"""The fewer-steps benchmark on tiny settings: a row with another sampler runs on a pipeline of its own."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fewer_steps
import where_style_is_lost


def test_a_sampler_row_leaves_the_models_sampler_alone(tmp_path, monkeypatch):
    used = []
    run_row = where_style_is_lost.run_row

    def spy(pipe, options, prompts, settings):
        clips = run_row(pipe, options, prompts, settings)
        used.append(type(pipe.scheduler).__name__)
        return clips

    monkeypatch.setattr(where_style_is_lost, "run_row", spy)
    rows = fewer_steps.main(["--quick", "--output", str(tmp_path), "--rows", "dpm-solver++, 8 steps"])
    assert list(rows) == ["dpm-solver++, 8 steps"] and used == ["DDIMScheduler"]
    assert rows["dpm-solver++, 8 steps"]["in video distribution"]["seconds_per_clip"]["mean"] > 0
