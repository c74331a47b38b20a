"""Property-based sweeps: every numeric input of the pipeline, the CLI and the training config either runs or ends
with a one-line error, and nothing hangs (each example runs under an alarm)."""

import json
import math
import signal
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harivo.cli import main
from harivo.errors import HarivoLoadError, SamplingDivergedError, TrainingDivergedError
from harivo.models import HarivoAdapter
from harivo.training import Trainer, load_config
from tests.helpers import randomize_temporal_layers, tiny_pipeline
from tests.training.test_trainer import TINY

SWEEP = settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
ONE_LINE_ERRORS = (ValueError, MemoryError, HarivoLoadError, SamplingDivergedError, TrainingDivergedError)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-(2**65), 2**65),
    st.sampled_from([0, 1, -1, 0.5, 2, 1e30, -1e-30, math.nan, math.inf]),
)


@contextmanager
def time_limit(seconds: int):
    """Fail instead of hanging."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    torch.manual_seed(0)
    adapter = HarivoAdapter.from_unet(
        tiny_sd.unet, num_frame_tokens=2, max_frames=8, motion_num_attention_heads=2, motion_path=True
    )
    return tiny_pipeline(tiny_sd, randomize_temporal_layers(adapter))


PIPELINE_ARGUMENTS = {
    "num_frames": st.one_of(st.integers(-2, 10), NUMBERS),
    "height": st.one_of(st.sampled_from([8, 16, 15, 0, -16, None]), NUMBERS),
    "width": st.one_of(st.sampled_from([8, 16, 24, 0, None]), NUMBERS),
    "num_inference_steps": st.one_of(st.integers(-1, 3), NUMBERS),
    "guidance_scale": NUMBERS,
    "guidance_rescale": NUMBERS,
    "eta": NUMBERS,
    "mg_scale": st.one_of(st.sampled_from([0.0, 20.0]), NUMBERS),
    "mg_window": st.tuples(NUMBERS, NUMBERS),
    "motion_path_projection": st.one_of(st.none(), NUMBERS),
    "motion_path_window": st.tuples(NUMBERS, NUMBERS),
    "motion_path_mask": st.one_of(st.none(), st.sampled_from(["subject", "frame", "object", ""])),
    "motion_subject": st.one_of(st.none(), st.sampled_from(["red", "circle moving", "zebra", "", "Red Circle"])),
    "motion_scene": st.one_of(st.none(), st.sampled_from(["", "left", "background", "red"]), st.lists(st.just(""))),
    "temporal_window": st.one_of(st.none(), st.tuples(NUMBERS, NUMBERS)),
    "motion_path_core_window": st.one_of(st.none(), st.tuples(NUMBERS, NUMBERS)),
    "num_videos_per_prompt": st.one_of(st.integers(-1, 2), NUMBERS),
    "decode_chunk_size": st.one_of(st.integers(-1, 3), NUMBERS),
}
SAFE = {"num_frames": 2, "height": 16, "width": 16, "num_inference_steps": 1, "guidance_scale": 7.5}


@SWEEP
@given(name=st.sampled_from(sorted(PIPELINE_ARGUMENTS)), data=st.data())
def test_pipeline_numbers_run_or_raise_one_line(pipe, name, data):
    value = data.draw(PIPELINE_ARGUMENTS[name], label=name)
    kwargs = {**SAFE, name: value}
    with time_limit(60):
        try:
            video = pipe("a red circle moving left", **kwargs, output_type="pt").frames
        except ONE_LINE_ERRORS as error:
            assert str(error) and "\n" not in str(error), repr(error)
            return
    assert torch.isfinite(video).all()


@pytest.fixture(scope="module")
def cli_adapter(tiny_sd, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-sweep") / "adapter"
    HarivoAdapter.from_unet(tiny_sd.unet, max_frames=8, motion_num_attention_heads=2).save_pretrained(path)
    return path


CLI_ARGUMENTS = {
    "--seed": st.integers(-(2**65), 2**65),
    "--num-frames": st.integers(-2, 10),
    "--steps": st.integers(-1, 2),
    "--guidance-scale": NUMBERS,
    "--guidance-rescale": NUMBERS,
    "--mg-scale": st.one_of(st.just(20.0), NUMBERS),
    "--motion-path-projection": NUMBERS,
    "--fps": st.integers(-2, 2000),
    "--height": st.one_of(st.integers(-16, 40), st.just(10**6)),
}


@SWEEP
@given(name=st.sampled_from(sorted(CLI_ARGUMENTS)), data=st.data())
def test_cli_numbers_run_or_exit_with_one_line(base_dir, cli_adapter, tmp_path_factory, capsys, name, data):
    value = data.draw(CLI_ARGUMENTS[name], label=name)
    folder = tmp_path_factory.mktemp("cli-sweep")
    arguments = {"--num-frames": 2, "--height": 16, "--width": 16, "--steps": 1, name: value}
    argv = ["generate", "a red circle", "-o", str(folder / "x.gif"), "--base-model", str(base_dir),
            "--adapter", str(cli_adapter)]  # fmt: skip
    argv += [f"{key}={item}" for key, item in arguments.items()]  # "=": a value may start with "-"
    with time_limit(60):
        try:
            main(argv)
        except SystemExit as exit_info:
            assert exit_info.code == 1
            err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
            assert len(err) == 1, err
            return
    assert (folder / "x.gif").is_file()


CONFIG_VALUES = {
    "batch_size": st.integers(-1, 3),
    "data.num_frames": st.integers(-1, 10),
    "data.resolution": st.sampled_from([-16, 0, 8, 10, 12, 16, 24]),
    "data.length": st.integers(-1, 4),
    "harivo.max_frames": st.integers(-1, 10),
    "harivo.motion_num_attention_heads": st.integers(-1, 5),
    "harivo.num_frame_tokens": st.integers(-1, 3),
    "optim.learning_rate": NUMBERS,
    "optim.max_grad_norm": NUMBERS,
    "optim.lr_warmup_steps": st.integers(-3, 3),
    "checkpoints_total_limit": st.integers(-2, 2),
    "checkpoint_every": st.integers(-1, 2),
    "harivo.caption_dropout": NUMBERS,
    "harivo.timestep_bias": NUMBERS,
}


def trains_or_stops_with_one_line(overrides: list[str]) -> bool:
    """Train the config of `overrides` under an alarm: True when it trained, False when it stopped with one line."""
    with time_limit(120):
        try:
            Trainer(load_config(None, overrides)).train()
        except ONE_LINE_ERRORS as error:
            assert str(error) and "\n" not in str(error), repr(error)
            return False
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
    return True


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(name=st.sampled_from(sorted(CONFIG_VALUES)), data=st.data())
def test_training_config_values_train_or_stop_with_one_line(base_dir, tmp_path_factory, name, data):
    value = data.draw(CONFIG_VALUES[name], label=name)
    folder = tmp_path_factory.mktemp("train-sweep")
    overrides = [*TINY["harivo"], f"harivo.base_model={base_dir}", f"output_dir={folder}", "max_steps=1",
                 "batch_size=2", "checkpoint_every=1", "num_validation_samples=0", "optim.lr_warmup_steps=0",
                 f"{name}={value}"]  # fmt: skip
    if trains_or_stops_with_one_line(overrides):
        assert (folder / "final" / "harivo_adapter.json").is_file()


@pytest.fixture(scope="module")
def control_pipe(tiny_sd, pipe):
    from diffusers import DDIMScheduler

    from harivo import HarivoControlNetPipeline
    from tests.pipelines.test_pipeline_controlnet import make_controlnet

    parts = tiny_sd.components
    controlled = HarivoControlNetPipeline(
        parts["vae"], parts["text_encoder"], parts["tokenizer"], pipe.unet, pipe.adapter,
        make_controlnet(tiny_sd.unet), DDIMScheduler(),
    )  # fmt: skip
    controlled.set_progress_bar_config(disable=True)
    return controlled


def _condition_frames(count: int, size: int, channels: int, value: float) -> torch.Tensor:
    return torch.full((count, channels, size, size), float(value))


CONTROL_ARGUMENTS = {
    "controlnet_conditioning_scale": st.one_of(NUMBERS, st.lists(NUMBERS, max_size=3)),
    "control_guidance_start": st.one_of(NUMBERS, st.lists(NUMBERS, max_size=2)),
    "control_guidance_end": NUMBERS,
    "guess_mode": st.booleans(),
    "controlnet_frame_indices": st.one_of(
        st.none(), NUMBERS, st.lists(st.one_of(st.integers(-3, 4), NUMBERS, st.booleans()), max_size=4)
    ),
    "conditioning_frames": st.builds(
        _condition_frames,
        st.integers(0, 3),
        st.sampled_from([8, 16, 32, 24]),
        st.sampled_from([1, 2, 3]),
        st.one_of(st.floats(-1, 2), NUMBERS),
    ),
    "motion_path": st.sampled_from([None, "control", "frames", ""]),
}


@SWEEP
@given(name=st.sampled_from(sorted(CONTROL_ARGUMENTS)), data=st.data())
def test_control_inputs_run_or_raise_one_line(control_pipe, name, data):
    value = data.draw(CONTROL_ARGUMENTS[name], label=name)
    kwargs = {**SAFE, "conditioning_frames": torch.rand(2, 3, 16, 16), name: value}
    with time_limit(60):
        try:
            video = control_pipe("a red circle", **kwargs, output_type="pt").frames
        except ONE_LINE_ERRORS as error:
            assert str(error) and "\n" not in str(error), repr(error)
            return
    assert torch.isfinite(video).all()


@SWEEP
@given(
    value=st.one_of(
        st.text(max_size=30),
        st.builds(lambda scale: f"style.safetensors:{scale}", NUMBERS),
        st.sampled_from(["", ":", ":1", "a:b:c", "C:\\loras\\x.safetensors", "org/lora", "x.safetensors:nan"]),
    )
)
def test_every_lora_option_parses_or_is_one_line(value, tmp_path_factory):
    """`--lora PATH[:SCALE]`: any value is read as a path and a finite scale, or refused in one line, before loading."""
    from harivo.loras import parse_loras

    try:
        loras = parse_loras([value])
    except (ValueError, FileNotFoundError) as error:
        assert "\n" not in str(error) and str(error).startswith("--lora ")
        return
    ((path, scale),) = loras
    assert path and math.isfinite(scale) and abs(scale) <= 10


WORKFLOW_ARGUMENTS = {
    "strength": st.one_of(st.sampled_from([0.25, 0.5, 1.0]), NUMBERS),
    "prompt": st.dictionaries(
        st.one_of(st.integers(-2, 4), NUMBERS, st.booleans()),
        st.one_of(st.just("a blue square"), NUMBERS),
        max_size=3,
    ),
    "prompt_travel_window": st.tuples(NUMBERS, NUMBERS),
    "num_frames": st.one_of(st.integers(-1, 6), NUMBERS),
    "context": st.tuples(st.one_of(st.integers(-1, 9), NUMBERS), st.one_of(st.integers(-1, 5), NUMBERS)),
}


@settings(max_examples=48, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(name=st.sampled_from(sorted(WORKFLOW_ARGUMENTS)), workflow=st.sampled_from(["text", "video", "image"]),
       data=st.data())  # fmt: skip
def test_workflow_inputs_run_or_raise_one_line(pipe, name, workflow, data):
    from harivo import HarivoImageToVideoPipeline, HarivoVideoToVideoPipeline

    value = data.draw(WORKFLOW_ARGUMENTS[name], label=name)
    frames = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    runner = {"text": pipe, "video": HarivoVideoToVideoPipeline.from_pipe(pipe),
              "image": HarivoImageToVideoPipeline.from_pipe(pipe)}[workflow]  # fmt: skip
    kwargs = {**SAFE, "num_frames": 4, "num_inference_steps": 2, "prompt": "a red circle moving left"}
    kwargs.update({"video": {"video": frames}, "image": {"image": frames[0]}, "text": {}}[workflow])
    if name == "strength" and workflow == "text":
        return  # text-to-video has no strength
    if name == "context":
        kwargs["num_frames"] = 10
    else:
        kwargs[name] = value
    with time_limit(60):
        try:
            if name == "context":
                runner.enable_free_noise(context_length=value[0], context_stride=value[1])
            video = runner(**kwargs, output_type="pt").frames
        except ONE_LINE_ERRORS as error:
            assert str(error) and "\n" not in str(error), repr(error)
            return
        finally:
            runner.disable_free_noise()
    assert torch.isfinite(video).all()


DISTILL_VALUES = {
    "distill.num_inference_steps": st.integers(-1, 5),
    "distill.teacher_steps": st.integers(-1, 9),
    "distill.teacher_guidance_scale": NUMBERS,
    "distill.num_frames": st.integers(-1, 12),
    "distill.lora_rank": st.integers(-1, 3),
    "distill.num_trajectories": st.integers(-1, 3),
}


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(name=st.sampled_from(sorted(DISTILL_VALUES)), data=st.data())
def test_distillation_values_train_or_stop_with_one_line(base_dir, cli_adapter, tmp_path_factory, name, data):
    value = data.draw(DISTILL_VALUES[name], label=name)
    folder = tmp_path_factory.mktemp("distill-sweep")
    overrides = ["stage=distill", f"distill.base_model={base_dir}", f"distill.adapter={cli_adapter}",
                 f"output_dir={folder}", "max_steps=1", "batch_size=2", "checkpoint_every=1",
                 "num_validation_samples=0", "distill.num_trajectories=2", "distill.num_frames=2",
                 "distill.teacher_steps=4", "distill.num_inference_steps=2", "distill.lora_rank=2",
                 "distill.prompts=[a red circle]", f"{name}={value}"]  # fmt: skip
    if trains_or_stops_with_one_line(overrides):
        assert (folder / "final" / "harivo_fast.json").is_file()


MOTION_LORA_VALUES = {
    "motion_lora.num_frames": st.integers(-1, 6),
    "motion_lora.lora_rank": st.integers(-1, 3),
    "motion_lora.spatial_lora_rank": st.integers(-1, 3),
    "motion_lora.spatial_loss_weight": NUMBERS,
    "motion_lora.max_videos": st.integers(-1, 2),
    "motion_lora.prompt": st.text(max_size=8),
}


@pytest.fixture(scope="module")
def reference_clips(tmp_path_factory):
    from harivo.video_io import save_video

    folder = tmp_path_factory.mktemp("motion-clips")
    for index in range(2):
        frames = np.zeros((5, 16, 16, 3), np.uint8)
        for t in range(5):
            frames[t, 4 + t : 8 + t, 4 + t : 8 + t] = (220, 40, 40)
        save_video(frames, folder / f"clip{index}.mp4")
    (folder / "clip0.txt").write_text("a small red circle")
    return folder


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(name=st.sampled_from(sorted(MOTION_LORA_VALUES)), data=st.data())
def test_motion_lora_values_train_or_stop_with_one_line(
    base_dir, cli_adapter, reference_clips, tmp_path_factory, name, data
):
    value = data.draw(MOTION_LORA_VALUES[name], label=name)
    folder = tmp_path_factory.mktemp("motion-lora-sweep")
    overrides = ["stage=motion_lora", f"motion_lora.base_model={base_dir}", f"motion_lora.adapter={cli_adapter}",
                 f"motion_lora.videos={reference_clips}", f"output_dir={folder}", "max_steps=1", "batch_size=2",
                 "checkpoint_every=1", "num_validation_samples=0", "data.resolution=16", "motion_lora.num_frames=4",
                 "motion_lora.lora_rank=2", "motion_lora.prompt=a red circle", f"{name}={json.dumps(value)}"]  # fmt: skip
    if trains_or_stops_with_one_line(overrides):
        assert (folder / "final" / "harivo_motion.json").is_file()
