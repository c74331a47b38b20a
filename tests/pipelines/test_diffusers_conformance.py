"""Save / load like diffusers: variants, LoRA, pickle policy and malformed folders."""

import json
import pickle

import pytest
import torch
from diffusers import DDIMScheduler

from harivo import HarivoLoadError
from harivo.models import HarivoAdapter
from harivo.pipelines import HarivoPipeline
from tests.helpers import randomize_temporal_layers, tiny_pipeline

CALL = {"prompt": "a small red circle moving left", "num_frames": 4, "height": 16, "width": 16}


def video(pipe, **kwargs):
    generator = torch.Generator().manual_seed(0)
    return pipe(**{**CALL, **kwargs}, num_inference_steps=2, generator=generator, output_type="pt").frames


@pytest.fixture
def pipe(tiny_sd):
    torch.manual_seed(0)
    adapter = HarivoAdapter.from_unet(tiny_sd.unet, num_frame_tokens=2, max_frames=8, motion_num_attention_heads=2)
    return tiny_pipeline(tiny_sd, randomize_temporal_layers(adapter))


def test_adapter_variants_round_trip(pipe, tmp_path):
    pipe.adapter.save_pretrained(tmp_path / "adapter", variant="fp16")
    assert (tmp_path / "adapter" / "mapping_network" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    for variant in (None, "fp16"):  # the manifest remembers the variant
        loaded = HarivoAdapter.from_pretrained(tmp_path / "adapter", variant=variant)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), pipe.adapter.state_dict().values()))


def test_saved_pipeline_loads_with_and_without_a_variant(pipe, tmp_path):
    expected = video(pipe)
    pipe.save_pretrained(tmp_path / "fp16", variant="fp16")
    loaded = video(_quiet(HarivoPipeline.from_pretrained(tmp_path / "fp16", variant="fp16")))
    torch.testing.assert_close(loaded, expected, atol=1e-5, rtol=1e-5)
    pipe.save_pretrained(tmp_path / "plain")
    plain = video(_quiet(HarivoPipeline.from_pretrained(tmp_path / "plain")))
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5)


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler()
    return pipe


def test_motion_lora_must_be_fused_or_unloaded_before_saving(pipe, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    # a motion LoRA, written in diffusers' LoRA format and loaded back the way users load one
    pipe.unet.add_adapter(LoraConfig(r=2, init_lora_weights=False, target_modules=r".*motion_modules.*\.to_(q|v)"))
    lora = get_peft_model_state_dict(pipe.unet)
    HarivoPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=lora)
    pipe.unet.delete_adapters("default")
    plain = video(pipe)
    pipe.load_lora_weights(tmp_path / "lora")
    with_lora = video(pipe)
    assert not torch.equal(with_lora, plain)
    with pytest.raises(ValueError, match=r"LoRA layers loaded into it.*pipe.fuse_lora\(\)"):
        pipe.adapter.save_pretrained(tmp_path / "broken")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    pipe.adapter.save_pretrained(tmp_path / "fused")
    reloaded = HarivoAdapter.from_pretrained(tmp_path / "fused")
    assert not any("lora" in key for key in reloaded.state_dict())
    pipe.adapter = reloaded
    torch.testing.assert_close(video(pipe), with_lora, atol=1e-5, rtol=1e-4)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickle_weights_warn_when_allowed_and_malicious_ones_are_refused_as_such(pipe, tmp_path):
    pipe.adapter.save_pretrained(tmp_path / "adapter")
    folder = tmp_path / "adapter" / "mapping_network"
    weights = next(folder.glob("*.safetensors"))
    from safetensors.torch import load_file

    torch.save(load_file(weights), folder / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(HarivoLoadError, match=r"pickle weight file without a \.safetensors twin"):
        HarivoAdapter.from_pretrained(tmp_path / "adapter")
    with pytest.warns(UserWarning, match=r"Loading pickle weights .*diffusion_pytorch_model.bin"):
        HarivoAdapter.from_pretrained(tmp_path / "adapter", allow_pickle=True)
    (folder / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with (
        pytest.warns(UserWarning, match="Loading pickle weights"),
        pytest.raises(HarivoLoadError, match=r"Refused to load the mapping network.*holds objects other than tensors"),
    ):
        HarivoAdapter.from_pretrained(tmp_path / "adapter", allow_pickle=True)


@pytest.mark.parametrize("content", ["[1, 2]", '"adapter"', '{"components": 3}'])
def test_a_manifest_that_is_json_but_not_an_object_is_one_line(pipe, tmp_path, content):
    pipe.adapter.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "harivo_adapter.json").write_text(content)
    with pytest.raises(HarivoLoadError, match="is not a HARIVO adapter manifest"):
        HarivoAdapter.from_pretrained(tmp_path / "adapter")


def test_a_component_config_that_is_not_an_object_is_one_line(pipe, tmp_path):
    pipe.adapter.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "mapping_network" / "config.json").write_text(json.dumps([1, 2, 3]))
    with pytest.raises(HarivoLoadError, match="Could not load the mapping network") as error:
        HarivoAdapter.from_pretrained(tmp_path / "adapter")
    assert "\n" not in str(error.value)


# What diffusers' AnimateDiff pipelines take that harivo's counterparts do not, and why: video-to-video's custom
# schedules (not yet); image-to-video stands for SparseCtrl, whose image ControlNet is here the first frame itself
NOT_TAKEN = {
    "HarivoVideoToVideoPipeline": {"timesteps", "sigmas", "enforce_inference_steps"},
    "HarivoImageToVideoPipeline": {
        "conditioning_frames",
        "controlnet_conditioning_scale",
        "controlnet_frame_indices",
        "guess_mode",
    },
}


def test_every_task_pipeline_shows_diffusers_arguments_in_its_signature():
    """Tools and diffusers' tests read `inspect.signature(pipe.__call__)` (prompt, guidance_scale, callbacks,
    IP-Adapter ...): the task pipelines show the text-to-video arguments they pass on, and their own."""
    import inspect

    from diffusers import (
        AnimateDiffControlNetPipeline,
        AnimateDiffPipeline,
        AnimateDiffSparseControlNetPipeline,
        AnimateDiffVideoToVideoPipeline,
    )

    from harivo.pipelines import HarivoControlNetPipeline, HarivoImageToVideoPipeline, HarivoVideoToVideoPipeline

    base = set(inspect.signature(HarivoPipeline.__call__).parameters)
    for ours, theirs, own in (
        (HarivoPipeline, AnimateDiffPipeline, set()),
        (HarivoControlNetPipeline, AnimateDiffControlNetPipeline, {"conditioning_frames", "guess_mode"}),
        (HarivoVideoToVideoPipeline, AnimateDiffVideoToVideoPipeline, {"video", "strength"}),
        (HarivoImageToVideoPipeline, AnimateDiffSparseControlNetPipeline, {"image", "strength"}),
    ):
        parameters = inspect.signature(ours.__call__).parameters
        assert base | own <= set(parameters), ours.__name__
        assert not [name for name, p in parameters.items() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        lacking = set(inspect.signature(theirs.__call__).parameters) - set(parameters) - {"kwargs"}
        assert lacking == NOT_TAKEN.get(ours.__name__, set()), (ours.__name__, lacking)


def test_a_variant_save_keeps_the_default_weights(pipe, tmp_path):
    """diffusers' `save_pretrained(variant="fp16")` writes the variant beside the default files, never over them."""
    pipe.save_pretrained(tmp_path / "both")
    default = {k: v.clone() for k, v in pipe.adapter.state_dict().items()}
    fresh = HarivoPipeline.from_pretrained(tmp_path / "both")  # its own weights: the fixture's are shared
    fresh.to(torch.float16).save_pretrained(tmp_path / "both", variant="fp16")
    folder = tmp_path / "both" / "adapter" / "mapping_network"
    assert {p.name for p in folder.glob("*.safetensors")} == {
        "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
    }  # fmt: skip
    plain = HarivoAdapter.from_pretrained(tmp_path / "both" / "adapter")
    assert all(v.dtype == torch.float32 and torch.equal(v, default[k]) for k, v in plain.state_dict().items())
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(folder / "diffusion_pytorch_model.fp16.safetensors").values()} == {
        torch.float16
    }
    half = HarivoAdapter.from_pretrained(tmp_path / "both" / "adapter", variant="fp16", torch_dtype=torch.float16)
    assert all(torch.equal(v, default[k].half()) for k, v in half.state_dict().items())


def test_a_per_component_dtype_reaches_the_adapter(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    for dtype, expected in (
        ({"adapter": torch.float16, "default": torch.float32}, torch.float16),
        ({"default": torch.bfloat16}, torch.bfloat16),
        ({"unet": torch.float16}, torch.float32),
    ):
        loaded = HarivoPipeline.from_pretrained(tmp_path / "saved", torch_dtype=dtype)
        assert {v.dtype for v in loaded.adapter.state_dict().values()} == {expected}, dtype


def test_a_missing_variant_is_a_value_error_as_in_diffusers(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="variant=fp16") as error:
        HarivoPipeline.from_pretrained(tmp_path / "plain", variant="fp16")
    assert isinstance(error.value, HarivoLoadError) and "\n" not in str(error.value)
