"""The pipeline as a diffusers user shares, reuses and swaps it: no state outlives its owner, bad numbers are refused."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

from harivo.errors import SamplingDivergedError
from harivo.models import HarivoAdapter
from harivo.pipelines import HarivoPipeline
from tests.helpers import randomize_temporal_layers, tiny_pipeline

CALL = {"prompt": "a small red circle moving left", "num_frames": 4, "height": 16, "width": 16}


def conditioned_adapter(tiny_sd) -> HarivoAdapter:
    torch.manual_seed(0)
    adapter = HarivoAdapter.from_unet(
        tiny_sd.unet, num_frame_tokens=2, max_frames=8, motion_num_attention_heads=2, mapping_hidden_channels=8,
        motion_conditioning=True, motion_conditioning_dim=16,
    )  # fmt: skip
    randomize_temporal_layers(adapter)
    with torch.no_grad():  # a trained conditioner and mapping network: non-zero outputs
        adapter.motion_conditioner.proj_out.weight.normal_(std=0.5)
        adapter.mapping_network.layers[-1].weight.normal_(std=0.05)
    return adapter


def make_pipe(tiny_sd, adapter) -> HarivoPipeline:
    return tiny_pipeline(tiny_sd, adapter)


def video(pipe, seed=0, prompt=CALL["prompt"], steps=2, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return pipe(
        **{**CALL, "prompt": prompt, **kwargs}, num_inference_steps=steps, generator=generator, output_type="pt"
    )[0]


def test_pipelines_sharing_one_adapter_each_give_a_fresh_pipelines_output(tiny_sd):
    adapter = conditioned_adapter(tiny_sd)
    first = make_pipe(tiny_sd, adapter)
    alone = video(first)
    second = make_pipe(tiny_sd, adapter)
    other = video(second, prompt="a large blue square moving up")  # leaves its prompt vectors behind, if it could
    third = make_pipe(tiny_sd, adapter)
    assert torch.equal(video(first), alone)
    assert torch.equal(video(third), alone)
    assert torch.equal(video(second, prompt="a large blue square moving up"), other)
    for module in adapter.motion_adapter.modules():  # one hook per temporal layer, however many pipelines
        assert len(getattr(module, "_forward_hooks", {})) <= 1
    # nothing is left behind on the adapter after a call
    assert all(m.proj_in.__dict__.get("_harivo_motion_condition") is None for m in _transformers(adapter))


def _transformers(adapter):
    from harivo.models.adapter import temporal_transformers

    return temporal_transformers(adapter.motion_adapter)


def test_replacing_unet_or_adapter_takes_effect(tiny_sd):
    pipe = make_pipe(tiny_sd, conditioned_adapter(tiny_sd))
    before = video(pipe)
    other = conditioned_adapter(tiny_sd)
    with torch.no_grad():
        other.motion_conditioner.proj_out.weight.normal_(std=1.0)
    pipe.adapter = other
    assert pipe.video_unet.adapter is other
    changed = video(pipe)
    assert not torch.equal(changed, before)
    assert torch.equal(changed, video(make_pipe(tiny_sd, other)))


def test_torch_compiled_unet_is_used_and_matches(tiny_sd):
    pipe = make_pipe(tiny_sd, conditioned_adapter(tiny_sd))
    eager = video(pipe)
    calls = []

    def backend(graph, example_inputs):  # dynamo hands the traced U-Net to this backend: proof it is called
        calls.append(len(example_inputs))
        return graph.forward

    torch._dynamo.reset()
    pipe.unet = torch.compile(pipe.unet, backend=backend)
    compiled = video(pipe)
    torch._dynamo.reset()
    assert calls, "the compiled U-Net was never called"
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_optional_components_and_from_pipe(tiny_sd):
    parts = tiny_sd.components
    text_only = HarivoPipeline(None, parts["text_encoder"], parts["tokenizer"], None, None, DDIMScheduler())
    embeds, _ = text_only.encode_prompt("a red circle", "cpu", 1, False)
    assert embeds.shape == (1, 77, 32)
    with pytest.raises(ValueError, match="no unet and no adapter"):
        text_only("a red circle")
    adapter = conditioned_adapter(tiny_sd)
    from_pipe = HarivoPipeline.from_pipe(tiny_sd, adapter=adapter)
    from_pipe.set_progress_bar_config(disable=True)
    from_pipe.scheduler = DDIMScheduler()
    assert torch.equal(video(from_pipe), video(make_pipe(tiny_sd, adapter)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"guidance_scale": math.nan},
        {"guidance_scale": math.inf},
        {"mg_scale": math.nan},
        {"mg_scale": math.inf},
        {"eta": math.nan},
        {"eta": -0.5},
        {"guidance_rescale": math.nan},
        {"motion_path_projection": math.nan},
        {"mg_window": (0.0, math.nan)},
        {"mg_window": ("a", "b")},
        {"mg_window": 0.5},
        {"latents": torch.full((1, 4, 4, 8, 8), math.nan)},
        {"prompt": []},
        {"num_videos_per_prompt": 0},
        {"decode_chunk_size": 0},
        {"clip_skip": 5},
        {"prompt": None, "prompt_embeds": torch.zeros(77, 32)},
        {"prompt": None, "prompt_embeds": torch.zeros(1, 77, 31)},
        {"prompt": None, "prompt_embeds": torch.full((1, 77, 32), math.nan)},
    ],
)
def test_non_finite_and_malformed_inputs_are_refused_before_sampling(tiny_sd, kwargs):
    pipe = make_pipe(tiny_sd, conditioned_adapter(tiny_sd))
    steps = []
    with pytest.raises(ValueError) as error:
        video(pipe, **kwargs, callback_on_step_end=lambda *args: steps.append(1) or {})
    assert "\n" not in str(error.value) and not steps


def test_latents_that_become_non_finite_stop_sampling(tiny_sd):
    pipe = make_pipe(tiny_sd, conditioned_adapter(tiny_sd))

    def poison(pipeline, step, timestep, tensors):
        return {"latents": tensors["latents"] * math.inf}

    pipe.scheduler = DDIMScheduler()
    with pytest.raises(SamplingDivergedError, match="step 2 of 2"):
        pipe(**CALL, num_inference_steps=2, callback_on_step_end=lambda p, i, t, k: poison(p, i, t, k) if i else {})


@pytest.mark.parametrize(
    "returned, message",
    [
        (lambda k: {"latents": k["latents"][:, :, :1]}, r"returned `latents` of shape \(1, 4, 1, "),
        (lambda k: {"latents": k["latents"][0]}, "it must keep the shape"),
        (lambda k: {"latents": [1, 2]}, r"`latents` of shape list"),
        (lambda k: k["latents"], "must return a dict"),
    ],
)
def test_a_callback_that_returns_malformed_latents_is_one_line(tiny_sd, returned, message):
    pipe = make_pipe(tiny_sd, conditioned_adapter(tiny_sd))
    with pytest.raises(ValueError, match=message) as error:
        video(pipe, callback_on_step_end=lambda p, i, t, k: returned(k))
    assert "\n" not in str(error.value)


def test_per_step_noise_goes_through_the_mapping_network_or_is_refused(tiny_sd):
    pipe = make_pipe(tiny_sd, conditioned_adapter(tiny_sd))
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="bypasses this adapter's noise mapping network"):
        video(pipe)
    pipe.scheduler = DDIMScheduler()
    assert not torch.equal(video(pipe, eta=1.0), video(pipe, eta=0.0))
    assert torch.equal(video(pipe, eta=1.0), video(pipe, eta=1.0))
    pipe.scheduler = DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")
    assert torch.isfinite(video(pipe)).all()
    pipe.adapter = HarivoAdapter.from_unet(tiny_sd.unet, max_frames=8, motion_num_attention_heads=2)  # identity map
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    assert torch.isfinite(video(pipe)).all()
