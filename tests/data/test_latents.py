"""`harivo precompute` and `data.kind: latents`: the cache gives the loss curve of the pixels, resumes, and refuses
another base model."""

import json

import pytest

from harivo.cli import main
from harivo.data.latents import LatentDataset
from harivo.training import Trainer
from harivo.utils.tiny import tiny_stable_diffusion
from tests.training.test_trainer import TINY, read_log, tiny_config


def common(base_dir):
    return [*TINY["harivo"], f"harivo.base_model={base_dir}", "data.length=6", "batch_size=2"]


@pytest.mark.parametrize("path", [[], ["harivo.motion_path=true", "harivo.path_token_substitution=0.5"]])
def test_training_on_the_cache_follows_the_pixels_loss_curve(base_dir, tmp_path, capsys, path):
    """With a path predictor too: the cache holds each clip's measured path (and its text reads the captions)."""
    main(["precompute", *common(base_dir), *path, "--out", str(tmp_path / "cache"), "--clips-per-shard", "4"])
    assert "Wrote 6 clips" in capsys.readouterr().out
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["clips"] == 6 and index["shards"] == ["latents-00000.safetensors", "latents-00001.safetensors"]
    cache = LatentDataset(tmp_path / "cache")
    item = cache[5]
    assert item["latent_mean"].shape[1] == 4 and item["text"].ndim == 2 and item["caption"]
    assert ("path" in item) == bool(path)
    settings = ["max_steps=6", "harivo.caption_dropout=0.5", "checkpoint_every=3", *path]  # epochs of 3 batches
    Trainer(tiny_config("harivo", tmp_path / "pixels", *common(base_dir)[1:], *settings)).train()
    cached = [*common(base_dir)[1:], *settings, "data.kind=latents", f"data.latents={tmp_path / 'cache'}"]
    Trainer(tiny_config("harivo", tmp_path / "cached", *cached)).train()
    pixels, from_cache = read_log(tmp_path / "pixels"), read_log(tmp_path / "cached")
    assert [r["total"] for r in from_cache] == pytest.approx([r["total"] for r in pixels], rel=1e-5)


def test_precompute_resumes_and_a_cache_of_another_base_model_is_refused(base_dir, tmp_path, capsys):
    out = tmp_path / "cache"
    main(["precompute", *common(base_dir), "--out", str(out), "--clips-per-shard", "2"])
    first = (out / "latents-00000.safetensors").stat().st_mtime_ns
    (out / "latents-00002.safetensors").unlink()  # as if stopped before the last shard
    main(["precompute", *common(base_dir), "--out", str(out), "--clips-per-shard", "2"])
    assert (out / "latents-00000.safetensors").stat().st_mtime_ns == first  # kept, not recomputed
    assert json.loads((out / "index.json").read_text())["clips"] == 6
    partial = tmp_path / "partial"  # shards of 4 and 2 clips: a rerun of the complete cache changes nothing
    for _ in range(2):
        main(["precompute", *common(base_dir), "--out", str(partial), "--clips-per-shard", "4"])
        assert json.loads((partial / "index.json").read_text())["clips"] == 6
        assert len(LatentDataset(partial)) == 6 and LatentDataset(partial)[5]["caption"]
    (partial / "index.json").unlink()  # stopped after its last shard, before the index: resumed from the shards
    main(["precompute", *common(base_dir), "--out", str(partial), "--clips-per-shard", "4"])
    assert json.loads((partial / "index.json").read_text())["clips"] == 6
    other = tmp_path / "other-base"  # the same architecture, other weights
    tiny_stable_diffusion(seed=1).save_pretrained(other)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", *TINY["harivo"], f"harivo.base_model={other}", "data.kind=latents", f"data.latents={out}",
              f"output_dir={tmp_path / 'run'}", "max_steps=1"])  # fmt: skip
    err = capsys.readouterr().err
    assert "was computed with another base model" in err and err.count("\n") == 1, err
