"""DeepCache on the video U-Net: deep blocks run only at full steps, the rest reuse them; windows, MG, the motion
path's token capture and ControlNet keep working; nothing of it outlives a call."""

import pytest
import torch

from harivo.pipelines.deep_cache import deep_blocks
from tests.pipelines.test_pipeline_reliability import conditioned_adapter, make_pipe, video


@pytest.fixture
def pipe(tiny_sd):
    return make_pipe(tiny_sd, conditioned_adapter(tiny_sd))


def test_deep_blocks_run_only_at_full_steps_and_the_video_stays_close(pipe, monkeypatch):
    plain = video(pipe, steps=6)
    unet = pipe.video_unet.base_unet
    calls = []
    forward = type(unet.mid_block).forward
    monkeypatch.setattr(
        type(unet.mid_block), "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k)
    )
    pipe.enable_deep_cache(cache_interval=3)
    cached = video(pipe, steps=6)
    assert len(calls) == 2  # steps 0 and 3 of 6 (guidance's two branches are one batched call)
    assert torch.isfinite(cached).all() and not torch.equal(cached, plain)  # (its quality: benchmarks/fewer_steps.py)
    assert all("forward" not in vars(block) for block in deep_blocks(unet, 0))  # the wrappers left with the call
    pipe.enable_deep_cache(cache_interval=1)  # every step full: exactly uncached
    torch.testing.assert_close(video(pipe, steps=6), plain)
    pipe.disable_deep_cache()
    torch.testing.assert_close(video(pipe, steps=6), plain)


def test_a_cached_step_is_the_full_step_when_its_inputs_did_not_change(pipe):
    """The shallow blocks run fresh around the kept deep outputs: with the same inputs, exactly the full result."""
    pipe.enable_deep_cache(cache_interval=4)
    unet = pipe.video_unet
    sample, text = torch.randn(1, 4, 4, 2, 2), torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad(), pipe._deep_cache_during_call():
        pipe._deep_cache_step(0, ("mode",))
        full = unet(sample, 500, text)
        pipe._deep_cache_step(1, ("mode",))
        again = unet(sample, 500, text)
        later = unet(sample, 100, text)  # another call of the same step: its own (no) features, computed whole
        pipe._deep_cache_step(2, ("mode",))
        reused = unet(sample, 100, text)
    torch.testing.assert_close(again, full)
    assert not torch.allclose(later, full)
    assert not torch.allclose(reused, later)  # step 2 reused step 0's deep features of t=500


def test_a_call_that_fails_leaves_no_wrapper(pipe):
    pipe.enable_deep_cache(cache_interval=2)

    def stop(pipe, step, timestep, tensors):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        video(pipe, steps=6, callback_on_step_end=stop)
    assert all("forward" not in vars(block) for block in deep_blocks(pipe.video_unet.base_unet, 0))


def test_windows_mg_and_the_motion_path_run_with_the_cache(pipe):
    """Long-video windows each keep their own features; MG steps run whole; the subject mask reads the kept maps."""
    pipe.enable_free_noise(context_length=4, context_stride=2)
    options = {"num_frames": 8, "mg_scale": 10.0, "mg_window": (0.0, 0.3), "motion_path_projection": 1.0,
               "motion_path": torch.stack([torch.arange(8.0), torch.zeros(8)], dim=1)}  # fmt: skip
    plain = video(pipe, steps=6, **options)
    pipe.enable_deep_cache(cache_interval=1)
    torch.testing.assert_close(video(pipe, steps=6, **options), plain)
    pipe.enable_deep_cache(cache_interval=3)
    cached = video(pipe, steps=6, **options)
    assert torch.isfinite(cached).all() and not torch.equal(cached, plain)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cache_interval": 0}, "`cache_interval` must be a positive integer, got 0."),
        ({"cache_interval": 2.5}, "`cache_interval` must be a positive integer, got 2.5."),
        ({"cache_branch_id": 5}, "`cache_branch_id` must be an integer from 0 to"),
    ],
)
def test_bad_settings_are_one_line(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("`", "`")) as error:
        pipe.enable_deep_cache(**kwargs)
    assert "\n" not in str(error.value)
