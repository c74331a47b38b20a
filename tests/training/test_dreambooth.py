"""The DreamBooth stage on the embedded Shapes base: full fine-tune and LoRA, resume, prior preservation, and the
result driving the shipped adapter unchanged."""

import json

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from harivo import HarivoPipeline
from harivo.data.shapes import render_concept_images
from harivo.defaults import DEFAULT_MODEL_DIR
from harivo.training import Trainer, load_config

CONFIG = "configs/shapes/dreambooth.yaml"


@pytest.fixture(scope="module")
def hearts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hearts")
    render_concept_images(folder, "v", shape="heart", count=4)
    return folder


def config(tmp_path, hearts, *extra):
    return load_config(CONFIG, [
        f"output_dir={tmp_path}", f"dreambooth.instance_data={hearts}", f"dreambooth.base_model={DEFAULT_MODEL_DIR / 'base'}",
        "max_steps=2", "batch_size=2", "checkpoint_every=1", "log_every=1", "dreambooth.num_class_images=2",
        "dreambooth.class_generation_steps=2", "dreambooth.validation_steps=2", *extra,
    ])  # fmt: skip


def train(cfg, resume=False):
    try:
        return Trainer(cfg, resume=resume).train()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def video(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a large red v moving right on a plain black background", num_frames=4, num_inference_steps=2,
        generator=torch.Generator().manual_seed(0), output_type="np",
    ).frames  # fmt: skip


def test_full_fine_tune_trains_the_unet_with_prior_preservation_and_loads_under_video(tmp_path, hearts):
    final = train(config(tmp_path, hearts))
    logs = [json.loads(line) for line in (tmp_path / "logs.jsonl").read_text().splitlines()]
    assert {"instance", "prior", "total"} <= set(logs[-1])
    assert sorted(p.name for p in (tmp_path / "class_images").glob("*.png")) == ["00000.png", "00001.png"]
    base = load_file(DEFAULT_MODEL_DIR / "base" / "unet" / "diffusion_pytorch_model.safetensors")
    tuned = load_file(final / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    text_base = load_file(DEFAULT_MODEL_DIR / "base" / "text_encoder" / "model.safetensors")
    text_tuned = load_file(final / "text_encoder" / "model.safetensors")
    assert any(not torch.equal(text_base[k], text_tuned[k]) for k in text_base)  # the recipe tunes it too
    assert (tmp_path / "validation").exists()
    # the personalised base drives the shipped adapter, unchanged, as a folder and as a single file
    adapter = DEFAULT_MODEL_DIR / "adapter"
    from_folder = video(HarivoPipeline.from_pretrained(final, adapter=adapter))
    from_file = video(HarivoPipeline.from_single_file(tmp_path / "final.safetensors", adapter=adapter, config=final))
    assert np.array_equal(from_folder, from_file)
    assert not np.array_equal(
        from_folder, video(HarivoPipeline.from_pretrained(DEFAULT_MODEL_DIR / "base", adapter=adapter))
    )


def test_resume_continues_the_same_run(tmp_path, hearts):
    train(config(tmp_path / "once", hearts, "max_steps=3"))
    train(config(tmp_path / "twice", hearts, "max_steps=2"))
    train(config(tmp_path / "twice", hearts, "max_steps=3"), resume=True)
    once, twice = (
        load_file(tmp_path / name / "final" / "unet" / "diffusion_pytorch_model.safetensors")
        for name in ("once", "twice")
    )
    assert all(torch.allclose(once[k], twice[k], atol=1e-6) for k in once)


def test_lora_variant_saves_a_diffusers_lora_file_for_the_video_pipeline(tmp_path, hearts):
    lora = ["dreambooth.lora_rank=2", "dreambooth.train_text_encoder=false", "max_steps=3", "checkpoint_every=2"]
    final = train(config(tmp_path, hearts, *lora))
    assert sorted(p.name for p in final.iterdir()) == ["pytorch_lora_weights.safetensors"]
    assert load_file(tmp_path / "checkpoint-2" / "weights" / "unet" / "lora.safetensors")  # checkpoints: LoRA only
    train(config(tmp_path, hearts, *lora), resume=True)
    pipe = HarivoPipeline.from_pretrained(DEFAULT_MODEL_DIR / "base", adapter=DEFAULT_MODEL_DIR / "adapter")
    plain = video(pipe)
    pipe.load_lora_weights(final, adapter_name="heart")
    assert not np.array_equal(video(pipe), plain)
    pipe.set_adapters(["heart"], adapter_weights=[0.0])
    assert np.array_equal(video(pipe), plain)


def test_bad_dreambooth_inputs_are_one_line_errors(tmp_path, hearts):
    few = tmp_path / "few"
    render_concept_images(few, "v", shape="heart", count=2)
    with pytest.raises(ValueError, match=r"has 2 image\(s\); DreamBooth needs at least 3"):
        train(config(tmp_path / "a", few))
    with pytest.raises(ValueError, match=r"does not contain the identifier 'zz'"):
        train(config(tmp_path / "b", hearts, "dreambooth.identifier=zz"))
    with pytest.raises(ValueError, match="train_text_encoder works with full fine-tuning only"):
        config(tmp_path / "c", hearts, "dreambooth.lora_rank=2")  # the Shapes recipe tunes the text encoder
    with pytest.raises(FileNotFoundError, match=r"dreambooth.instance_data folder '.*missing' does not exist"):
        train(config(tmp_path / "d", hearts, f"dreambooth.instance_data={tmp_path / 'missing'}"))
    with pytest.raises(ValueError, match=r"dreambooth\.instance_data is not set"):
        load_config(CONFIG, ["dreambooth.instance_data=''"])


def test_an_identifier_the_tokenizer_splits_is_warned_about(tmp_path):
    folder = tmp_path / "sks"
    render_concept_images(folder, "sks", shape="heart", count=3)
    with pytest.warns(UserWarning, match=r"The identifier 'sks' is 3 tokens for this tokenizer"):
        train(
            config(tmp_path / "run", folder, "dreambooth.identifier=sks", "max_steps=1", "dreambooth.class_prompts=[]")
        )


def test_the_dreambooth_command_trains_a_lora_that_generate_loads(tmp_path, hearts, capsys):
    from harivo.cli import main

    main(["dreambooth", "--instance-data", str(hearts), "--identifier", "v", "--lora-rank", "2", "--max-steps", "2", "--batch-size", "2",
          "--class-prompt", "a large red circle on a plain black background", "--num-class-images", "2",
          "-o", str(tmp_path / "run"), "dreambooth.class_generation_steps=2"])  # fmt: skip
    out = capsys.readouterr().out
    final = tmp_path / "run" / "final"
    assert f"--lora {final}" in out and (final / "pytorch_lora_weights.safetensors").is_file()
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "resolution: 64" in config and "learning_rate: 0.001" in config  # the base model's size; LoRA's rate
    main(["generate", "a large red v moving right on a plain black background", "--lora", str(final), "--steps", "2",
          "--num-frames", "4", "-o", str(tmp_path / "v.gif")])  # fmt: skip
    assert (tmp_path / "v.gif").is_file()
    again = ["dreambooth", "--instance-data", str(hearts), "--identifier", "v", "-o", str(tmp_path / "run")]
    capsys.readouterr()
    for extra, message in (
        ([], "already has checkpoints; pass --resume"),
        (["--resolution", "0"], "--resolution must be at least 8 pixels, got 0"),
        (["--learning-rate", "0"], r"--learning-rate must be in (0, 1], got 0.0"),
    ):
        with pytest.raises(SystemExit):
            main([*again, *extra])
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert (tmp_path / "run" / "config.yaml").read_text() == config  # the finished run is untouched


def test_caption_files_that_are_not_captions_are_refused_before_reading(tmp_path):
    from harivo.data.images import MAX_CAPTION_BYTES, read_image_folder

    folder = tmp_path / "images"
    render_concept_images(folder, "v", shape="heart", count=3)
    caption = next(folder.glob("*.png")).with_suffix(".txt")
    caption.write_bytes(b"v" * (MAX_CAPTION_BYTES + 1))
    with pytest.raises(ValueError, match=f"has {MAX_CAPTION_BYTES + 1} bytes; a caption is a line of text"):
        read_image_folder(folder, "a v")
    caption.write_bytes(b"a \xff v")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_image_folder(folder, "a v")


@pytest.mark.parametrize("damage", ["empty", "truncated", "bomb"])
def test_a_damaged_instance_image_stops_in_one_line_naming_it(tmp_path, capsys, damage):
    from PIL import Image

    from harivo.cli import main

    folder = tmp_path / "images"
    render_concept_images(folder, "v", shape="heart", count=3)
    image = sorted(folder.glob("*.png"))[1]
    if damage == "bomb":
        Image.new("1", (20000, 20000)).save(image)
    else:
        image.write_bytes(b"" if damage == "empty" else image.read_bytes()[:40])
    with pytest.raises(SystemExit):
        main(["dreambooth", "--instance-data", str(folder), "--identifier", "v", "--max-steps", "1",
              "-o", str(tmp_path / "run"), "dreambooth.class_prompts=[]"])  # fmt: skip
    err = capsys.readouterr().err
    assert f"Cannot read the image {image}" in err and err.count("\n") == 1, err
