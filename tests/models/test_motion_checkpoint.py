"""`--adapter FILE`: AnimateDiff's own motion-module files (original layout, .safetensors or a .ckpt with
allow_pickle) and diffusers-layout files (AnimateDiff-Lightning's), read into the same temporal layers."""

import re

import pytest
import torch
from safetensors.torch import save_file

from harivo import HarivoAdapter
from harivo.cli import main
from harivo.errors import HarivoLoadError
from harivo.pipelines import HarivoPipeline
from tests.helpers import randomize_temporal_layers

ORIGINAL_NAMES = [(".norm1", ".norms.0"), (".norm2", ".norms.1"), (".norm3", ".ff_norm"),
                  (".attn1", ".attention_blocks.0"), (".attn2", ".attention_blocks.1")]  # fmt: skip


def original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' `MotionAdapter` keys written as AnimateDiff's `mm_sd_v15_v2.ckpt` names them."""
    converted = {}
    for key, value in state.items():
        if key.endswith("pos_embed.pe"):  # the original keeps its table in each attention block
            prefix = key.rsplit(".transformer_blocks.", 1)[0]
            block = key.split(".transformer_blocks.", 1)[1].split(".", 1)[0]
            for attention in (0, 1):
                converted[f"{prefix}.temporal_transformer.transformer_blocks.{block}.attention_blocks.{attention}"
                          ".pos_encoder.pe"] = value.clone()  # fmt: skip
            continue
        for new, old in ORIGINAL_NAMES:
            key = key.replace(new, old)
        converted[re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key, count=1)] = value
    return converted


@pytest.fixture
def motion(tiny_sd):
    torch.manual_seed(0)
    adapter = HarivoAdapter.from_unet(tiny_sd.unet, max_frames=8, motion_num_attention_heads=8)
    return randomize_temporal_layers(adapter).motion_adapter


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_a_motion_module_file_loads_the_same_temporal_layers(motion, tmp_path, layout):
    state = motion.state_dict()
    path = tmp_path / "mm.safetensors"
    save_file(original_layout(state) if layout == "original" else state, path)
    loaded = HarivoAdapter.from_pretrained(path, motion_num_attention_heads=8, motion_norm_num_groups=8)
    assert loaded.motion_adapter.config.motion_max_seq_length == 8  # read from the position table
    assert loaded.mapping_network.is_identity and loaded.frame_token_generator.num_tokens == 0
    got = loaded.motion_adapter.state_dict()
    assert got.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(got[key], value)


def test_a_pickled_checkpoint_needs_allow_pickle(motion, tmp_path):
    path = tmp_path / "mm_sd_v15_v2.ckpt"
    torch.save({"state_dict": original_layout(motion.state_dict())}, path)
    with pytest.raises(HarivoLoadError, match="is a pickle weight file"):
        HarivoAdapter.from_pretrained(path)
    with pytest.warns(UserWarning, match="allow_pickle"):
        loaded = HarivoAdapter.from_pretrained(path, allow_pickle=True, motion_norm_num_groups=8)
    torch.testing.assert_close(loaded.motion_adapter.state_dict()["down_blocks.0.motion_modules.0.proj_out.weight"],
                               motion.state_dict()["down_blocks.0.motion_modules.0.proj_out.weight"])  # fmt: skip


def test_the_pipeline_and_the_cli_take_a_motion_module_file(motion, base_dir, tmp_path):
    """The base's norm groups are the file's; the video equals the one of the same layers from a folder."""
    path = tmp_path / "mm.safetensors"
    save_file(original_layout(motion.state_dict()), path)
    motion.save_pretrained(tmp_path / "folder")
    videos = []
    for adapter in (path, tmp_path / "folder"):
        pipe = HarivoPipeline.from_pretrained(base_dir, adapter=str(adapter))
        pipe.set_progress_bar_config(disable=True)
        videos.append(pipe("a red circle", num_frames=2, height=16, width=16, num_inference_steps=2,
                           generator=torch.Generator().manual_seed(0), output_type="pt").frames)  # fmt: skip
    torch.testing.assert_close(videos[0], videos[1])
    main(["generate", "a red circle", "-o", str(tmp_path / "x.gif"), "--base-model", str(base_dir), "--adapter",
          str(path), "--num-frames", "2", "--height", "16", "--width", "16", "--steps", "2"])  # fmt: skip
    assert (tmp_path / "x.gif").is_file()


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ({"down_blocks.0.motion_modules.0.proj_in.lora_A.weight": torch.zeros(2, 2)}, "is a LoRA, not motion modules"),
        ({"conv_in.weight": torch.zeros(2, 2)}, "holds no motion modules"),
        (b"not a safetensors file", "not a readable weight file"),
    ],
)
def test_files_that_are_not_motion_modules_get_one_line(tmp_path, contents, message):
    path = tmp_path / "x.safetensors"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        save_file(contents, path)
    with pytest.raises(HarivoLoadError, match=message) as error:
        HarivoAdapter.from_pretrained(path)
    assert "\n" not in str(error.value)


def test_training_starts_from_a_motion_module_file(motion, base_dir, tmp_path):
    """`harivo.motion_adapter: FILE` (AnimateDiff's own layout) gives the run's temporal layers those weights."""
    from accelerate import Accelerator

    from harivo.training.stages import HarivoStage
    from tests.training.test_trainer import tiny_config

    path = tmp_path / "mm.safetensors"
    save_file(original_layout(motion.state_dict()), path)
    config = tiny_config("harivo", tmp_path / "run", f"harivo.base_model={base_dir}", f"harivo.motion_adapter={path}",
                         "harivo.motion_num_attention_heads=8")  # fmt: skip
    stage = HarivoStage(config, Accelerator(cpu=True), torch.Generator().manual_seed(0))
    trained = stage.adapter.motion_adapter.state_dict()
    for key, value in motion.state_dict().items():
        torch.testing.assert_close(trained[key], value)
