from pathlib import Path

import pytest

from harivo.cli import main
from harivo.training import load_config

CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "configs").rglob("*.yaml") if p.parent.name != "accelerate")
ACCELERATE_CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "accelerate").glob("*.yaml"))


def test_defaults_without_a_file():
    config = load_config()
    assert config.stage == "harivo" and config.harivo.weight_reg == 0.1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(path)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_shipped_accelerate_configs_are_valid_launch_configs_not_run_configs(path):
    """Accelerate reads each launch config (its own loader and checks), and `harivo train --config` says where one
    belongs instead of listing unknown keys."""
    from accelerate.commands.config.config_args import load_config_from_file

    launch = load_config_from_file(str(path))
    assert launch.mixed_precision == "no"  # the run's precision comes from the harivo config
    if path.name == "fsdp.yaml":
        assert launch.fsdp_config["fsdp_version"] == 2 and launch.fsdp_config["fsdp_auto_wrap_policy"] == "NO_WRAP"
    with pytest.raises(ValueError, match="is an Accelerate launch config: pass it as accelerate launch --config_file"):
        load_config(path)


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("stage: t2i\nmax_steps: 5\noptim:\n  learning_rate: 1e-3\n")
    config = load_config(path, ["optim.learning_rate=2e-4", "t2i.block_out_channels=[8, 16]", "data.csv=null"])
    assert config.stage == "t2i" and config.max_steps == 5
    assert config.optim.learning_rate == 2e-4 and isinstance(config.optim.learning_rate, float)
    assert config.t2i.block_out_channels == (8, 16)
    assert load_config(_write(tmp_path, config.to_yaml())) == config  # the written config reproduces the run


def _write(folder, text):
    path = folder / "resolved.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["max_step=3"], "Unknown key max_step"),
        (["optim.learnin_rate=1"], r"Unknown key learnin_rate in optim"),
        (["max_steps=many"], "max_steps must be int"),
        (["stage=video"], "stage must be one of"),
        (["data.kind=webvid"], "data.csv is not set"),
        (["batch_size=0"], "batch_size must be at least 1"),
        (["max_steps"], "not of the form key=value"),
        (["t2i.prediction_type=sample"], "t2i.prediction_type must be"),
        (["t2i.zero_terminal_snr=true"], "needs t2i.prediction_type: v_prediction"),
        (
            ["harivo.noise_warping=true", "harivo.noise_frame_correlation=0.9"],
            "set harivo.noise_frame_correlation to 0",
        ),
        (["harivo.noise_warp_correlation=1.5"], "noise_warp_correlation must be in"),
        (["checkpoints_total_limit=-1"], r"checkpoints_total_limit must be at least 1, not -1"),
        (["checkpoints_total_limit=0"], "checkpoints_total_limit must be at least 1"),
        (["optim.max_grad_norm=0"], r"optim.max_grad_norm must be greater than 0, not 0.0"),
        (["optim.max_grad_norm=-1"], "optim.max_grad_norm must be greater than 0"),
        (["optim.lr_warmup_steps=-5"], "optim.lr_warmup_steps must be at least 0"),
        (["optim.learning_rate=.nan"], r"optim.learning_rate must be in \(0, 1e\+30\], not nan"),
        (["optim.learning_rate=.inf"], r"optim.learning_rate must be in \(0, 1e\+30\], not inf"),
        (["optim.lr_scheduler=exponential"], "optim.lr_scheduler must be one of"),
        (["optim.learning_rate=1e39"], r"optim.learning_rate must be in \(0, 1e\+30\], not 1e\+39"),
        (["optim.learning_rate=1e20", "optim.weight_decay=1e20"], r"times optim.weight_decay must be at most 1e\+30"),
        (["report_to=tensorbored"], "report_to must be one of all, tensorboard"),
        (["report_to=aim"], "report_to is 'aim' but aim is not installed: pip install aim"),
        (["data.num_frames=0"], "data.num_frames must be at least 1"),
        (["data.resolution=-64"], "data.resolution must be at least 8"),
        (["data.frame_stride=0"], "data.frame_stride must be at least 1"),
        (["data.length=0"], "data.length must be at least 1"),
        (["harivo.max_frames=-1"], "harivo.max_frames must be at least 1"),
        (["data.num_frames=40"], r"data.num_frames \(40\) must be at most harivo.max_frames \(32\)"),
        (["harivo.motion_num_attention_heads=0"], "harivo.motion_num_attention_heads must be at least 1"),
        (["harivo.validation_steps=0"], "harivo.validation_steps must be at least 1"),
        (["harivo.caption_dropout=2"], r"harivo.caption_dropout must be in \[0, 1\]"),
        (["seed=-1"], "seed must be in"),
        (["harivo.motion_conditioning_pooling=max"], "motion_conditioning_pooling must be one of"),
        (["max_steps.x=3"], "max_steps must be int"),
        (["max_steps=3", "max_steps.x=3"], "max_steps is a value, not a section"),
        (["optim.learning_rate=[1"], "override 'optim.learning_rate=\\[1' line 1"),
        (["optim.learning_rate=!!python/object/apply:os.system ['echo hi']"], "Python tags"),
    ],
)
def test_bad_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_steps: [1\n", "line 2"),
        ("optim:\n  learning_rate: !!python/object/apply:os.system ['touch pwned']\n", "Python tags"),
        ("- a\n- b\n", "the config must be a mapping"),
    ],
)
def test_bad_yaml_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value) or "mapping" in message
    assert "\n" not in str(error.value) and not (tmp_path / "pwned").exists()


def test_dry_run_prints_the_resolved_config(capsys):
    main(["train", "--config", str(CONFIGS[0]), "--dry-run", "max_steps=7"])
    printed = capsys.readouterr().out
    assert "max_steps: 7" in printed and "optim:" in printed


def test_cli_reports_config_errors_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dry-run", "nonsense=1"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: Unknown key nonsense")
