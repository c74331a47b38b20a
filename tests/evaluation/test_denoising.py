"""The temporal-gain diagnostic: an untrained adapter is exactly the T2I model; trained weights change the ratio."""

import numpy as np
import pytest
import torch

from harivo import HarivoPipeline
from harivo.data import ShapesVideoDataset
from harivo.evaluation.denoising import denoising_errors
from tests.helpers import randomize_temporal_layers


@pytest.fixture(scope="module")
def clips():
    dataset = ShapesVideoDataset(length=4, seed=0, num_frames=4, resolution=32)
    items = [dataset[i] for i in range(3)]
    return torch.stack([item["pixel_values"] for item in items]), [item["caption"] for item in items]


def test_untrained_adapter_has_ratio_one_and_trained_weights_do_not(base_dir, make_adapter, clips):
    pixels, captions = clips
    pipe = HarivoPipeline.from_pretrained(base_dir, adapter=make_adapter())
    errors = denoising_errors(pipe, pixels, captions, timesteps=(100, 900), batch_size=2)
    assert set(errors) == {100, 900}
    for values in errors.values():
        assert values["ratio"] == pytest.approx(1.0, abs=1e-6) and values["video"] > 0
    randomize_temporal_layers(pipe.adapter)
    changed = denoising_errors(pipe, pixels, captions, timesteps=(900,))
    assert not np.isclose(changed[900]["ratio"], 1.0)


def test_one_caption_per_clip(base_dir, make_adapter, clips):
    pipe = HarivoPipeline.from_pretrained(base_dir, adapter=make_adapter())
    with pytest.raises(ValueError, match="captions"):
        denoising_errors(pipe, clips[0], clips[1][:1])


def test_noise_is_warped_along_the_measured_path_as_in_training(base_dir, make_adapter, clips):
    pixels, captions = clips
    results = {}
    for warp in (False, True):
        pipe = HarivoPipeline.from_pretrained(base_dir, adapter=make_adapter(motion_path=True, noise_warping=warp))
        results[warp] = denoising_errors(pipe, pixels, captions, timesteps=(900,), batch_size=2)[900]
        assert results[warp]["ratio"] == pytest.approx(1.0, abs=1e-6)  # still an untrained adapter
    # the same seed, other noise: warped along each clip's path instead of IID
    assert results[True]["video"] != pytest.approx(results[False]["video"], rel=1e-4)
