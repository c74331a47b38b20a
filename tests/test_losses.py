"""Each loss on hand-made tensors with a known answer, its limit cases, and the total's bookkeeping."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from harivo.losses import (
    DecoupledContrastiveLoss,
    DenoisingStep,
    DiffusionLoss,
    HarivoLoss,
    LossWeights,
    MotionPathLoss,
    TemporalAttentionLoss,
    TemporalRegularizationLoss,
    attention_map_distance,
)
from harivo.models.video_unet import FeatureCapture
from tests.helpers import NUM_FRAMES, randomize_temporal_layers


def make_step(**overrides) -> DenoisingStep:
    shape = (2, 4, NUM_FRAMES, 8, 8)
    fields = {
        "noisy_latents": torch.zeros(shape),
        "timesteps": torch.tensor([1, 2]),
        "encoder_hidden_states": torch.zeros(2, 77, 32),
        "model_output": torch.zeros(shape),
        "target": torch.zeros(shape),
    }
    fields.update(overrides)
    return DenoisingStep(**fields)


def test_diffusion_loss_known_value():
    output = torch.zeros(2, 4, NUM_FRAMES, 8, 8)
    target = torch.zeros_like(output)
    target[0] = 2.0  # squared error 4 everywhere in sample 0
    loss = DiffusionLoss()(None, make_step(model_output=output, target=target))
    torch.testing.assert_close(loss, torch.tensor([4.0, 0.0]))


def test_attention_distance_known_values():
    num_frames, queries, keys = 3, 2, 4
    maps = torch.zeros(num_frames, 1, queries, keys)  # one video, one head
    maps[0, :, :, 0] = 1.0  # frame 0 attends to key 0
    maps[1, :, :, 1] = 1.0  # frame 1 to key 1: disjoint, L1 distance 2
    maps[2, :, :, 1] = 1.0  # frame 2 same as frame 1: distance 0
    torch.testing.assert_close(attention_map_distance(maps, num_frames), torch.tensor([1.0]))  # mean(2, 0)
    uniform = torch.full((num_frames, 1, queries, keys), 1 / keys)
    torch.testing.assert_close(attention_map_distance(uniform, num_frames), torch.tensor([0.0]))


def test_trsa_is_zero_for_identical_frames_and_needs_maps():
    maps = torch.softmax(torch.randn(2, 3, 5, 5), dim=-1)  # (videos, heads, Q, K)
    identical = maps.repeat_interleave(NUM_FRAMES, dim=0)  # every frame the same
    step = make_step(capture=FeatureCapture(attention_maps={"a": identical, "b": identical}))
    torch.testing.assert_close(TemporalAttentionLoss()(None, step), torch.zeros(2))
    with pytest.raises(ValueError, match="attention maps"):
        TemporalAttentionLoss()(None, make_step())


def test_decoupled_contrastive_known_value():
    loss = DecoupledContrastiveLoss(temperature=0.5, queue_size=0, embedding_dim=2)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # anchor 0: positive <z1_0,z2_0>=1 -> -1/0.5 = -2; one negative z2_1 with <.,.>=0 -> log(exp(0)) = 0
    torch.testing.assert_close(loss.contrast(z1, z2, z2), torch.tensor([-2.0, -2.0]))
    z2_far = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # positives orthogonal, negatives aligned
    torch.testing.assert_close(loss.contrast(z1, z2_far, z2_far), torch.tensor([2.0, 2.0]))


def test_decoupled_contrastive_queue_is_fifo_and_used_as_negatives():
    loss = DecoupledContrastiveLoss(temperature=1.0, queue_size=3, embedding_dim=2)
    assert loss.negatives().shape == (0, 2)
    anchor = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(loss.contrast(anchor, anchor, anchor), torch.tensor([-1.0]))  # no negatives yet
    loss.enqueue(torch.tensor([[0.0, 1.0], [0.0, -1.0]]))
    loss.enqueue(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))  # overwrites the oldest entry
    assert loss.negatives().tolist() == [[-1.0, 0.0], [0.0, -1.0], [1.0, 0.0]]
    expected = -1.0 + math.log(math.exp(-1.0) + math.exp(0.0) + math.exp(1.0))
    torch.testing.assert_close(loss.contrast(anchor, anchor, anchor), torch.tensor([expected]))


def test_regularization_is_zero_at_initialisation_and_positive_once_trained(make_model, text_embeds):
    model = make_model(num_frame_tokens=0)  # zero frame tokens still take a little attention mass, so K=0 here
    latents = torch.randn(2, 4, NUM_FRAMES, 8, 8)
    with torch.no_grad():
        step = make_step(
            model_output=model(latents, 5, text_embeds), noisy_latents=latents, encoder_hidden_states=text_embeds
        )
        step.timesteps = torch.tensor([5, 5])
    assert TemporalRegularizationLoss()(model, step).abs().max() < 1e-10
    randomize_temporal_layers(model.adapter)  # trained temporal layers move the video model away from T2I
    with torch.no_grad():
        step.model_output = model(latents, step.timesteps, text_embeds)
    assert (TemporalRegularizationLoss()(model, step) > 1e-6).all()


def test_regularization_on_a_frame_subset_is_exact_for_those_frames(make_model, text_embeds):
    """`reg_frames`: the image model treats frames on their own, so the subset's loss is those frames' share of the
    all-frames loss, and the all-frames loss is its average over subsets."""
    model = make_model(num_frame_tokens=2)
    randomize_temporal_layers(model.adapter)
    latents = torch.randn(2, 4, NUM_FRAMES, 8, 8)
    with torch.no_grad():
        step = make_step(
            model_output=model(latents, 5, text_embeds), noisy_latents=latents, encoder_hidden_states=text_embeds
        )
        step.timesteps = torch.tensor([5, 5])
        with model.temporal_layers_disabled():
            image = model(latents, step.timesteps, text_embeds)
    per_frame = (step.model_output - image).pow(2).mean(dim=(1, 3, 4))  # (B, F)
    torch.testing.assert_close(TemporalRegularizationLoss()(model, step), per_frame.mean(dim=1))
    torch.testing.assert_close(TemporalRegularizationLoss(NUM_FRAMES)(model, step), per_frame.mean(dim=1))
    torch.manual_seed(7)
    chosen = torch.randperm(NUM_FRAMES)[:2].sort().values
    torch.manual_seed(7)
    subset = TemporalRegularizationLoss(2)(model, step)
    torch.testing.assert_close(subset, per_frame[:, chosen].mean(dim=1), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="num_frames"):
        TemporalRegularizationLoss(-1)


def test_total_loss_logs_each_term_and_skips_zero_weights(make_model, text_embeds, monkeypatch):
    model = make_model(num_frame_tokens=2)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    latents = torch.randn(2, 4, NUM_FRAMES, 8, 8)
    loss_fn = HarivoLoss(LossWeights(diffusion=1.0, reg=0.5, trsa=0.2, dc=0.1), dc_queue_size=8, embedding_dim=16)
    total, logs = loss_fn(model, scheduler, latents, text_embeds, generator=torch.Generator().manual_seed(0))
    assert set(logs) == {"diffusion", "reg", "trsa", "dc", "total"}
    expected = logs["diffusion"] + 0.5 * logs["reg"] + 0.2 * logs["trsa"] + 0.1 * logs["dc"]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert all(p.grad is not None for p in model.adapter.projection_head.parameters())  # L_dc reaches g_theta
    assert int(loss_fn.dc.queue_filled) == 2

    calls = []
    original_capture, original_bypass = model.capture, model.temporal_layers_disabled
    monkeypatch.setattr(model, "capture", lambda *a, **k: calls.append(("capture", a, k)) or original_capture(*a, **k))
    monkeypatch.setattr(model, "temporal_layers_disabled", lambda: calls.append(("bypass",)) or original_bypass())
    diffusion_only = HarivoLoss(LossWeights(diffusion=1.0, reg=0.0, trsa=0.0, dc=0.0))
    _, logs = diffusion_only(model, scheduler, latents, text_embeds)
    assert set(logs) == {"diffusion", "total"}
    assert calls == [("capture", ([],), {"h_space": False})]  # no maps, no h-space, no extra forward


def test_v_prediction_target(make_model, text_embeds):
    model = make_model()
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    _, logs = HarivoLoss(LossWeights(1.0, 0.0, 0.0, 0.0))(
        model, scheduler, torch.randn(2, 4, NUM_FRAMES, 8, 8), text_embeds
    )
    assert logs["diffusion"] > 0
    with pytest.raises(ValueError, match="prediction_type"):
        HarivoLoss()(model, DDPMScheduler(prediction_type="sample"), torch.randn(2, 4, NUM_FRAMES, 8, 8), text_embeds)


def test_timestep_bias_moves_training_towards_high_noise():
    generator = torch.Generator().manual_seed(0)
    uniform = HarivoLoss(timestep_bias=0.0).sample_timesteps(20000, 1000, generator)
    biased = HarivoLoss(timestep_bias=2.0).sample_timesteps(20000, 1000, generator)
    assert uniform.min() >= 0 and uniform.max() <= 999 and biased.max() <= 999
    assert abs(uniform.float().mean().item() - 499.5) < 10
    assert abs(biased.float().mean().item() - 750) < 10  # density ∝ (t/T)^2 has mean 3T/4
    with pytest.raises(ValueError, match="timestep_bias"):
        HarivoLoss(timestep_bias=-1.0)


def test_path_loss_averages_over_the_copies_of_the_captions_the_predictor_reads(make_model, text_embeds):
    model = make_model(motion_path=True)
    torch.nn.init.normal_(model.adapter.path_predictor.velocity.weight)  # a predictor that predicts some motion
    displacements = torch.randn(2, NUM_FRAMES, 2, generator=torch.Generator().manual_seed(0))

    def path_loss(path_text=None):
        step = make_step(encoder_hidden_states=text_embeds, displacements=displacements)
        step.path_encoder_hidden_states = path_text
        return MotionPathLoss()(model, step)

    plain = path_loss()
    assert plain.shape == (2,) and (plain > 0).all()
    torch.testing.assert_close(path_loss(text_embeds.repeat(2, 1, 1)), plain)  # two identical copies
    swapped = path_loss(text_embeds.flip(0))  # each clip read with the other's caption
    assert not torch.allclose(swapped, plain)
    torch.testing.assert_close(path_loss(torch.cat([text_embeds, text_embeds.flip(0)])), (plain + swapped) / 2)
    with pytest.raises(ValueError, match="whole number of copies"):
        path_loss(text_embeds.repeat(2, 1, 1)[:3])
