"""`HarivoControlNetPipeline` on tiny real components: ControlNets built with `ControlNetModel.from_unet`."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import ControlNetModel, DDIMScheduler, SparseControlNetModel
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

from harivo import HarivoControlNetPipeline, HarivoPipeline
from harivo.models import HarivoAdapter
from harivo.pipelines.controlnet import ControlInputs, control_residuals, in_window, path_from_conditions
from harivo.utils.tiny import tiny_unet
from tests.helpers import randomize_temporal_layers

CALL = {"prompt": "a small red circle", "num_frames": 4, "height": 16, "width": 16, "num_inference_steps": 2}


def make_controlnet(unet, seed: int = 0) -> ControlNetModel:
    """A ControlNet of `unet` whose zero-initialised outputs were given weights, as training would."""
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
    with torch.no_grad():
        for param in net.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return net.eval()


@pytest.fixture(scope="module")
def adapter(tiny_sd):
    torch.manual_seed(0)
    adapter = HarivoAdapter.from_unet(tiny_sd.unet, num_frame_tokens=2, max_frames=8, motion_num_attention_heads=2)
    return randomize_temporal_layers(adapter)


@pytest.fixture(scope="module")
def controlnet(tiny_sd):
    return make_controlnet(tiny_sd.unet)


@pytest.fixture(scope="module")
def pipes(tiny_sd, adapter, controlnet):
    parts = tiny_sd.components
    pipe = HarivoControlNetPipeline(
        parts["vae"], parts["text_encoder"], parts["tokenizer"], parts["unet"], adapter, controlnet, DDIMScheduler()
    )
    plain = HarivoPipeline(
        parts["vae"], parts["text_encoder"], parts["tokenizer"], pipe.unet, adapter, DDIMScheduler()
    )
    for p in (pipe, plain):
        p.set_progress_bar_config(disable=True)
    return pipe, plain


@pytest.fixture(scope="module")
def conditions():
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def run(pipe, seed=0, **kwargs):
    return pipe(**{**CALL, **kwargs}, output_type="pt", generator=torch.Generator().manual_seed(seed)).frames


def test_scale_zero_or_outside_the_window_is_exactly_the_plain_pipeline(pipes, conditions):
    pipe, plain = pipes
    reference = run(plain)
    assert torch.equal(run(pipe, conditioning_frames=conditions, controlnet_conditioning_scale=0.0), reference)
    controlled = run(pipe, conditioning_frames=conditions)
    assert (controlled - reference).abs().max() > 1e-3  # the control acts
    # Both steps lie outside [0.9, 1.0) of a 2-step schedule except the last: acting there changes only that step
    late = run(pipe, conditioning_frames=conditions, control_guidance_start=0.9)
    assert not torch.equal(late, controlled)


def test_uncontrolled_frames_get_no_residual(pipes, conditions):
    pipe, plain = pipes
    # Without the temporal layers (an empty temporal window) the frames are independent: the uncontrolled ones must
    # come out exactly as without any control, the controlled ones not.
    independent = {"temporal_window": (0.0, 0.0)}
    reference = run(plain, **independent)
    chosen = run(pipe, conditioning_frames=conditions[[0, 3]], controlnet_frame_indices=[0, 3], **independent)
    assert torch.equal(chosen[:, 1:3], reference[:, 1:3])
    assert (chosen[:, [0, 3]] - reference[:, [0, 3]]).abs().amax() > 1e-3
    # With the temporal layers the control reaches the other frames too
    linked = run(pipe, conditioning_frames=conditions[[0, 3]], controlnet_frame_indices=[0, 3])
    assert not torch.equal(linked[:, 1:3], run(plain)[:, 1:3])


def test_residuals_are_zero_off_the_controlled_frames_and_for_the_negative_prompt_in_guess_mode(controlnet):
    inputs = ControlInputs([torch.rand(1, 2, 3, 16, 16)], [1, 2], 4, [1.0], [0.0], [1.0], guess_mode=True)
    sample = torch.randn(2, 4, 4, 8, 8)  # [negative; positive] x 4 frames
    embeds = torch.randn(2, 77, 32)
    residuals = control_residuals(controlnet, inputs, sample, torch.tensor(500), embeds, 0, 2, classifier_free=True)
    for residual in (*residuals["down_block_additional_residuals"], residuals["mid_block_additional_residual"]):
        per_frame = residual.unflatten(0, (2, 4)).abs().flatten(2).amax(-1)  # (video, frame)
        assert per_frame[0].eq(0).all()  # the negative prompt's video
        assert per_frame[1, [0, 3]].eq(0).all() and per_frame[1, [1, 2]].gt(0).all()
    assert control_residuals(controlnet, inputs, sample, torch.tensor(500), embeds, 0, 2, True) is not residuals
    outside = ControlInputs(inputs.images, [1, 2], 4, [1.0], [0.6], [1.0], guess_mode=False)
    assert control_residuals(controlnet, outside, sample, torch.tensor(500), embeds, 0, 2, True) == {}


def test_one_condition_clip_per_prompt_controls_that_prompts_videos(controlnet, pipes, conditions):
    """diffusers takes a list of clips, one per prompt: each prompt's videos get their own clip's residuals."""
    clips = torch.rand(2, 2, 3, 16, 16)
    sample, embeds = torch.randn(4, 4, 4, 8, 8), torch.randn(4, 77, 32)  # 2 prompts x 2 videos, no guidance
    both = ControlInputs([clips], [1, 2], 4, [1.0], [0.0], [1.0], guess_mode=False, videos_per_prompt=2)
    together = control_residuals(controlnet, both, sample, torch.tensor(500), embeds, 0, 2, classifier_free=False)
    for prompt in (0, 1):
        alone = ControlInputs([clips[prompt : prompt + 1]], [1, 2], 4, [1.0], [0.0], [1.0], guess_mode=False)
        rows = slice(2 * prompt, 2 * prompt + 2)
        single = control_residuals(controlnet, alone, sample[rows], torch.tensor(500), embeds[rows], 0, 2, False)
        torch.testing.assert_close(
            together["mid_block_additional_residual"].unflatten(0, (4, 4))[rows],
            single["mid_block_additional_residual"].unflatten(0, (2, 4)),
        )
    pipe, _ = pipes
    prompts = ["a small red circle moving left", "a small blue square moving up"]
    batch = run(pipe, prompt=prompts, conditioning_frames=[conditions, conditions.flip(-1)])
    assert batch.shape[0] == 2
    with pytest.raises(ValueError, match="holds 3 clips for 2 prompts"):
        run(pipe, prompt=prompts, conditioning_frames=[conditions] * 3)


def test_two_controlnets_sum_and_a_net_at_scale_zero_drops_out(tiny_sd, adapter, pipes, conditions):
    pipe, _ = pipes
    parts = tiny_sd.components
    other = make_controlnet(tiny_sd.unet, seed=1)
    double = HarivoControlNetPipeline(
        parts["vae"], parts["text_encoder"], parts["tokenizer"], pipe.unet, adapter, [pipe.controlnet, other],
        DDIMScheduler(),
    )  # fmt: skip
    double.set_progress_bar_config(disable=True)
    assert isinstance(double.controlnet, MultiControlNetModel)
    single = run(pipe, conditioning_frames=conditions, controlnet_conditioning_scale=0.7)
    dropped = run(
        double, conditioning_frames=[conditions, conditions.flip(-1)], controlnet_conditioning_scale=[0.7, 0]
    )
    assert torch.allclose(dropped, single, atol=1e-6)
    both = run(double, conditioning_frames=[conditions, conditions.flip(-1)], controlnet_conditioning_scale=[0.7, 0.5])
    assert (both - single).abs().max() > 1e-4
    with pytest.raises(ValueError, match="list of 2 entries"):
        run(double, conditioning_frames=conditions)
    with pytest.raises(ValueError, match="2 ControlNets"):
        run(double, conditioning_frames=[conditions, conditions], controlnet_conditioning_scale=[1.0, 1.0, 1.0])


def test_condition_formats_agree_and_same_aspect_sizes_are_resized(pipes, conditions):
    pipe, _ = pipes
    as_tensor = run(pipe, conditioning_frames=conditions)
    quantised = (conditions * 255).round() / 255
    array = (quantised.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    images = [PIL.Image.fromarray(frame) for frame in array]
    from_pil = run(pipe, conditioning_frames=images)
    assert torch.allclose(from_pil, run(pipe, conditioning_frames=array), atol=1e-6)
    assert torch.allclose(from_pil, run(pipe, conditioning_frames=quantised), atol=1e-6)
    assert (from_pil - as_tensor).abs().max() < 0.05
    big = torch.nn.functional.interpolate(conditions, scale_factor=2, mode="nearest")
    assert run(pipe, conditioning_frames=big).shape == as_tensor.shape


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conditioning_frames": None}, "Pass `conditioning_frames`"),
        ({"conditioning_frames": torch.rand(3, 3, 16, 16)}, r"has 3 images; it needs as many as `num_frames` \(4\)"),
        (
            {"conditioning_frames": torch.rand(3, 3, 16, 16), "controlnet_frame_indices": [0, 3]},
            r"needs as many as `controlnet_frame_indices` \(2\)",
        ),
        ({"conditioning_frames": torch.rand(1, 3, 16, 16), "controlnet_frame_indices": [4]}, r"outside .* 0 to 3"),
        ({"conditioning_frames": torch.rand(2, 3, 16, 16), "controlnet_frame_indices": [1, 1]}, "repeats frames"),
        ({"conditioning_frames": torch.rand(1, 3, 16, 16), "controlnet_frame_indices": []}, "non-empty list"),
        ({"conditioning_frames": torch.rand(4, 3, 16, 24)}, "another aspect ratio"),
        ({"conditioning_frames": torch.rand(4, 3, 16, 16) * 2}, r"values in \[0, 1\]"),
        ({"conditioning_frames": "frames/"}, "must be PIL images"),
        ({"conditioning_frames": torch.rand(4, 3, 16, 16), "controlnet_conditioning_scale": -1.0}, ">= 0"),
        ({"conditioning_frames": torch.rand(4, 3, 16, 16), "control_guidance_start": 0.8, "control_guidance_end": 0.2},
         "must be below"),
        ({"conditioning_frames": torch.rand(4, 3, 16, 16), "motion_path": "prompt"}, "a tensor or 'control'"),
        ({"conditioning_frames": torch.zeros(4, 3, 16, 16), "motion_path": "control"}, "are black"),
    ],
)  # fmt: skip
def test_bad_control_inputs_are_one_line_errors(pipes, kwargs, message):
    pipe, _ = pipes
    with pytest.raises(ValueError, match=message) as error:
        run(pipe, **kwargs)
    assert "\n" not in str(error.value)
    assert pipe._control is None  # nothing of the failed call stays on the pipeline


def test_a_controlnet_for_another_base_is_refused(tiny_sd, adapter, pipes, conditions):
    wider = tiny_unet(cross_attention_dim=48)
    foreign = ControlNetModel.from_unet(wider, conditioning_embedding_out_channels=(4, 8))
    parts = tiny_sd.components
    with pytest.raises(ValueError, match="built for another base model: its cross_attention_dim is 48"):
        HarivoControlNetPipeline(
            parts["vae"], parts["text_encoder"], parts["tokenizer"], parts["unet"], adapter, foreign, DDIMScheduler()
        )
    pipe, _ = pipes
    original = pipe.controlnet
    pipe.controlnet = foreign  # replaced after construction: checked at the call
    try:
        with pytest.raises(ValueError, match="another base model"):
            run(pipe, conditioning_frames=conditions)
    finally:
        pipe.controlnet = original


def test_path_from_conditions_follows_the_silhouette_between_keyframes():
    frames = torch.zeros(2, 3, 32, 32)
    frames[0, :, 4:8, 2:6] = 1  # centre (3.5, 5.5)
    frames[1, :, 20:24, 26:30] = 1  # centre (27.5, 21.5)
    path = path_from_conditions(frames, [1, 5], num_frames=7, vae_scale_factor=4)
    expected_x = np.interp(np.arange(7), [1, 5], [3.5, 27.5])
    expected_y = np.interp(np.arange(7), [1, 5], [5.5, 21.5])
    expected = np.stack([expected_x - expected_x[0], expected_y - expected_y[0]], -1) / 4
    np.testing.assert_allclose(path.numpy(), expected, atol=1e-5)
    assert path[0].eq(0).all() and torch.equal(path[-1], path[-2])  # held after the last keyframe


def test_motion_path_from_the_control_runs_the_projection(pipes, conditions):
    pipe, _ = pipes
    keyframes = torch.zeros(2, 3, 16, 16)
    keyframes[0, :, 2:6, 2:6] = 1
    keyframes[1, :, 10:14, 10:14] = 1
    kwargs = {"conditioning_frames": keyframes, "controlnet_frame_indices": [0, 3], "motion_path_mask": "frame"}
    without = run(pipe, **kwargs)
    with_path = run(pipe, **kwargs, motion_path="control")
    assert (with_path - without).abs().max() > 1e-3


def test_save_and_load_with_a_controlnet(tmp_path, base_dir, pipes, conditions, controlnet, adapter):
    pipe, _ = pipes
    expected = run(pipe, conditioning_frames=conditions)
    pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = HarivoControlNetPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert torch.allclose(run(loaded, conditioning_frames=conditions), expected, atol=1e-5)
    # From a base model, an adapter folder and a ControlNet folder (or a list of them)
    adapter.save_pretrained(tmp_path / "adapter")
    controlnet.save_pretrained(tmp_path / "controlnet")
    fresh = HarivoControlNetPipeline.from_pretrained(
        base_dir, adapter=tmp_path / "adapter", controlnet=tmp_path / "controlnet", scheduler=DDIMScheduler()
    )
    fresh.set_progress_bar_config(disable=True)
    assert torch.allclose(run(fresh, conditioning_frames=conditions), expected, atol=1e-5)
    several = HarivoControlNetPipeline.from_pretrained(
        base_dir, adapter=tmp_path / "adapter", controlnet=[tmp_path / "controlnet", controlnet]
    )
    assert isinstance(several.controlnet, MultiControlNetModel) and len(several.controlnet.nets) == 2
    with pytest.raises(OSError, match=r"The ControlNet .* does not exist"):
        HarivoControlNetPipeline.from_pretrained(base_dir, adapter=tmp_path / "adapter", controlnet=tmp_path / "nope")
    with pytest.raises(ValueError, match="holds no ControlNet: pass `controlnet=`"):
        HarivoControlNetPipeline.from_pretrained(base_dir, adapter=tmp_path / "adapter")
    with pytest.raises(ValueError, match="takes no ControlNet: load `HarivoControlNetPipeline"):
        HarivoPipeline.from_pretrained(base_dir, adapter=tmp_path / "adapter", controlnet=controlnet)


def test_reuse_after_a_controlled_call_and_from_pipe(pipes, conditions, controlnet):
    pipe, plain = pipes
    reference = run(plain)
    run(pipe, conditioning_frames=conditions)
    assert pipe._control is None
    assert torch.equal(run(plain), reference)  # the shared U-Net and adapter kept nothing of the control
    derived = HarivoControlNetPipeline.from_pipe(plain, controlnet=controlnet)
    derived.set_progress_bar_config(disable=True)
    assert torch.equal(run(derived, conditioning_frames=conditions), run(pipe, conditioning_frames=conditions))


@pytest.mark.parametrize("reads_latents", [False, True])
def test_sparsectrl_spreads_a_keyframe_to_every_frame(tiny_sd, adapter, pipes, reads_latents, base_dir, tmp_path):
    torch.manual_seed(0)
    sparse = SparseControlNetModel(
        conditioning_channels=4 if reads_latents else 3, down_block_types=("CrossAttnDownBlockMotion",) * 2,
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=4, conditioning_embedding_out_channels=(4, 8), motion_num_attention_heads=2,
        use_simplified_condition_embedding=reads_latents,
    )  # fmt: skip
    with torch.no_grad():
        for param in sparse.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    parts = tiny_sd.components
    pipe = HarivoControlNetPipeline(
        parts["vae"], parts["text_encoder"], parts["tokenizer"], pipes[0].unet, adapter, sparse, DDIMScheduler()
    )
    pipe.set_progress_bar_config(disable=True)
    keyframe = {"conditioning_frames": torch.rand(1, 3, 16, 16), "controlnet_frame_indices": [0]}
    off = run(pipe, **keyframe, controlnet_conditioning_scale=0.0)
    assert torch.equal(off, run(pipes[1]))
    on = run(pipe, **keyframe)
    assert (on - off).abs().flatten(2).amax(-1).gt(1e-3).all()  # every frame, not only frame 0
    sparse.save_pretrained(tmp_path / "sparsectrl")  # a saved SparseCtrl folder loads as one
    adapter.save_pretrained(tmp_path / "adapter")
    loaded = HarivoControlNetPipeline.from_pretrained(
        base_dir, adapter=tmp_path / "adapter", controlnet=tmp_path / "sparsectrl"
    )
    assert isinstance(loaded.controlnet, SparseControlNetModel)


def test_control_composes_with_mg_sampling_and_a_given_path(pipes, conditions):
    pipe, _ = pipes
    controlled = run(pipe, conditioning_frames=conditions)
    guided = run(pipe, conditioning_frames=conditions, mg_scale=40.0, mg_window=(0.0, 1.0))
    assert torch.isfinite(guided).all() and (guided - controlled).abs().max() > 1e-4
    path = torch.arange(4)[:, None] * torch.tensor([1.0, 0.0])
    along = run(pipe, conditioning_frames=conditions, motion_path=path, motion_path_mask="frame")
    assert (along - controlled).abs().max() > 1e-4


def test_controls_run_inside_long_video_windows(pipes):
    """Each window's nets see the conditions of its own frames: with the frames independent (an empty temporal window)
    and the same noise, a windowed call is the one-pass call, every frame controlled or keyframes only."""
    pipe, plain = pipes
    long = {"num_frames": 8, "temporal_window": (0.0, 0.0)}
    conditions = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    for frames in ([0, 1, 2, 3, 4, 5, 6, 7], [0, 7]):
        controls = {"conditioning_frames": conditions[frames], "controlnet_frame_indices": frames}
        whole = run(pipe, **long, **controls)
        pipe.enable_free_noise(context_length=4, context_stride=2, noise_type="random")
        try:
            windowed = run(pipe, **long, **controls)
        finally:
            pipe.disable_free_noise()
        torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=0)
    assert (run(plain, **long) - whole).abs().amax() > 1e-3  # the keyframes' control acts


def test_a_window_holds_the_controlled_frames_inside_it_numbered_by_their_place():
    inputs = ControlInputs([torch.arange(3.0).view(1, 3, 1, 1, 1)], [0, 5, 7], 8, [1.0], [0.0], [1.0], False)
    window = in_window(inputs, [6, 7, 0, 1])  # a loop's window wraps past the last frame
    assert window.frame_indices == [1, 2] and window.num_frames == 4
    assert window.images[0].flatten().tolist() == [2.0, 0.0]  # frames 7 and 0
    assert in_window(inputs, range(1, 5)) is None  # no controlled frame: no residual
