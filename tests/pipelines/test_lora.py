"""LoRA on the frozen image model under video: community (kohya / A1111) files, several at once, weights, fuse."""

import copy

import pytest
import torch
from safetensors.torch import save_file

from harivo.utils.tiny import tiny_unet
from tests.helpers import kohya_lora, merge_kohya_lora, randomize_temporal_layers, tiny_pipeline


def video(pipe):
    generator = torch.Generator().manual_seed(0)
    return pipe(
        "a small red circle moving left", num_frames=4, height=16, width=16, num_inference_steps=2,
        generator=generator, output_type="pt",
    ).frames  # fmt: skip


@pytest.fixture
def parts(tiny_sd, make_adapter):
    """A fresh pipeline (own copies of the image model, so LoRA layers never leak between tests) and its adapter."""
    adapter = randomize_temporal_layers(make_adapter())
    sd = copy.deepcopy(tiny_sd)
    return sd, adapter


def lora_file(path, unet, text_encoder, seed):
    state = kohya_lora(unet, text_encoder, seed=seed)
    save_file(state, path)
    return state


def reference(sd, adapter, *loras):
    """The video with LoRAs merged into the weights by hand: `(state, scale)` pairs."""
    unet, text_encoder = copy.deepcopy(sd.unet), copy.deepcopy(sd.text_encoder)
    for state, scale in loras:
        merge_kohya_lora(unet, text_encoder, state, scale)
    pipe = tiny_pipeline(sd, adapter, unet=unet)
    pipe.text_encoder = text_encoder
    return video(pipe)


def test_kohya_lora_matches_the_weights_merged_by_hand(parts, tmp_path):
    sd, adapter = parts
    state = lora_file(tmp_path / "style.safetensors", sd.unet, sd.text_encoder, seed=0)
    expected = reference(sd, adapter, (state, 1.0))
    pipe = tiny_pipeline(sd, adapter)
    plain = video(pipe)
    pipe.load_lora_weights(tmp_path / "style.safetensors", adapter_name="style")
    with_lora = video(pipe)
    assert (with_lora - plain).abs().max() > 0.05
    torch.testing.assert_close(with_lora, expected, atol=1e-4, rtol=1e-4)
    pipe.set_adapters(["style"], adapter_weights=[0.0])
    assert torch.equal(video(pipe), plain)  # a weight of 0 is exactly no LoRA


def test_two_loras_with_weights_fuse_and_unfuse(parts, tmp_path):
    sd, adapter = parts
    first = lora_file(tmp_path / "a.safetensors", sd.unet, sd.text_encoder, seed=1)
    second = lora_file(tmp_path / "b.safetensors", sd.unet, sd.text_encoder, seed=2)
    expected = reference(sd, adapter, (first, 0.5), (second, 0.25))
    pipe = tiny_pipeline(sd, adapter)
    plain = video(pipe)
    pipe.load_lora_weights(tmp_path / "a.safetensors", adapter_name="a")
    pipe.load_lora_weights(tmp_path / "b.safetensors", adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[0.5, 0.25])
    mixed = video(pipe)
    torch.testing.assert_close(mixed, expected, atol=1e-4, rtol=1e-4)
    pipe.fuse_lora()
    torch.testing.assert_close(video(pipe), mixed, atol=1e-4, rtol=1e-4)
    pipe.unfuse_lora()
    torch.testing.assert_close(video(pipe), mixed, atol=1e-4, rtol=1e-4)  # unfused, the adapters are active again
    pipe.unload_lora_weights()
    torch.testing.assert_close(video(pipe), plain, atol=1e-5, rtol=1e-5)


def test_lora_for_another_base_is_refused_and_leaves_nothing(parts, tmp_path):
    sd, adapter = parts
    pipe = tiny_pipeline(sd, adapter)
    plain = video(pipe)
    state = kohya_lora(tiny_unet(cross_attention_dim=48), sd.text_encoder)
    save_file({k: v for k, v in state.items() if k.startswith("lora_unet")}, tmp_path / "other.safetensors")
    with pytest.raises(
        ValueError,
        match=r"The LoRA other.safetensors was made for a base model of another architecture \(size mismatch",
    ) as error:
        pipe.load_lora_weights(tmp_path / "other.safetensors", adapter_name="other")
    assert "\n" not in str(error.value)
    assert not any(pipe.get_list_adapters().values())
    assert torch.equal(video(pipe), plain)


def test_an_image_lora_in_one_pipeline_leaves_another_on_the_same_adapter_alone(parts, tiny_sd, tmp_path):
    """Two pipelines share one adapter (its temporal layers): a LoRA loaded into one pipeline's image model changes
    that pipeline only, and unloading it gives back exactly the other's output."""
    sd, adapter = parts
    lora_file(tmp_path / "style.safetensors", sd.unet, sd.text_encoder, seed=3)
    first, second = tiny_pipeline(sd, adapter), tiny_pipeline(copy.deepcopy(tiny_sd), adapter)
    plain = video(second)
    first.load_lora_weights(tmp_path / "style.safetensors", adapter_name="style")
    assert not torch.equal(video(first), plain)
    assert torch.equal(video(second), plain)
    first.unload_lora_weights()
    torch.testing.assert_close(video(first), plain, atol=1e-6, rtol=1e-6)
