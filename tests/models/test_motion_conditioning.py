"""The motion conditioner [ours]: identity when fresh, prompt reaches the temporal layers, per-video, round trip."""

import json

import pytest
import torch

from harivo import IncompatibleAdapterError
from harivo.models import HarivoAdapter, HarivoUNet, MotionConditioner
from harivo.models.adapter import temporal_transformers
from tests.helpers import NUM_FRAMES, randomize_temporal_layers


@pytest.fixture
def sample():
    return torch.randn(2, 4, NUM_FRAMES, 8, 8, generator=torch.Generator().manual_seed(0))


def _conditioned_pair(make_adapter, tiny_sd):
    """Two models with the same trained temporal layers, one with a fresh (zero) motion conditioner."""
    plain = randomize_temporal_layers(make_adapter())
    conditioned = make_adapter(motion_conditioning=True, motion_conditioning_dim=16)
    conditioned.motion_adapter.load_state_dict(plain.motion_adapter.state_dict())
    return HarivoUNet.from_unet2d(tiny_sd.unet, plain), HarivoUNet.from_unet2d(tiny_sd.unet, conditioned)


@torch.no_grad()
def test_fresh_conditioner_changes_nothing(tiny_sd, make_adapter, sample, text_embeds):
    plain, conditioned = _conditioned_pair(make_adapter, tiny_sd)
    assert conditioned.adapter.motion_conditioner is not None
    torch.testing.assert_close(conditioned(sample, 10, text_embeds), plain(sample, 10, text_embeds))


@torch.no_grad()
def test_prompt_reaches_the_temporal_layers_per_video(tiny_sd, make_adapter, sample, text_embeds):
    _, model = _conditioned_pair(make_adapter, tiny_sd)
    randomize_temporal_layers(model.adapter, seed=2)  # also gives the conditioner's output layer weights
    swapped = torch.stack([text_embeds[0], text_embeds[0]])  # video 1 gets video 0's prompt
    out, out_swapped = model(sample, 10, text_embeds), model(sample, 10, swapped)
    # video 0 is untouched: each video's vectors go to its own rows (no mixing across the batch)
    torch.testing.assert_close(out_swapped[0], out[0])
    assert (out_swapped[1] - out[1]).abs().max() > 1e-4
    # the prompt reaches the output through the conditioner, not only through cross-attention:
    # zeroing the conditioner changes the output
    model.adapter.motion_conditioner.proj_out.weight.zero_()
    model.adapter.motion_conditioner.proj_out.bias.zero_()
    assert (model(sample, 10, text_embeds) - out).abs().max() > 1e-4
    # the bypass (frozen T2I frame by frame) ignores the conditioner
    with model.temporal_layers_disabled():
        bypassed = model(sample, 10, text_embeds)
    randomize_temporal_layers(model.adapter, seed=3)
    with model.temporal_layers_disabled():
        torch.testing.assert_close(model(sample, 10, text_embeds), bypassed)


def test_conditioner_trains(tiny_sd, make_adapter, sample, text_embeds):
    _, model = _conditioned_pair(make_adapter, tiny_sd)
    loss = model(sample, 10, text_embeds).pow(2).mean()
    loss.backward()
    grad = model.adapter.motion_conditioner.proj_out.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@torch.no_grad()
def test_round_trip_and_old_adapters(tiny_sd, make_adapter, sample, text_embeds, tmp_path):
    adapter = randomize_temporal_layers(make_adapter(motion_conditioning=True, motion_conditioning_dim=16))
    adapter.save_pretrained(tmp_path / "new")
    assert "motion_conditioner" in json.loads((tmp_path / "new" / "harivo_adapter.json").read_text())["components"]
    loaded = HarivoAdapter.from_pretrained(tmp_path / "new")
    original, reloaded = (HarivoUNet.from_unet2d(tiny_sd.unet, a) for a in (adapter, loaded))
    assert torch.equal(original(sample, 7, text_embeds), reloaded(sample, 7, text_embeds))
    make_adapter().save_pretrained(tmp_path / "old")  # an adapter without a conditioner still loads
    assert HarivoAdapter.from_pretrained(tmp_path / "old").motion_conditioner is None


def test_layer_widths_and_errors(make_adapter, text_embeds):
    adapter = make_adapter(motion_conditioning=True, motion_conditioning_dim=16)
    widths = [module.proj_in.out_features for module in temporal_transformers(adapter.motion_adapter)]
    vectors = adapter.motion_conditioner(text_embeds, NUM_FRAMES)
    assert [tuple(v.shape) for v in vectors] == [(2, NUM_FRAMES, width) for width in widths]
    assert adapter.max_frames == 8
    with pytest.raises(ValueError, match="at most 8 frames"):
        adapter.motion_conditioner(text_embeds, 9)
    with pytest.raises(ValueError, match="divisible"):
        MotionConditioner(cross_attention_dim=32, layer_channels=(8,), hidden_dim=10, num_heads=4)
    wrong = MotionConditioner(cross_attention_dim=32, layer_channels=(8,), hidden_dim=16)
    with pytest.raises(IncompatibleAdapterError, match="widths"):
        HarivoAdapter(adapter.motion_adapter, adapter.mapping_network, adapter.frame_token_generator, None, wrong)


@torch.no_grad()
def test_last_token_pooling_reads_only_the_last_token_and_round_trips(tmp_path):
    conditioner = MotionConditioner(cross_attention_dim=8, layer_channels=(4,), hidden_dim=8, pooling="last_token")
    tokens = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    earlier_changed = tokens.clone()
    earlier_changed[:, :-1] = torch.randn(2, 4, 8)
    torch.testing.assert_close(conditioner.pool(earlier_changed), conditioner.pool(tokens))
    last_changed = tokens.clone()
    last_changed[:, -1] = torch.randn(2, 8)  # (a constant shift would vanish in the LayerNorm)
    assert not torch.allclose(conditioner.pool(last_changed), conditioner.pool(tokens))
    attention = MotionConditioner(cross_attention_dim=8, layer_channels=(4,), hidden_dim=8)
    assert not torch.allclose(attention.pool(earlier_changed), attention.pool(tokens))  # the default reads them all
    conditioner.save_pretrained(tmp_path)
    assert MotionConditioner.from_pretrained(tmp_path).config.pooling == "last_token"
    with pytest.raises(ValueError, match="`pooling` must be one of"):
        MotionConditioner(cross_attention_dim=8, layer_channels=(4,), pooling="mean")
