"""`motion_scale`: the temporal layers' residual scaled per call, per frame, per block or per step."""

import pytest
import torch

from harivo.pipelines.motion_scale import MotionScale, check_motion_scale
from tests.pipelines.test_pipeline_reliability import CALL, conditioned_adapter, make_pipe, video


@pytest.fixture
def pipe(tiny_sd):
    return make_pipe(tiny_sd, conditioned_adapter(tiny_sd))


def test_zero_is_the_image_model_frame_by_frame_and_one_the_trained_model(pipe):
    plain = video(pipe, steps=3)
    torch.testing.assert_close(video(pipe, steps=3, motion_scale=1.0), plain)
    torch.testing.assert_close(video(pipe, steps=3, motion_scale={"down": 1.0}), plain)
    frame_by_frame = video(pipe, steps=3, temporal_window=(0.0, 0.0))  # the temporal layers never run
    torch.testing.assert_close(video(pipe, steps=3, motion_scale=0.0), frame_by_frame)
    torch.testing.assert_close(video(pipe, steps=3, motion_scale=[0.0] * CALL["num_frames"]), frame_by_frame)
    torch.testing.assert_close(video(pipe, steps=3, motion_scale={"down": 0, "mid": 0, "up": 0}), frame_by_frame)
    path = {"motion_path": torch.stack([torch.arange(4.0), torch.zeros(4)], dim=1), "motion_path_projection": 1.0}
    # no path projection, no MG (to the attention kernels' rounding: recording the subject's attention for the
    # projection swaps the fused kernel for one that keeps the maps)
    torch.testing.assert_close(
        video(pipe, steps=3, motion_scale=0.0, mg_scale=10.0, **path), frame_by_frame, atol=1e-4, rtol=0
    )
    assert not torch.allclose(video(pipe, steps=3, motion_scale=0.5, **path), video(pipe, steps=3, motion_scale=0.5))
    half, strong = video(pipe, steps=3, motion_scale=0.5), video(pipe, steps=3, motion_scale=1.5)
    # in between: the further the scale from 1, the further the video from the trained model's
    assert 0 < (half - plain).abs().mean() < (frame_by_frame - plain).abs().mean()
    assert (strong - plain).abs().mean() > 0


def test_per_frame_per_block_and_scheduled_scales_take_effect_and_leave_no_hook(pipe):
    plain = video(pipe, steps=3)
    for value in ([1.0, 1.0, 0.0, 0.0], {"up": 0.0}, {"up_blocks.1": 2.0}, lambda step, steps: 0.0 if step else 1.0):
        assert not torch.allclose(video(pipe, steps=3, motion_scale=value), plain)
    modules = [m for block in pipe.video_unet.base_unet.down_blocks for m in block.motion_modules]
    assert all(not module._forward_hooks for module in modules)
    torch.testing.assert_close(video(pipe, steps=3), plain)  # nothing of the scaled calls stays


def test_a_per_frame_scale_follows_each_window_of_a_long_video(pipe):
    pipe.enable_free_noise(context_length=4, context_stride=2)
    plain = video(pipe, steps=3, num_frames=8)
    torch.testing.assert_close(video(pipe, steps=3, num_frames=8, motion_scale=[1.0] * 8), plain)
    assert torch.isfinite(video(pipe, steps=3, num_frames=8, motion_scale=[0.0] * 4 + [1.0] * 4)).all()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.5, "`motion_scale` must be a number from 0 to 10, got -0.5."),
        (float("nan"), "`motion_scale` must be a number from 0 to 10, got nan."),
        ([1.0, 1.0], "`motion_scale` per frame needs 4 values (one per frame), got 2."),
        ({"sideways": 1.0}, "`motion_scale` has no block 'sideways'; name one of: down, mid, up, down_blocks.0"),
        ({"up": 11}, "`motion_scale['up']` must be a number from 0 to 10, got 11."),
        ("strong", "`motion_scale` must be a number, a list with one per frame, a dict per U-Net block or a callable"),
        (lambda step, steps: -1, "`motion_scale` must be a number from 0 to 10, got -1."),
    ],
)
def test_bad_motion_scales_are_one_line(pipe, value, message):
    with pytest.raises(ValueError) as error:
        video(pipe, steps=3, motion_scale=value)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_block_factors_override_their_group():
    scale = check_motion_scale({"up": 0.5, "up_blocks.1": 2.0}, 4, ["up_blocks.0", "up_blocks.1"])
    assert (scale.of_block("up_blocks.0"), scale.of_block("up_blocks.1"), scale.of_block("down_blocks.0")) == (
        0.5, 2.0, 1.0,
    )  # fmt: skip
    assert MotionScale(value=0.0).is_zero and not MotionScale(per_block=(("up", 0.0),)).is_zero
