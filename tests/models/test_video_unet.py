"""Model layer: exact parity at initialisation, the temporal bypass, trainable set, captures."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from harivo.models import default_trsa_layers, spatial_self_attention_layers
from harivo.models.video_unet import spatial_cross_attention_layers
from tests.helpers import NUM_FRAMES, frame_by_frame, randomize_temporal_layers


@pytest.fixture
def sample():
    return torch.randn(2, 4, NUM_FRAMES, 8, 8, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_equals_t2i_frame_by_frame_at_initialisation(tiny_sd, make_model, sample, text_embeds):
    model = make_model(num_frame_tokens=0)
    timesteps = torch.tensor([10, 500])
    mapped = model.map_noise(sample)
    expected = frame_by_frame(tiny_sd.unet, mapped, timesteps.repeat_interleave(NUM_FRAMES), text_embeds)
    torch.testing.assert_close(model(mapped, timesteps, text_embeds), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_bypass_is_the_t2i_model_even_when_trained(tiny_sd, make_model, sample, text_embeds):
    model = make_model(num_frame_tokens=2)
    randomize_temporal_layers(model.adapter)
    trained = model(sample, 10, text_embeds)
    expected = frame_by_frame(tiny_sd.unet, sample, 10, text_embeds)
    assert (trained - expected).abs().max() > 1e-3  # the temporal layers and frame tokens do something
    with model.temporal_layers_disabled():
        torch.testing.assert_close(model(sample, 10, text_embeds), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(sample, 10, text_embeds), trained)  # restored afterwards


@torch.no_grad()
def test_frame_tokens_reach_cross_attention(make_model, sample, text_embeds):
    model = make_model(num_frame_tokens=2)
    without = model(sample, 10, text_embeds)
    with torch.no_grad():
        model.adapter.frame_token_generator.mlp[-1].weight.normal_(std=1.0)
    assert (model(sample, 10, text_embeds) - without).abs().max() > 1e-4


def test_only_adapter_parameters_train_and_frozen_weights_stay_bit_identical(make_model, sample, text_embeds):
    model = make_model(num_frame_tokens=2)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.adapter.parameters()}
    frozen_before = {name: p.clone() for name, p in model.unet.named_parameters() if not p.requires_grad}
    assert frozen_before, "the base U-Net must have frozen weights"
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    noise = model.map_noise(sample)
    loss = (model(noise, 10, text_embeds) - sample).pow(2).mean()
    loss.backward()
    optimizer.step()
    for name, param in model.unet.named_parameters():
        if name in frozen_before:
            assert torch.equal(param, frozen_before[name]), name
    moved = [p for p in model.adapter.motion_adapter.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert moved, "gradients must reach the temporal layers"


def test_temporal_layers_are_shared_with_the_adapter(make_model):
    model = make_model()
    unet_modules = {id(m) for m in model.unet.down_blocks[0].motion_modules.modules()}
    adapter_modules = {id(m) for m in model.adapter.motion_adapter.down_blocks[0].motion_modules.modules()}
    assert unet_modules == adapter_modules


def test_capture_attention_maps_and_h_space(make_model, sample, text_embeds):
    model = make_model()
    layers = default_trsa_layers(model.unet)
    assert layers and all(name.startswith("up_blocks.0.") and name.endswith("attn1") for name in layers)
    modules = dict(model.unet.named_modules())
    with model.capture(layers, h_space=True) as capture:
        others = [n for n in spatial_self_attention_layers(model.unet) if n not in layers]
        assert all(isinstance(modules[n].processor, AttnProcessor2_0) for n in others)  # fused kernel kept
        model(sample, 10, text_embeds)
    assert set(capture.attention_maps) == set(layers)
    maps = capture.attention_maps[layers[0]]
    tokens = 4 * 4  # up_blocks.0 runs at 1/2 of the 8x8 latent
    assert maps.shape == (2 * NUM_FRAMES, modules[layers[0]].heads, tokens, tokens)
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    assert capture.h_space.shape == (2 * NUM_FRAMES, 32, 4, 4)
    assert all(isinstance(modules[n].processor, AttnProcessor2_0) for n in layers)  # restored


def test_captured_maps_equal_the_fused_computation(make_model, sample, text_embeds):
    model = make_model()
    with torch.no_grad():
        plain = model(sample, 10, text_embeds)
        with model.capture(default_trsa_layers(model.unet)):
            captured = model(sample, 10, text_embeds)
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)


def test_bypass_nests(make_model, sample, text_embeds):
    model = make_model()
    randomize_temporal_layers(model.adapter)
    with torch.no_grad():
        full = model(sample, 10, text_embeds)
        with model.temporal_layers_disabled():
            bypassed = model(sample, 10, text_embeds)
            with model.temporal_layers_disabled():
                pass
            torch.testing.assert_close(model(sample, 10, text_embeds), bypassed)  # still bypassed after the inner
        torch.testing.assert_close(model(sample, 10, text_embeds), full)


def test_capture_token_attention_keeps_the_output_and_restores_the_processors(make_model, sample, text_embeds):
    model = make_model(num_frame_tokens=2)  # frame tokens are appended to the keys and weigh 0
    weights = torch.zeros(2, text_embeds.shape[1])
    weights[0, 2:4] = 1.0  # the first video's 2nd and 3rd words; the second video's none
    modules = dict(model.unet.named_modules())
    originals = {name: type(modules[name].processor) for name in spatial_cross_attention_layers(model.unet)}
    with torch.no_grad():
        plain = model(sample, 10, text_embeds)
        with model.capture(token_weights=weights, latent_size=(8, 8)) as capture:
            captured = model(sample, 10, text_embeds)
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)
    assert set(capture.token_attention) == set(originals)
    for mass in capture.token_attention.values():
        assert mass.shape[0] == 2 * NUM_FRAMES and 8 % mass.shape[-1] == 0 and mass.shape[-2] == mass.shape[-1]
        assert (mass[:NUM_FRAMES] > 0).all() and (mass[:NUM_FRAMES] < 1).all() and (mass[NUM_FRAMES:] == 0).all()
    assert {name: type(modules[name].processor) for name in originals} == originals
    with pytest.raises(ValueError, match="latent_size"), model.capture(token_weights=weights):
        pass


def test_clear_errors(make_model, sample, text_embeds):
    model = make_model()
    cross_attention = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    with pytest.raises(ValueError, match="Unknown spatial self-attention layers"), model.capture([cross_attention]):
        pass
    too_long = torch.randn(1, 4, 9, 8, 8)
    with pytest.raises(ValueError, match="at most 8 frames"):
        model(too_long, 10, text_embeds[:1])
