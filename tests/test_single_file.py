"""Single-file base models: written in the original SD 1.x key layout, read back through diffusers, equal outputs."""

import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from harivo import HarivoControlNetPipeline, HarivoLoadError, HarivoPipeline, IncompatibleAdapterError
from harivo.defaults import DEFAULT_MODEL_DIR
from harivo.models import HarivoAdapter
from harivo.single_file import original_layout_state_dict, save_single_file
from tests.helpers import randomize_temporal_layers

PROMPT = "a small red circle moving left"


def video(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(
        PROMPT, num_frames=4, height=16, width=16, num_inference_steps=2, generator=generator, output_type="pt",
        **kwargs,
    ).frames  # fmt: skip


@pytest.fixture(scope="module")
def adapter_dir(tiny_sd, tmp_path_factory):
    torch.manual_seed(0)
    adapter = HarivoAdapter.from_unet(
        tiny_sd.unet, max_frames=8, motion_num_attention_heads=2, mapping_hidden_channels=8, projection_dim=16
    )
    path = tmp_path_factory.mktemp("adapter") / "adapter"
    randomize_temporal_layers(adapter).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_sd, tmp_path_factory):
    return save_single_file(tiny_sd, tmp_path_factory.mktemp("single") / "tiny.safetensors")


def test_original_layout_names(tiny_sd):
    state = original_layout_state_dict(tiny_sd.unet, tiny_sd.vae, tiny_sd.text_encoder)
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",  # conv_in
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",  # first resnet's norm1
        "model.diffusion_model.input_blocks.2.0.op.weight",  # first level's down-sampler
        "model.diffusion_model.middle_block.2.out_layers.3.weight",
        "model.diffusion_model.output_blocks.1.2.conv.weight",  # up-sampler after an attention
        "model.diffusion_model.out.2.bias",
        "first_stage_model.decoder.up.1.block.0.norm1.weight",  # up blocks counted upwards
        "first_stage_model.encoder.mid.attn_1.proj_out.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
    ):
        assert key in state, key
    assert state["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # a 1x1 convolution, as the original
    assert len(state) == sum(len(m.state_dict()) for m in (tiny_sd.unet, tiny_sd.vae, tiny_sd.text_encoder))


@pytest.mark.parametrize("model", ["tiny", "shapes"])
def test_round_trip_through_diffusers_is_exact(model, tiny_sd, base_dir, tmp_path):
    """diffusers' own converter reads the file back weight for weight (two architectures: all levels with
    attention, and the Shapes base whose last level has none)."""
    pipe, folder = (tiny_sd, base_dir) if model == "tiny" else (None, DEFAULT_MODEL_DIR / "base")
    pipe = pipe or StableDiffusionPipeline.from_pretrained(folder)
    path = save_single_file(pipe, tmp_path / "model.safetensors")
    loaded = StableDiffusionPipeline.from_single_file(
        str(path), config=str(folder), safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    for name in ("unet", "vae", "text_encoder"):
        expected, actual = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name


def test_from_single_file_equals_the_folder(checkpoint, base_dir, adapter_dir):
    from_folder = HarivoPipeline.from_pretrained(base_dir, adapter=adapter_dir)
    from_file = HarivoPipeline.from_single_file(checkpoint, adapter=adapter_dir, config=base_dir)
    assert type(from_file.scheduler) is type(from_folder.scheduler)
    assert torch.equal(video(from_file), video(from_folder))


def test_config_must_be_a_text_to_image_folder(checkpoint, base_dir, adapter_dir, tmp_path):
    HarivoPipeline.from_pretrained(base_dir, adapter=adapter_dir).save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"is not a text-to-image model folder \(its unet is UNetMotionModel\)"):
        HarivoPipeline.from_single_file(checkpoint, adapter=adapter_dir, config=tmp_path / "saved")


def test_from_single_file_dtype_and_controlnet(checkpoint, tiny_sd, base_dir, adapter_dir):
    controlnet = ControlNetModel.from_unet(tiny_sd.unet)
    pipe = HarivoControlNetPipeline.from_single_file(
        checkpoint, adapter=adapter_dir, config=base_dir, controlnet=controlnet, torch_dtype=torch.float64
    )
    assert pipe.controlnet is controlnet
    assert pipe.unet.dtype == torch.float64


def test_ckpt_needs_the_pickle_opt_in(tiny_sd, checkpoint, base_dir, adapter_dir, tmp_path):
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(checkpoint)}, ckpt)
    with pytest.raises(HarivoLoadError, match=r"tiny.ckpt is a pickle checkpoint.*allow_pickle=True"):
        HarivoPipeline.from_single_file(ckpt, adapter=adapter_dir, config=base_dir)
    pipe = HarivoPipeline.from_single_file(ckpt, adapter=adapter_dir, config=base_dir, allow_pickle=True)
    assert torch.equal(
        video(pipe), video(HarivoPipeline.from_single_file(checkpoint, adapter=adapter_dir, config=base_dir))
    )


def _fake(tmp_path, name, keys):
    path = tmp_path / name
    save_file({key: torch.zeros(shape) for key, shape in keys.items()}, path)
    return path


@pytest.mark.parametrize(
    ("name", "keys", "message"),
    [
        ("sd2.safetensors", {"model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (8, 1024)},
         r"sd2.safetensors is a Stable Diffusion 2 checkpoint; HARIVO adapters here are trained on Stable Diffusion 1.x"),
        ("sdxl.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
                              "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (8,)},
         r"sdxl.safetensors is a SDXL checkpoint"),
        ("lora.safetensors", {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (2, 8)},
         r"lora.safetensors holds no U-Net in the original layout.*a LoRA\? load it with --lora"),
    ],
)  # fmt: skip
def test_other_architectures_are_refused_in_one_line(tmp_path, base_dir, adapter_dir, name, keys, message):
    with pytest.raises(HarivoLoadError, match=message) as error:
        HarivoPipeline.from_single_file(_fake(tmp_path, name, keys), adapter=adapter_dir, config=base_dir)
    assert "\n" not in str(error.value)


def test_missing_and_misshapen_weights_are_refused(checkpoint, base_dir, adapter_dir, tmp_path):
    state = load_file(checkpoint)
    truncated = {k: v for k, v in state.items() if not k.startswith("first_stage_model.decoder")}
    save_file(truncated, tmp_path / "truncated.safetensors")
    with pytest.raises(
        HarivoLoadError, match=r"truncated.safetensors lacks \d+ of the \d+ weights.*first_stage_model"
    ):
        HarivoPipeline.from_single_file(tmp_path / "truncated.safetensors", adapter=adapter_dir, config=base_dir)
    # without the VAE in the file, a VAE passed in is enough
    pipe = HarivoPipeline.from_single_file(
        tmp_path / "truncated.safetensors", adapter=adapter_dir, config=base_dir,
        vae=StableDiffusionPipeline.from_pretrained(base_dir).vae,
    )  # fmt: skip
    assert torch.equal(video(pipe), video(HarivoPipeline.from_pretrained(base_dir, adapter=adapter_dir)))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    save_file({**state, key: torch.zeros(3, 4, 3, 3)}, tmp_path / "other.safetensors")
    with pytest.raises(
        HarivoLoadError, match=r"does not fit the model configured in .*input_blocks.0.0.weight has shape"
    ):
        HarivoPipeline.from_single_file(tmp_path / "other.safetensors", adapter=adapter_dir, config=base_dir)


def test_bad_paths_and_adapters(checkpoint, base_dir, adapter_dir, tmp_path):
    with pytest.raises(HarivoLoadError, match="does not exist"):
        HarivoPipeline.from_single_file(tmp_path / "missing.safetensors", adapter=adapter_dir, config=base_dir)
    with pytest.raises(ValueError, match="is a folder: load diffusers folders with `from_pretrained`"):
        HarivoPipeline.from_single_file(base_dir, adapter=adapter_dir)
    with pytest.raises(ValueError, match=r"holds no HARIVO adapter: pass `adapter=`"):
        HarivoPipeline.from_single_file(checkpoint, config=base_dir)
    with pytest.raises(IncompatibleAdapterError):
        HarivoPipeline.from_single_file(checkpoint, adapter=_other_width_adapter(), config=base_dir)


def _other_width_adapter() -> HarivoAdapter:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(24, 48), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        cross_attention_dim=32, attention_head_dim=4,
    )  # fmt: skip
    return HarivoAdapter.from_unet(unet, max_frames=8, motion_num_attention_heads=2)


def test_offline_without_config_says_what_to_pass(checkpoint, adapter_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarivoLoadError, match=r"offline, pass `config=` a local diffusers folder.*--base-config"):
        HarivoPipeline.from_single_file(checkpoint, adapter=adapter_dir)


def test_save_single_file_refuses_pickle_and_video_unets(tiny_sd, base_dir, adapter_dir, tmp_path):
    with pytest.raises(ValueError, match=r"as .safetensors"):
        save_single_file(tiny_sd, tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match=r"U-Net is a UNetMotionModel: save the text-to-image model"):
        save_single_file(HarivoPipeline.from_pretrained(base_dir, adapter=adapter_dir), tmp_path / "m.safetensors")
