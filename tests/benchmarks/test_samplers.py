"""The sampler benchmark on the embedded default model, on tiny settings."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import samplers


def test_every_sampler_has_a_row_and_the_refused_ones_say_why(tmp_path, capsys):
    results = samplers.main(["--quick", "--output", str(tmp_path / "samplers.json")])
    assert (tmp_path / "samplers.json").is_file()
    assert set(results["refused"]) == {"pndm", "ddpm", "euler-ancestral"}  # the embedded model: zero-SNR, mapped noise
    assert {"ddim", "euler", "dpm-solver++", "unipc", "ddpm (refused; forced)"} <= set(results["rows"])
    for name in results["refused"]:  # each forced run is scored, or its failure recorded
        assert f"{name} (refused; forced)" in results["rows"] or "Forced, it fails" in results["refused"][name]
    assert "| ddim |" in capsys.readouterr().out
