"""A few real training steps of each stage on tiny settings, then the trained folders loaded as users would."""

import json

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from diffusers import StableDiffusionPipeline

from harivo import HarivoAdapter, HarivoControlNetPipeline, HarivoPipeline
from harivo.errors import TrainingDivergedError
from harivo.training import Trainer, find_checkpoints, load_config

TINY = {
    "vae": ["stage=vae", "vae.block_out_channels=[8, 16]", "vae.norm_num_groups=8", "data.resolution=16"],
    "t2i": [
        "stage=t2i",
        "data.resolution=16",
        "t2i.block_out_channels=[16, 32]",
        "t2i.norm_num_groups=8",
        "t2i.attention_head_dim=4",
        "t2i.text_hidden_size=16",
        "t2i.text_heads=2",
        "t2i.validation_prompts=['a small red circle on a plain black background']",
    ],
    "harivo": [
        "stage=harivo",
        "data.resolution=16",
        "data.num_frames=4",
        "harivo.num_frame_tokens=2",
        "harivo.max_frames=8",
        "harivo.motion_num_attention_heads=2",
        "harivo.mapping_hidden_channels=8",
        "harivo.projection_dim=16",
        "harivo.dc_queue_size=8",
        "harivo.validation_prompts=['a small red circle moving left on a plain black background']",
        "harivo.validation_num_frames=4",
        "harivo.validation_steps=2",
    ],
    "controlnet": [
        "stage=controlnet",
        "data.resolution=16",
        "controlnet.conditioning_embedding_out_channels=[4, 8]",
        "controlnet.validation_prompts=['a small red circle on a plain black background']",
        "controlnet.validation_steps=2",
    ],
}


def tiny_config(stage, output_dir, *overrides):
    common = [f"output_dir={output_dir}", "max_steps=2", "batch_size=2", "checkpoint_every=1", "log_every=1"]
    return load_config(None, [*TINY[stage], *common, "optim.lr_warmup_steps=0", *overrides])


def read_log(output_dir):
    lines = (output_dir / "logs.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "total" in record]


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("vae")
    return Trainer(tiny_config("vae", output_dir)).train()


@pytest.fixture(scope="module")
def trained_t2i(tmp_path_factory, trained_vae):
    output_dir = tmp_path_factory.mktemp("t2i")
    return Trainer(tiny_config("t2i", output_dir, f"t2i.vae={trained_vae}")).train()


def test_vae_stage_exports_an_autoencoder_with_unit_variance_latents(trained_vae):
    config = json.loads((trained_vae / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderKL" and config["scaling_factor"] > 0
    assert (trained_vae.parent / "validation" / "step-000002" / "reconstructions.png").is_file()


def test_t2i_stage_exports_a_stable_diffusion_folder(trained_t2i):
    pipe = StableDiffusionPipeline.from_pretrained(trained_t2i, safety_checker=None)
    image = pipe("a large blue square on a plain white background", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 16, 16, 3)
    assert (trained_t2i.parent / "validation" / "step-000002" / "samples.png").is_file()
    records = read_log(trained_t2i.parent)
    assert [r["step"] for r in records] == [1, 2] and all("diffusion" in r and "lr" in r for r in records)


def test_caption_content_head_trains_is_checkpointed_and_not_exported(trained_vae, tmp_path):
    extra = [f"t2i.vae={trained_vae}", "t2i.caption_content_weight=0.5", "t2i.motion_phrase_probability=0.5"]
    trainer = Trainer(tiny_config("t2i", tmp_path, *extra, "num_validation_samples=0"))
    head_before = {k: v.clone() for k, v in trainer.stage.caption_head.state_dict().items()}
    final = trainer.train()
    head_after = trainer.stage.caption_head.state_dict()
    assert any(not torch.equal(value, head_after[key]) for key, value in head_before.items())
    records = read_log(tmp_path)
    assert all(r["total"] > r["diffusion"] and r["caption_content"] > 0 for r in records)
    assert (find_checkpoints(tmp_path)[-1][1] / "weights" / "caption_content_head").is_dir()
    assert not (final / "caption_content_head").exists()
    StableDiffusionPipeline.from_pretrained(final, safety_checker=None)  # still a plain diffusers folder
    # resuming restores the head with the rest
    resumed = Trainer(tiny_config("t2i", tmp_path, *extra, "num_validation_samples=0", "max_steps=3"), resume=True)
    resumed.train()
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3]


def test_harivo_stage_trains_only_the_adapter_and_logs_every_term(trained_t2i, tmp_path):
    config = tiny_config("harivo", tmp_path, f"harivo.base_model={trained_t2i}")
    trainer = Trainer(config)
    frozen = {k: v.clone() for k, v in trainer.stage.model.unet.state_dict().items() if "motion_modules" not in k}
    adapter_before = {k: v.clone() for k, v in trainer.stage.adapter.state_dict().items()}
    final = trainer.train()
    frozen_after = trainer.stage.model.unet.state_dict()
    assert all(torch.equal(value, frozen_after[key]) for key, value in frozen.items())
    adapter_after = trainer.stage.adapter.state_dict()
    assert any(not torch.equal(value, adapter_after[key]) for key, value in adapter_before.items())

    records = read_log(tmp_path)
    assert {"diffusion", "reg", "trsa", "dc", "total", "lr", "samples_per_s"} <= set(records[-1])
    # checkpoints hold the adapter only, never the frozen base model
    weights = find_checkpoints(tmp_path)[-1][1] / "weights"
    assert sorted(p.name for p in weights.iterdir()) == ["adapter"]
    assert (tmp_path / "validation" / "step-000002" / "00-seed0.gif").is_file()

    pipe = HarivoPipeline.from_pretrained(trained_t2i, adapter=HarivoAdapter.from_pretrained(final))
    frames = pipe("a small red circle moving left", num_frames=4, num_inference_steps=2, output_type="np").frames
    assert frames.shape == (1, 4, 16, 16, 3)


def test_gradient_checkpointing_gives_the_same_loss(trained_t2i, tmp_path):
    plain = tiny_config("harivo", tmp_path / "plain", f"harivo.base_model={trained_t2i}", "max_steps=1")
    checkpointed = tiny_config(
        "harivo", tmp_path / "ckpt", f"harivo.base_model={trained_t2i}", "max_steps=1", "gradient_checkpointing=true"
    )
    Trainer(plain).train()
    Trainer(checkpointed).train()
    assert read_log(tmp_path / "plain")[0]["total"] == pytest.approx(read_log(tmp_path / "ckpt")[0]["total"], rel=1e-5)


def test_bf16_mixed_precision_trains(tmp_path):
    bf16 = tiny_config("vae", tmp_path / "bf16", "max_steps=1", "mixed_precision=bf16")
    Trainer(bf16).train()
    assert torch.isfinite(torch.tensor(read_log(tmp_path / "bf16")[0]["total"]))


def test_divergence_stops_with_a_clear_message_and_saves_nothing_corrupt(tmp_path):
    # warm-up: step 1 runs at lr 0 (a good checkpoint), step 2 at 5e29 writes huge (still finite) weights
    config = tiny_config(
        "vae", tmp_path, "max_steps=5", "optim.learning_rate=1e30", "optim.max_grad_norm=1e30",
        "optim.lr_warmup_steps=2",
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError, match=r"became (nan|inf)") as error:
        Trainer(config).train()
    message = str(error.value)
    assert "checkpoint-2 holds the weights that gave it and was renamed checkpoint-2.diverged" in message
    assert message.endswith("then resume with --resume.") and f"last good checkpoint is {tmp_path}" in message
    checkpoints = find_checkpoints(tmp_path)
    assert [step for step, _ in checkpoints] == [1], "the checkpoint that gave NaN must not be a resume point"
    assert (tmp_path / "checkpoint-2.diverged").is_dir()
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "final").exists()
    from safetensors.torch import load_file

    weights = load_file(next((checkpoints[-1][1] / "weights" / "vae").glob("*.safetensors")))
    assert all(torch.isfinite(value).all() and value.abs().max() < 1e3 for value in weights.values())


def test_weights_that_become_non_finite_are_never_saved(tmp_path):
    config = tiny_config("vae", tmp_path, "max_steps=3")
    config.optim.learning_rate, config.optim.weight_decay = 1e37, 100.0  # past what a config file may set
    with pytest.raises(TrainingDivergedError, match="weights after the optimizer step became inf at step 1"):
        Trainer(config).train()
    from safetensors.torch import load_file

    assert not find_checkpoints(tmp_path)
    for _, checkpoint in find_checkpoints(tmp_path):
        for file in (checkpoint / "weights").rglob("*.safetensors"):
            assert all(torch.isfinite(value).all() for value in load_file(file).values())


def test_existing_run_needs_resume(tmp_path):
    Trainer(tiny_config("vae", tmp_path, "max_steps=1")).train()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny_config("vae", tmp_path, "max_steps=1")).train()


def test_eight_bit_adam_without_bitsandbytes_says_what_to_install(tmp_path):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install bitsandbytes"):
            Trainer(tiny_config("vae", tmp_path, "optim.use_8bit_adam=true"))
    else:
        pytest.skip("bitsandbytes is installed")


def test_harivo_on_a_video_folder_skips_and_reports_bad_videos(base_dir, tmp_path, capsys):
    from tests.data.test_webvid import write_csv, write_video

    (tmp_path / "clips").mkdir()
    rows = []
    for name in ("a.mp4", "b.webm", "c.avi"):
        write_video(tmp_path / "clips" / name, num_frames=10, height=20, width=24)
        rows.append((name, f"a video {name}", f"clips/{name}"))
    write_video(tmp_path / "clips" / "short.mp4", num_frames=2)
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"garbage" * 50)
    rows += [("short", "x", "clips/short.mp4"), ("broken", "x", "clips/broken.mp4"), ("gone", "x", "clips/gone.mp4")]
    write_csv(tmp_path / "videos.csv", rows)
    run = tmp_path / "run"
    config = tiny_config(
        "harivo", run, f"harivo.base_model={base_dir}", f"data.csv={tmp_path / 'videos.csv'}", "data.kind=webvid",
        "data.frame_stride=2", "max_steps=4", "batch_size=1", "harivo.num_frame_tokens=0",
    )  # fmt: skip
    Trainer(config).train()
    epochs = [json.loads(line) for line in (run / "logs.jsonl").read_text().splitlines() if "skipped" in line]
    assert epochs[0]["skipped"] == {"too short": 1, "corrupt": 1, "missing": 1}
    assert "skipped 3 videos (1 corrupt, 1 missing, 1 too short)" in capsys.readouterr().out
    assert len(read_log(run)) == 4


def test_mapping_network_can_stay_frozen_at_identity(base_dir, tmp_path):
    config = tiny_config(
        "harivo", tmp_path, f"harivo.base_model={base_dir}", "harivo.train_mapping_network=false",
        "harivo.sampling_temporal_window=[0, 0.5]", "harivo.sampling_motion_path_window=[0, 0.8]",
        "harivo.sampling_motion_path_core_window=[0.4, 1]",
    )  # fmt: skip
    trainer = Trainer(config)
    before = {k: v.clone() for k, v in trainer.stage.adapter.mapping_network.state_dict().items()}
    trainer.train()
    after = trainer.stage.adapter.mapping_network.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())
    noise = torch.randn(1, 4, 4, 8, 8)
    assert torch.allclose(trainer.stage.adapter.mapping_network(noise), noise, atol=1e-5)
    # the recommended sampling ships in the adapter; a bad one fails before training, in one line
    defaults = HarivoAdapter.from_pretrained(tmp_path / "final").sampling_defaults
    assert defaults == {
        "temporal_window": (0.0, 0.5), "motion_path_window": (0.0, 0.8), "motion_path_core_window": (0.4, 1.0)
    }  # fmt: skip
    bad = tiny_config("harivo", tmp_path / "bad", f"harivo.base_model={base_dir}",
                      "harivo.sampling_temporal_window=[0.9, 0.5]")  # fmt: skip
    with pytest.raises(ValueError, match=r"harivo\.sampling_temporal_window") as error:
        Trainer(bad)
    assert "\n" not in str(error.value)


def test_motion_conditioner_trains_and_ships_with_the_adapter(base_dir, tmp_path):
    config = tiny_config(
        "harivo", tmp_path, f"harivo.base_model={base_dir}", "harivo.motion_conditioning=true",
        "harivo.motion_conditioning_dim=16", "num_validation_samples=0",
    )  # fmt: skip
    trainer = Trainer(config)
    before = trainer.stage.adapter.motion_conditioner.proj_out.weight.clone()
    final = trainer.train()
    assert not torch.equal(trainer.stage.adapter.motion_conditioner.proj_out.weight, before)
    loaded = HarivoAdapter.from_pretrained(final)
    assert loaded.motion_conditioner is not None
    torch.testing.assert_close(
        loaded.motion_conditioner.proj_out.weight, trainer.stage.adapter.motion_conditioner.proj_out.weight
    )
    pipe = HarivoPipeline.from_pretrained(base_dir, adapter=loaded)
    frames = pipe("a small red circle moving left", num_frames=4, num_inference_steps=2, mg_scale=10, output_type="np")
    assert frames.frames.shape == (1, 4, 16, 16, 3) and np.isfinite(frames.frames).all()


@pytest.mark.parametrize(
    "settings",
    [
        ["harivo.motion_path=true"],
        ["harivo.noise_warping=true", "harivo.noise_frame_correlation=0"],
        ["harivo.motion_path=true", "harivo.path_token_substitution=0.5", "harivo.path_caption_copies=3"],
    ],
)
def test_path_predictor_trains_on_measured_paths_and_ships_with_the_adapter(base_dir, tmp_path, settings):
    config = tiny_config("harivo", tmp_path, f"harivo.base_model={base_dir}", "num_validation_samples=0", *settings)
    trainer = Trainer(config)
    before = trainer.stage.adapter.path_predictor.velocity.weight.clone()
    final = trainer.train()
    logs = [entry for entry in read_log(tmp_path) if "diffusion" in entry]
    assert logs and all(entry["path"] > 0 for entry in logs)  # L_path is logged as its own term
    assert not torch.equal(trainer.stage.adapter.path_predictor.velocity.weight, before)
    loaded = HarivoAdapter.from_pretrained(final)
    assert loaded.path_predictor.config.warp_noise == config.harivo.noise_warping
    pipe = HarivoPipeline.from_pretrained(base_dir, adapter=loaded)
    frames = pipe("a small red circle moving left", num_frames=4, num_inference_steps=2, output_type="np")
    assert frames.frames.shape == (1, 4, 16, 16, 3) and np.isfinite(frames.frames).all()


def test_zero_terminal_snr_base_samples_from_pure_noise_and_harivo_inherits_it(trained_vae, tmp_path):
    schedule = ["t2i.prediction_type=v_prediction", "t2i.zero_terminal_snr=true", "num_validation_samples=0"]
    t2i = Trainer(tiny_config("t2i", tmp_path / "t2i", f"t2i.vae={trained_vae}", *schedule)).train()
    base = StableDiffusionPipeline.from_pretrained(t2i, safety_checker=None)
    config = base.scheduler.config
    assert config.prediction_type == "v_prediction" and config.rescale_betas_zero_snr
    base.scheduler.set_timesteps(4)
    assert int(base.scheduler.timesteps[0]) == 999 and float(base.scheduler.alphas_cumprod[999]) == 0.0

    trainer = Trainer(
        tiny_config("harivo", tmp_path / "harivo", f"harivo.base_model={t2i}", "num_validation_samples=0")
    )
    assert trainer.stage.noise_scheduler.config.prediction_type == "v_prediction"
    assert float(trainer.stage.noise_scheduler.alphas_cumprod[-1]) == 0.0
    final = trainer.train()
    assert all(np.isfinite(r["total"]) for r in read_log(tmp_path / "harivo"))
    pipe = HarivoPipeline.from_pretrained(t2i, adapter=HarivoAdapter.from_pretrained(final))
    # MG from the very first (pure-noise) step, and the guidance rescale such models want
    frames = pipe(
        "a small red circle moving left", num_frames=4, num_inference_steps=2, mg_scale=10, mg_window=(0.0, 1.0),
        guidance_rescale=0.7, output_type="np",
    ).frames  # fmt: skip
    assert frames.shape == (1, 4, 16, 16, 3) and np.isfinite(frames).all()


REFIT_PATHS = [
    "harivo.trained_components=[path_predictor]",
    "harivo.weight_diffusion=0",
    "harivo.weight_reg=0",
    "harivo.weight_trsa=0",
    "harivo.weight_dc=0",
    "harivo.weight_path=1",
    "harivo.path_token_substitution=0.3",
    "harivo.path_caption_copies=2",
    "num_validation_samples=0",
]


def test_refitting_the_path_predictor_of_a_saved_adapter_trains_it_alone_without_a_unet_call(
    base_dir, tmp_path, monkeypatch
):
    first = Trainer(
        tiny_config("harivo", tmp_path / "first", f"harivo.base_model={base_dir}", "harivo.motion_path=true")
    ).train()
    AcceleratorState._reset_state(reset_partial_state=True)
    trainer = Trainer(
        tiny_config(
            "harivo", tmp_path / "refit", f"harivo.base_model={base_dir}", f"harivo.adapter={first}", *REFIT_PATHS
        )
    )
    calls = []
    monkeypatch.setattr(trainer.stage.model, "forward", lambda *args, **kwargs: calls.append(args))
    final = trainer.train()
    assert calls == []  # the predictor reads only the text: no U-Net call
    assert all(set(entry) >= {"path"} and "diffusion" not in entry for entry in read_log(tmp_path / "refit"))
    saved, refit = HarivoAdapter.from_pretrained(first), HarivoAdapter.from_pretrained(final)
    for name in ("motion_adapter", "mapping_network", "frame_token_generator"):
        for key, value in getattr(saved, name).state_dict().items():
            torch.testing.assert_close(getattr(refit, name).state_dict()[key], value, rtol=0, atol=0)
    assert not torch.equal(refit.path_predictor.velocity.weight, saved.path_predictor.velocity.weight)
    assert refit.sampling_defaults == saved.sampling_defaults


def test_refitting_a_part_the_adapter_lacks_or_a_missing_adapter_is_one_line(base_dir, tmp_path):
    first = Trainer(tiny_config("harivo", tmp_path / "first", f"harivo.base_model={base_dir}")).train()
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(ValueError, match="the adapter has no path_predictor; it has motion_adapter") as error:
        Trainer(
            tiny_config("harivo", tmp_path / "refit", f"harivo.base_model={base_dir}", f"harivo.adapter={first}",
                        *REFIT_PATHS)
        )  # fmt: skip
    assert "\n" not in str(error.value)
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(OSError, match=r"harivo\.adapter .* does not exist") as error:
        Trainer(
            tiny_config("harivo", tmp_path / "x", f"harivo.base_model={base_dir}", f"harivo.adapter={tmp_path}/no")
        )
    assert "\n" not in str(error.value)


def test_controlnet_stage_trains_only_the_controlnet_resumes_and_loads_in_the_video_pipeline(trained_t2i, tmp_path):
    config = tiny_config("controlnet", tmp_path, f"controlnet.base_model={trained_t2i}")
    trainer = Trainer(config)
    frozen = {k: v.clone() for k, v in trainer.stage.unet.state_dict().items()}
    before = {k: v.clone() for k, v in trainer.stage.controlnet.state_dict().items()}
    final = trainer.train()
    assert all(torch.equal(value, trainer.stage.unet.state_dict()[key]) for key, value in frozen.items())
    after = trainer.stage.controlnet.state_dict()
    assert any(not torch.equal(value, after[key]) for key, value in before.items())
    weights = find_checkpoints(tmp_path)[-1][1] / "weights"
    assert sorted(p.name for p in weights.iterdir()) == ["controlnet"]  # never the frozen base model
    assert (tmp_path / "validation" / "step-000002" / "samples.png").is_file()
    AcceleratorState._reset_state(reset_partial_state=True)
    Trainer(
        tiny_config("controlnet", tmp_path, f"controlnet.base_model={trained_t2i}", "max_steps=3"), resume=True
    ).train()
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3]

    torch.manual_seed(0)
    adapter = HarivoAdapter.from_unet(
        StableDiffusionPipeline.from_pretrained(trained_t2i, safety_checker=None).unet, max_frames=8,
        motion_num_attention_heads=2,
    )  # fmt: skip
    pipe = HarivoControlNetPipeline.from_pretrained(trained_t2i, adapter=adapter, controlnet=final)
    frames = pipe("a small red circle", num_frames=4, num_inference_steps=2, output_type="np",
                  conditioning_frames=torch.rand(4, 3, 16, 16)).frames  # fmt: skip
    assert frames.shape == (1, 4, 16, 16, 3)


def test_controlnet_condition_encoder_must_match_the_vae_factor(trained_t2i, tmp_path):
    config = tiny_config(
        "controlnet", tmp_path, f"controlnet.base_model={trained_t2i}",
        "controlnet.conditioning_embedding_out_channels=[4, 8, 16]",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"shrinks the condition 4x, but this base model.s latents are 2x .* give 2"):
        Trainer(config)


@pytest.mark.parametrize("workers", [0, 2])
def test_harivo_streams_shards_and_a_resumed_run_continues_the_same_loss_curve(base_dir, tmp_path, capsys, workers):
    """data.kind webdataset: the Shapes world written as shards (one with bad clips); 4 + 4 resumed steps give the
    loss curve of 8 straight ones, with and without loader workers."""
    from harivo.data.shards import shapes_samples, write_shards
    from tests.data.test_shards import corrupt_shard

    shards = tmp_path / "shards"
    shards.mkdir()
    write_shards(shapes_samples(12, num_frames=8, resolution=32), str(shards / "%05d.tar"), per_shard=4)
    corrupt_shard(shards / "00003.tar")
    common = [f"harivo.base_model={base_dir}", "data.kind=webdataset", f"data.shards={shards}/{{00000..00003}}.tar",
              "data.frame_stride=1", "data.shuffle_buffer=4", f"data.num_workers={workers}", "batch_size=2",
              "harivo.num_frame_tokens=0", "checkpoint_every=2"]  # fmt: skip
    Trainer(tiny_config("harivo", tmp_path / "straight", *common, "max_steps=8")).train()
    assert "skipped" in capsys.readouterr().out  # a pass over the shards: the damaged shard's bad clips are counted
    Trainer(tiny_config("harivo", tmp_path / "resumed", *common, "max_steps=4")).train()
    Trainer(tiny_config("harivo", tmp_path / "resumed", *common, "max_steps=8"), resume=True).train()
    straight, resumed = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in straight] == list(range(1, 9))
    assert [r["total"] for r in resumed] == pytest.approx([r["total"] for r in straight], rel=1e-6)
