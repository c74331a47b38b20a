"""The workflows benchmark end to end in its quick mode: every section samples, is scored and written."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import workflows


def test_quick_workflows_benchmark_writes_every_section(tmp_path, monkeypatch):
    out = tmp_path / "workflows"
    monkeypatch.setattr(sys, "argv", ["workflows.py", "--quick", "--output", str(out)])
    workflows.main()
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["video-to-video", "image-to-video", "prompt travel", "long videos", "FreeInit",
                            "FreeInit with an input video"]  # fmt: skip
    assert results["image-to-video"]["image-to-video"]["psnr frame 0 dB"] > 20  # the image is frame 0
    assert set(results["long videos"]) >= {"64 frames, FreeNoise", "cost at 16 frames"}
    assert (out / "workflows.png").is_file() and "| strength 0.8, path video |" in (out / "table.md").read_text()
    # one section again: the others are kept
    monkeypatch.setattr(sys, "argv", ["workflows.py", "--quick", "--output", str(out), "--only", "image-to-video"])
    workflows.main()
    assert list(json.loads((out / "results.json").read_text())) == list(results)
