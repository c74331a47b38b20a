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


def original_motion_lora(unet, rank: int = 2, seed: int = 0, std: float = 0.2) -> dict:
    """A motion LoRA of `unet`'s temporal attention projections, keyed as AnimateDiff's `v2_lora_*.ckpt` are
    (`...motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_q_lora.down.weight`)."""
    import re

    generator = torch.Generator().manual_seed(seed)
    state = {}
    pattern = re.compile(r".*motion_modules\.\d+\.transformer_blocks\.\d+\.attn\d\.(to_q|to_k|to_v|to_out\.0)$")
    for name, module in unet.named_modules():
        if not pattern.match(name):
            continue
        module_path, _, projection = name.removesuffix(".0").rpartition(".")
        original = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", module_path, count=1)
        original = original.replace(".attn1", ".attention_blocks.0").replace(".attn2", ".attention_blocks.1")
        state[f"{original}.processor.{projection}_lora.down.weight"] = (
            torch.randn(rank, module.in_features, generator=generator) * std
        )
        state[f"{original}.processor.{projection}_lora.up.weight"] = (
            torch.randn(module.out_features, rank, generator=generator) * std
        )
    return state


def test_an_animatediff_motion_lora_in_its_original_layout_matches_the_weights_merged_by_hand(parts, tmp_path):
    """AnimateDiff's own motion LoRAs (`v2_lora_ZoomIn.ckpt` and kin): renamed for diffusers, added to the temporal
    layers at scale 1 exactly as `up @ down`; a scale of 0 is exactly without it."""
    sd, adapter = parts
    pipe = tiny_pipeline(sd, adapter)
    state = original_motion_lora(pipe.unet)
    assert state and all("temporal_transformer" in key for key in state)
    save_file(state, tmp_path / "v2_lora_Custom.safetensors")
    merged = copy.deepcopy(adapter)
    modules = dict(merged.motion_adapter.named_modules())
    with torch.no_grad():
        for key, down in state.items():
            if key.endswith("down.weight"):
                up = state[key.replace(".down.", ".up.")]
                name = key.split(".processor.")[0].replace(".temporal_transformer", "")
                name = name.replace(".attention_blocks.0", ".attn1").replace(".attention_blocks.1", ".attn2")
                projection = key.split(".processor.")[1].split("_lora")[0]
                name = f"{name.split('motion_modules', 1)[0]}motion_modules{name.split('motion_modules', 1)[1]}"
                modules[f"{name}.{'to_out.0' if projection == 'to_out' else projection}"].weight += up @ down
    expected = video(tiny_pipeline(sd, merged))
    plain = video(pipe)
    pipe.load_lora_weights(str(tmp_path / "v2_lora_Custom.safetensors"), adapter_name="zoom")
    with_lora = video(pipe)
    assert (with_lora - plain).abs().max() > 0.01
    torch.testing.assert_close(with_lora, expected, atol=1e-4, rtol=1e-4)
    pipe.set_adapters(["zoom"], adapter_weights=[0.0])
    assert torch.equal(video(pipe), plain)


def test_an_original_motion_lora_checkpoint_needs_allow_pickle(tmp_path):
    """The .ckpt files AnimateDiff ships load through --lora only with --allow-pickle (unpickling can run code)."""
    from harivo import load_default_pipeline
    from harivo.cli import main

    path = tmp_path / "v2_lora_Custom.ckpt"
    torch.save(original_motion_lora(load_default_pipeline().unet), path)
    common = ["generate", "a large red circle moving right on a plain black background", "--num-frames", "2",
              "--steps", "1", "--lora", str(path)]  # fmt: skip
    with pytest.raises(SystemExit):
        main([*common, "-o", str(tmp_path / "refused.mp4")])
    main([*common, "-o", str(tmp_path / "zoom.mp4"), "--allow-pickle"])
    assert (tmp_path / "zoom.mp4").is_file() and not (tmp_path / "refused.mp4").exists()
