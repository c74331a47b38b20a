"""The comparison-table benchmark end to end in its quick mode: every row trains, samples and is scored."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import comparison_table


def test_quick_table_has_every_row_and_writes_its_files(tmp_path, monkeypatch):
    out = tmp_path / "table"
    monkeypatch.setattr(sys, "argv", ["comparison_table.py", "--quick", "--steps", "1", "--output", str(out)])
    comparison_table.main()
    results = json.loads((out / "results.json").read_text())
    names = [row.name for row in comparison_table.build_rows()]
    assert list(results["rows"]) == names
    assert results["rows"]["rendered clips"]["in video distribution"]["fidelity"]["mean"] == 1.0
    flicker = {name: results["rows"][name]["textured backgrounds"]["background_flicker"]["mean"] for name in names}
    assert flicker["rendered clips"] == 0 < flicker["rendered clips through the VAE"]  # the VAE's floor
    assert all((out / name).is_file() for name in ("table.md", "compact.md", "samples.png", "mg_sweep.png"))
    compact = (out / "compact.md").read_text().splitlines()
    assert [line.split(" | ")[0].removeprefix("| ") for line in compact[2:]] == names  # a line per row, in order
    assert compact[2 + names.index("rendered clips")].startswith("| rendered clips | 1.00 / 1.00 / 1.00 | ")
    assert results["partial_rows"] == {} and results["rows"]["shipped recipe"]["textured backgrounds"]["fidelity"]
    # a rerun reuses every cached row: no training, no sampling
    cached = {path: path.stat().st_mtime_ns for path in (out / "rows").rglob("*")}
    comparison_table.main()
    assert {path: path.stat().st_mtime_ns for path in (out / "rows").rglob("*")} == cached
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]


def test_a_fresh_clone_reuses_the_rows_kept_in_the_store(tmp_path, monkeypatch):
    """The store (committed for the full table) stands in for a lost output folder: nothing trains or samples."""
    store, first, fresh = tmp_path / "rows.json", tmp_path / "first", tmp_path / "fresh"
    skip = ["--skip", *[row.name for row in comparison_table.build_rows() if row.training is not None]]
    argv = ["comparison_table.py", "--quick", "--steps", "1", "--store", str(store), *skip]
    monkeypatch.setattr(sys, "argv", [*argv, "--output", str(first)])
    comparison_table.main()
    kept = json.loads(store.read_text())
    assert sorted(entry["name"] for entry in kept.values()) == sorted(
        ["T2I frame by frame", "rendered clips through the VAE", "rendered clips"]
    )
    monkeypatch.setattr(sys, "argv", [*argv, "--output", str(fresh)])
    monkeypatch.setattr(comparison_table, "compute_run", lambda *args: pytest.fail("a stored row was computed"))
    comparison_table.main()
    results = json.loads((fresh / "results.json").read_text())["rows"]
    assert results == json.loads((first / "results.json").read_text())["rows"]
    assert not (fresh / "rows").exists() and json.loads(store.read_text()) == kept


def test_a_changed_recipe_never_reuses_cached_adapters_or_rows(tmp_path, monkeypatch):
    training = {"max_steps": 4, "batch_size": 2}
    fingerprint = comparison_table.recipe_fingerprint(training)
    assert comparison_table.recipe_fingerprint(dict(training)) == fingerprint  # stable
    assert comparison_table.recipe_fingerprint({**training, "max_steps": 5}) != fingerprint
    edited = tmp_path / "harivo.yaml"
    text = comparison_table.CONFIG.read_text()
    edited.write_text(text.replace("timestep_bias: 2.0", "timestep_bias: 1.0"))
    assert edited.read_text() != text
    monkeypatch.setattr(comparison_table, "CONFIG", edited)
    assert comparison_table.recipe_fingerprint(training) != fingerprint
    edited.write_text(text + "\n# a comment changes nothing that trains\n")
    assert comparison_table.recipe_fingerprint(training) == fingerprint


def test_a_setting_added_later_at_its_neutral_value_keeps_the_cache():
    training = {"max_steps": 4, "batch_size": 2}
    fingerprint = comparison_table.recipe_fingerprint(training)
    for key, neutral in comparison_table.NEUTRAL_SINCE_CACHE.items():
        assert comparison_table.recipe_fingerprint({**training, key: neutral}) == fingerprint
        assert comparison_table.recipe_fingerprint({**training, key: neutral + 2}) != fingerprint  # it trains apart


def test_rows_keep_their_cache_folders_when_the_through_vae_field_came():
    from dataclasses import asdict

    settings = comparison_table.EvalSettings()
    for row in comparison_table.build_rows():
        before = {k: v for k, v in asdict(row).items() if k != "through_vae"}  # the Row of before the field
        expected = comparison_table.slug({**before, "recipe": "r", "sampling": asdict(settings)})
        assert (comparison_table.row_slug(row, "r", settings) == expected) == (not row.through_vae)
