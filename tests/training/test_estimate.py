"""`harivo train --estimate`: parameters and memory per GPU from models built on the meta device."""

import re
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from harivo.cli import main
from harivo.training import load_config
from harivo.training.estimate import activation_bytes, build_on_meta, estimate
from harivo.training.stages import HarivoStage
from tests.training.test_trainer import TINY

SD15_RECIPE = Path(__file__).parents[2] / "configs" / "webvid" / "harivo_sd15.yaml"


def test_the_sd15_recipe_estimate_counts_sd15_and_compares_engines_and_precisions(capsys):
    main(["train", "--config", str(SD15_RECIPE), "--estimate", "--num-gpus", "8"])
    printed = capsys.readouterr().out
    # Stable Diffusion 1.5's published sizes, built without a download
    assert "U-Net 859.5 M, VAE 83.7 M, text encoder 123.1 M (all frozen)" in printed
    assert "is not a local folder" in printed
    rows = re.findall(r"^\| (\d+)²×16 \| (fp32|bf16) \| (DDP|FSDP) \|.*\| ([\d.]+) \| ([\d.]+) \|$", printed, re.M)
    table = {(int(size), precision, engine): (float(activations), float(total))
             for size, precision, engine, activations, total in rows}  # fmt: skip
    assert {key[0] for key in table} == {256, 512} and len(table) == 8
    for size in (256, 512):
        for precision in ("fp32", "bf16"):
            assert table[size, precision, "FSDP"][1] < table[size, precision, "DDP"][1]  # sharded AdamW states
        assert table[size, "bf16", "DDP"][0] < table[size, "fp32", "DDP"][0]
    assert table[512, "fp32", "DDP"][0] > 3 * table[256, "fp32", "DDP"][0]  # 4x the latent pixels


def test_a_local_base_model_is_estimated_with_its_own_architecture_and_the_runs_adapter(base_dir):
    config = load_config(None, [*TINY["harivo"], f"harivo.base_model={base_dir}"])
    parameters, _ = build_on_meta(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert parameters.base == str(base_dir)
    assert parameters.unet == count(UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet"))
    assert parameters.vae == count(AutoencoderKL.from_pretrained(base_dir, subfolder="vae"))
    assert parameters.text_encoder == count(CLIPTextModel.from_pretrained(base_dir, subfolder="text_encoder"))
    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    adapter = HarivoStage._new_adapter(config.harivo, unet, accelerator=None)
    assert (parameters.adapter, parameters.trainable) == (count(adapter), count(adapter))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activations_counted_on_meta_match_what_autograd_saves_on_cpu(base_dir, checkpointing):
    """The meta count (attention as fused kernels keep it) against the same forward on real CPU tensors."""
    from harivo.models.video_unet import HarivoUNet

    config = load_config(None, [*TINY["harivo"], f"harivo.base_model={base_dir}"])
    _, meta_model = build_on_meta(config)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    real_model = HarivoUNet.from_unet2d(unet, HarivoStage._new_adapter(config.harivo, unet, accelerator=None))
    estimated = activation_bytes(meta_model, 64, 8, torch.float32, checkpointing)
    saved = activation_bytes(real_model, 64, 8, torch.float32, checkpointing)
    assert estimated == pytest.approx(saved, rel=0.1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["stage=vae"], "error: --estimate is for the harivo stage, not stage vae."),
        (["--num-gpus", "0"], "error: --num-gpus must be at least 1, got 0."),
    ],
)
def test_estimate_input_errors_are_one_line(capsys, extra, message):
    with pytest.raises(SystemExit):
        main(["train", "--config", str(SD15_RECIPE), "--estimate", *extra])
    assert capsys.readouterr().err.strip() == message


def test_estimate_rows_add_up():
    config = load_config(SD15_RECIPE, ["data.resolution=128", "data.num_frames=8"])
    parameters, rows = estimate(config, num_processes=4, sizes=())
    assert [(row.resolution, row.num_frames) for row in rows] == [(128, 8)] * 4  # the run's own size only
    for row in rows:
        assert row.total == pytest.approx(row.weights + row.gradients + row.optimizer + row.activations)
    ddp = next(row for row in rows if row.engine == "DDP" and row.precision == "fp32")
    assert ddp.optimizer == pytest.approx(8 * parameters.trainable / 2**30)  # AdamW: two fp32 states
