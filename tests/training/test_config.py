from pathlib import Path

import pytest

from harivo.cli import main
from harivo.training import load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


def test_defaults_without_a_file():
    config = load_config()
    assert config.stage == "harivo" and config.harivo.weight_reg == 0.1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
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
    ],
)
def test_bad_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_dry_run_prints_the_resolved_config(capsys):
    main(["train", "--config", str(CONFIGS[0]), "--dry-run", "max_steps=7"])
    printed = capsys.readouterr().out
    assert "max_steps: 7" in printed and "optim:" in printed


def test_cli_reports_config_errors_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dry-run", "nonsense=1"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: Unknown key nonsense")
