"""The adapter folder: round trip, AnimateDiff interop, and every load error a user can hit."""

import json

import pytest
import torch
from diffusers import MotionAdapter

from harivo import HarivoLoadError, IncompatibleAdapterError
from harivo.models import HarivoAdapter, HarivoUNet
from harivo.utils.tiny import tiny_unet
from tests.helpers import NUM_FRAMES, randomize_temporal_layers


@pytest.fixture
def trained_adapter(make_adapter):
    return randomize_temporal_layers(make_adapter(num_frame_tokens=2))


@torch.no_grad()
def test_round_trip_reproduces_outputs_exactly(tiny_sd, trained_adapter, text_embeds, tmp_path):
    trained_adapter.save_pretrained(tmp_path)
    manifest = json.loads((tmp_path / "harivo_adapter.json").read_text())
    assert manifest["components"] == ["motion_adapter", "mapping_network", "frame_token_generator", "projection_head"]
    assert list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("*.bin"))
    loaded = HarivoAdapter.from_pretrained(tmp_path)
    sample = torch.randn(2, 4, NUM_FRAMES, 8, 8)
    original = HarivoUNet.from_unet2d(tiny_sd.unet, trained_adapter)
    reloaded = HarivoUNet.from_unet2d(tiny_sd.unet, loaded)
    assert torch.equal(
        original(original.map_noise(sample), 7, text_embeds), reloaded(reloaded.map_noise(sample), 7, text_embeds)
    )


def test_saves_only_its_own_weights(trained_adapter, tmp_path):
    trained_adapter.save_pretrained(tmp_path, include_projection_head=False)
    saved = sum(p.stat().st_size for p in tmp_path.rglob("*.safetensors"))
    own = sum(
        p.numel() * p.element_size() for n, p in trained_adapter.named_parameters() if "projection_head" not in n
    )
    assert saved < own + 64 * 1024  # parameters plus safetensors headers, no frozen base weights
    assert HarivoAdapter.from_pretrained(tmp_path).projection_head is None


def test_motion_adapter_subfolder_is_a_diffusers_motion_adapter(trained_adapter, tmp_path):
    trained_adapter.save_pretrained(tmp_path)
    motion = MotionAdapter.from_pretrained(tmp_path / "motion_adapter")
    for (name, ours), theirs in zip(trained_adapter.motion_adapter.state_dict().items(), motion.state_dict().values()):
        assert torch.equal(ours, theirs), name


def test_plain_motion_adapter_folder_loads_as_is(trained_adapter, tmp_path):
    trained_adapter.motion_adapter.save_pretrained(tmp_path)
    adapter = HarivoAdapter.from_pretrained(tmp_path)
    assert not adapter.frame_token_generator.enabled
    noise = torch.randn(1, 4, 3, 4, 4)
    torch.testing.assert_close(adapter.mapping_network(noise), noise, atol=1e-5, rtol=0)


def test_adapter_for_another_base_is_refused(trained_adapter):
    other = tiny_unet(cross_attention_dim=48)
    with pytest.raises(IncompatibleAdapterError, match="cross_attention_dim"):
        HarivoUNet.from_unet2d(other, trained_adapter)
    wider = tiny_unet()
    wider.register_to_config(block_out_channels=(32, 64))
    with pytest.raises(IncompatibleAdapterError, match="block_out_channels"):
        trained_adapter.check_compatible(wider)


def test_missing_folder_missing_part_and_corrupt_weights(trained_adapter, tmp_path):
    with pytest.raises(HarivoLoadError, match="does not exist"):
        HarivoAdapter.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(HarivoLoadError, match="neither a HARIVO adapter folder"):
        HarivoAdapter.from_pretrained(tmp_path)
    trained_adapter.save_pretrained(tmp_path / "adapter")
    weights = tmp_path / "adapter/mapping_network/diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(HarivoLoadError, match="mapping network"):
        HarivoAdapter.from_pretrained(tmp_path / "adapter")
    weights.unlink()
    with pytest.raises(HarivoLoadError, match="no weight file"):
        HarivoAdapter.from_pretrained(tmp_path / "adapter")
    for path in (tmp_path / "adapter/mapping_network").iterdir():
        path.unlink()
    (tmp_path / "adapter/mapping_network").rmdir()
    with pytest.raises(HarivoLoadError, match="missing its 'mapping_network'"):
        HarivoAdapter.from_pretrained(tmp_path / "adapter")


def test_pickle_weights_need_an_explicit_opt_in(trained_adapter, tmp_path):
    trained_adapter.save_pretrained(tmp_path, safe_serialization=False)
    assert list(tmp_path.rglob("*.bin"))
    with pytest.raises(HarivoLoadError, match="allow_pickle"):
        HarivoAdapter.from_pretrained(tmp_path)
    loaded = HarivoAdapter.from_pretrained(tmp_path, allow_pickle=True)
    for ours, theirs in zip(trained_adapter.parameters(), loaded.parameters()):
        assert torch.equal(ours, theirs)


def test_sampling_defaults_are_saved_loaded_and_checked(make_adapter, tmp_path):
    adapter = make_adapter()
    assert adapter.sampling_defaults == {}
    adapter.save_pretrained(tmp_path / "plain")
    assert "sampling_defaults" not in json.loads((tmp_path / "plain" / "harivo_adapter.json").read_text())
    adapter.sampling_defaults = {
        "temporal_window": (0.0, 0.5), "motion_path_window": (0.0, 0.8), "scheduler": "dpm-solver++",
        "num_inference_steps": 15,
    }  # fmt: skip
    adapter.save_pretrained(tmp_path / "windowed")
    assert HarivoAdapter.from_pretrained(tmp_path / "windowed").sampling_defaults == adapter.sampling_defaults
    manifest_path = tmp_path / "windowed" / "harivo_adapter.json"
    manifest = json.loads(manifest_path.read_text())
    for bad, message in (({"temporal_window": [0.7, 0.2]}, "fraction window"), ({"guidance": 3}, "Unknown"),
                         ([1, 2], "must be an object"), ({"scheduler": "lms"}, "sampler name"),
                         ({"num_inference_steps": 0}, "positive whole number"),
                         ({"num_inference_steps": 2.5}, "positive whole number")):  # fmt: skip
        manifest_path.write_text(json.dumps({**manifest, "sampling_defaults": bad}))
        with pytest.raises(HarivoLoadError, match=message) as error:
            HarivoAdapter.from_pretrained(tmp_path / "windowed")
        assert "\n" not in str(error.value)
