"""AnimateDiff's daily workflows on tiny real components: prompt travel, video-to-video, image-to-video and long
videos (FreeNoise windows), each a thin layer over `HarivoPipeline`'s one denoising loop."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from harivo import HarivoImageToVideoPipeline, HarivoPipeline, HarivoVideoToVideoPipeline
from harivo.data.shapes import ShapeScene, render_clip
from harivo.models import HarivoAdapter, HarivoUNet
from harivo.pipelines import prompt_travel
from harivo.pipelines.free_init import FreeInitSettings
from harivo.pipelines.free_noise import FreeNoiseSettings
from harivo.pipelines.pipeline_harivo_video2video import video_motion_path
from harivo.video_io import to_tensor_frames
from tests.helpers import randomize_temporal_layers

CALL = {"num_frames": 6, "height": 16, "width": 16, "num_inference_steps": 4, "output_type": "pt"}
RED = "a small red circle moving left"
BLUE = "a small blue square moving up"
DEFAULT = object()  # leave the argument out


def _nudge(module: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * std)


@pytest.fixture(scope="module")
def adapter(tiny_sd):
    """Every per-clip part on and trained-looking: frame tokens, motion conditioner, motion path predictor."""
    torch.manual_seed(0)
    adapter = HarivoAdapter.from_unet(
        tiny_sd.unet, num_frame_tokens=2, max_frames=8, motion_num_attention_heads=2, projection_dim=16,
        motion_conditioning=True, motion_conditioning_dim=16, motion_path=True,
    )  # fmt: skip
    randomize_temporal_layers(adapter)
    _nudge(adapter.motion_conditioner, 1)
    _nudge(adapter.path_predictor, 2, std=0.3)
    return adapter


@pytest.fixture(scope="module")
def pipe(tiny_sd, adapter):
    parts = tiny_sd.components
    pipe = HarivoPipeline(
        parts["vae"], parts["text_encoder"], parts["tokenizer"], parts["unet"], adapter, DDIMScheduler()
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, prompt=RED, seed=0, **kwargs):
    call = {key: value for key, value in {**CALL, **kwargs}.items() if value is not DEFAULT}
    return pipe(prompt, **call, generator=torch.Generator().manual_seed(seed)).frames


# --- prompt travel ---


def test_interpolation_weights_hold_and_blend_between_keyframes():
    weights = prompt_travel.interpolation_weights([2, 6], 9)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(9))
    assert weights[:3, 0].tolist() == [1, 1, 1] and weights[6:, 1].tolist() == [1, 1, 1]
    assert weights[4].tolist() == [0.5, 0.5] and weights[3].tolist() == [0.75, 0.25]
    assert prompt_travel.interpolation_weights([0], 4).flatten().tolist() == [1, 1, 1, 1]


def test_per_frame_text_of_one_prompt_equals_the_video_text(tiny_sd, adapter, text_embeds):
    model = HarivoUNet.from_unet2d(tiny_sd.unet, adapter)
    sample = torch.randn(2, 4, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(sample, 10, text_embeds)
        per_frame = model(sample, 10, text_embeds[:, None].expand(-1, 5, -1, -1))
        travelled = text_embeds[:, None].repeat(1, 5, 1, 1)
        travelled[:, 3:] = text_embeds.flip(0)[:, None]
        changed = model(sample, 10, travelled)
    torch.testing.assert_close(per_frame, whole, atol=1e-5, rtol=0)
    assert (changed - whole).abs().amax() > 1e-3


def test_predicted_path_turns_where_the_text_does(adapter, text_embeds):
    predictor = adapter.path_predictor
    with torch.no_grad():
        whole = prompt_travel.predicted_path(predictor, text_embeds, 6)
        same = prompt_travel.predicted_path(predictor, text_embeds[:, None].expand(-1, 6, -1, -1), 6)
        first, second = (predictor(text_embeds[i : i + 1], 6) for i in (0, 1))
        travelled = prompt_travel.predicted_path(
            predictor,
            torch.cat([text_embeds[:1, None].expand(-1, 3, -1, -1), text_embeds[1:, None].expand(-1, 3, -1, -1)], 1),
            6,
        )
    torch.testing.assert_close(same, whole, atol=1e-5, rtol=1e-5)
    steps = travelled[0].diff(dim=0)
    torch.testing.assert_close(steps[:2], first[0].diff(dim=0)[:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steps[2:], second[0].diff(dim=0)[2:], atol=1e-5, rtol=1e-5)


def test_predicted_path_goes_on_at_its_mean_velocity_past_max_frames(adapter, text_embeds):
    with torch.no_grad():
        known = adapter.path_predictor(text_embeds, 8)
        longer = prompt_travel.predicted_path(adapter.path_predictor, text_embeds, 12)
    torch.testing.assert_close(longer[:, :8], known)
    torch.testing.assert_close(longer[:, 8:].diff(dim=1), (known[:, -1] / 7)[:, None].expand(-1, 3, -1))


def test_keyframe_prompts_of_one_text_give_the_plain_video(pipe):
    plain = run(pipe)
    torch.testing.assert_close(run(pipe, {0: RED, 4: RED}), plain, atol=2e-5, rtol=0)


def test_each_frame_follows_its_keyframe_prompt(pipe):
    call = {"prompt_travel_window": (0.0, 1.0), "motion_path_projection": 0.0}
    red, blue = run(pipe, RED, **call), run(pipe, BLUE, **call)
    travelled = run(pipe, {0: RED, 5: BLUE}, **call)

    def distance(a, b, frame):
        return (a[0, frame] - b[0, frame]).abs().mean()

    assert distance(travelled, red, 0) < distance(travelled, blue, 0)
    assert distance(travelled, blue, 5) < distance(travelled, red, 5)


def test_prompt_travel_window_shares_the_layout_early(pipe):
    shared = run(pipe, {0: RED, 5: BLUE})  # default: own text in the second half only
    own = run(pipe, {0: RED, 5: BLUE}, prompt_travel_window=(0.0, 1.0))
    assert not torch.equal(shared, own)
    assert torch.equal(run(pipe, {0: RED, 5: BLUE}, prompt_travel_window=(1.0, 1.0)),
                       run(pipe, {0: RED, 5: BLUE}, prompt_travel_window=(1.0, 1.0)))  # fmt: skip


@pytest.mark.parametrize(
    "prompt, match",
    [
        ({}, "empty dict"),
        ({0: RED, 6: BLUE}, "keyframe 6 is outside"),
        ({-1: RED}, "keyframe -1 is outside"),
        ({0.5: RED}, "integer frame indices"),
        ({0: RED, 2: 3}, "must be a string"),
    ],
)
def test_bad_keyframes_are_refused_in_one_line(pipe, prompt, match):
    with pytest.raises(ValueError, match=match) as error:
        run(pipe, prompt)
    assert "\n" not in str(error.value)


def test_keyframe_prompts_take_one_negative_prompt(pipe):
    with pytest.raises(ValueError, match="one `negative_prompt` string"):
        run(pipe, {0: RED}, negative_prompt=["a", "b"])
    assert run(pipe, {0: RED, 3: BLUE}, negative_prompt="blurry").shape == (1, 6, 3, 16, 16)


def test_per_frame_prompt_embeds_must_match_num_frames(pipe, text_embeds):
    with pytest.raises(ValueError, match="text for 4 frames but `num_frames` is 6"):
        pipe(prompt_embeds=text_embeds[:1, None].expand(-1, 4, -1, -1), **CALL, guidance_scale=1.0)
    out = pipe(prompt_embeds=text_embeds[:1, None].expand(-1, 6, -1, -1), **CALL, guidance_scale=1.0).frames
    assert out.shape == (1, 6, 3, 16, 16)


# --- video-to-video ---


@pytest.fixture(scope="module")
def video2video(pipe):
    return HarivoVideoToVideoPipeline.from_pipe(pipe)


@pytest.fixture(scope="module")
def clip():
    frames, trajectory = render_clip(
        ShapeScene.from_caption("a large red circle moving right on a plain black background"),
        8,
        np.random.default_rng(0),
        16,
    )
    return frames, trajectory


def test_video_to_video_runs_the_last_strength_share_of_the_steps(video2video, clip):
    seen = []

    def count(pipe, step, timestep, tensors):
        seen.append(int(timestep))
        return tensors

    for strength, steps in ((1.0, 4), (0.5, 2), (0.3, 1)):
        seen.clear()
        out = run(video2video, video=list(clip[0]), strength=strength, callback_on_step_end=count, num_frames=DEFAULT)
        assert len(seen) == steps and out.shape == (1, 8, 3, 16, 16)  # num_frames: the video's length
    assert seen == [int(t) for t in video2video.scheduler.timesteps[-1:]]  # the last step only


def test_free_init_with_an_input_video_runs_the_inputs_steps_again_from_the_result(video2video, clip):
    """FreeInit with an input [ours]: every iteration runs the input's share of the schedule, each restart re-noises
    the last result to the input's first step with noise whose low frequencies are the first iteration's."""
    seen = []

    def count(pipe, step, timestep, tensors):
        seen.append(int(timestep))
        return tensors

    plain = run(video2video, video=list(clip[0]), strength=0.5, num_frames=8)
    video2video.enable_free_init(num_iters=1)
    try:
        assert torch.equal(run(video2video, video=list(clip[0]), strength=0.5, num_frames=8), plain)
        video2video.enable_free_init(num_iters=2)
        again = run(video2video, video=list(clip[0]), strength=0.5, num_frames=8, callback_on_step_end=count)
        # with an all-pass filter the restart is the result noised to the start step with the first noise
        video2video.enable_free_init(
            num_iters=2, method="box", spatial_stop_frequency=1.0, temporal_stop_frequency=1.0
        )
        result, first = torch.randn(1, 4, 8, 8, 8), torch.randn(1, 4, 8, 8, 8)
        start = video2video.scheduler.timesteps[2:3]
        restart = video2video._free_init_restart(result, first, torch.Generator().manual_seed(1), start)
        expected = video2video.scheduler.add_noise(result, first / video2video.scheduler.init_noise_sigma, start)
    finally:
        video2video.disable_free_init()
    assert seen == [int(t) for t in video2video.scheduler.timesteps[-2:]] * 2  # the last 2 of 4 steps, twice
    assert not torch.equal(again, plain) and torch.isfinite(again).all()
    torch.testing.assert_close(restart, expected, atol=1e-5, rtol=0)


def test_video_to_video_starts_from_the_input_noised_to_the_strength_step(video2video, clip):
    frames = to_tensor_frames(clip[0])
    with torch.no_grad():
        target = video2video.encode_frames(frames)[None]
    starts = []
    original = video2video._initial_latents

    def record(latents, timesteps):  # the real hook, its input and output kept
        start = original(latents, timesteps)
        starts.append((latents, timesteps[0], start))
        return start

    video2video._initial_latents = record
    try:
        for strength in (1.0, 0.5, 0.25):
            run(video2video, video=frames, strength=strength, num_frames=8, output_type="latent")
    finally:
        del video2video._initial_latents
    distances = []
    for noise, timestep, start in starts:
        expected = video2video.scheduler.add_noise(target, noise, timestep.reshape(1))
        torch.testing.assert_close(start, expected)
        distances.append(float((start - target).abs().mean()))
    assert [int(t) for _, t, _ in starts] == [int(video2video.scheduler.timesteps[i]) for i in (0, 2, 3)]
    assert distances[0] > distances[1] > distances[2]


def test_video_to_video_uses_the_first_num_frames_frames(video2video, clip):
    out = run(video2video, video=list(clip[0]), num_frames=5, strength=0.5)
    assert out.shape == (1, 5, 3, 16, 16)


def test_video_motion_path_follows_the_moving_object_on_a_textured_background():
    scene = ShapeScene.from_caption("a large red circle moving down on a striped white background")
    frames, trajectory = render_clip(scene, 16, np.random.default_rng(1))
    travel = trajectory.centers[-1] - trajectory.centers[0]
    assert np.linalg.norm(travel) > 2 * trajectory.radius  # it moves further than its own size (see the docstring)
    path = video_motion_path(to_tensor_frames(frames))
    np.testing.assert_allclose(path.numpy(), trajectory.centers - trajectory.centers[0], atol=0.6)


def test_video_to_video_follows_the_input_path_on_request(video2video, clip):
    out = run(video2video, video=list(clip[0]), motion_path="video", strength=0.5)
    assert out.shape == (1, 6, 3, 16, 16)
    with pytest.raises(ValueError, match="'video'"):
        run(video2video, video=list(clip[0]), motion_path="prompt")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strength": 0.0}, r"`strength` must be in \(0, 1\]"),
        ({"strength": 1.5}, r"`strength` must be in \(0, 1\]"),
        ({"strength": float("nan")}, r"`strength` must be in \(0, 1\]"),
        ({"strength": 0.1}, "runs no step"),
        ({"num_frames": 9}, "has 8 frames but `num_frames` is 9"),
        ({"video": None}, "Pass `video`"),
        ({"video": None, "latents": torch.zeros(1, 4, 6, 4, 4)}, "`latents` here is the initial noise"),
        ({"video": [np.zeros((8, 16, 16, 3), np.uint8)] * 2}, "holds 2 videos for 1 prompts"),
        ({"video": np.zeros((8, 16, 24, 3), np.uint8)}, "another aspect ratio"),
        ({"video": "clip.mp4"}, "`video` must be PIL images"),
    ],
)
def test_bad_video_to_video_inputs_are_refused_in_one_line(video2video, clip, kwargs, match):
    kwargs = {"video": list(clip[0]), **kwargs}
    with pytest.raises(ValueError, match=match) as error:
        run(video2video, **kwargs)
    assert "\n" not in str(error.value)


def test_a_video_of_another_aspect_ratio_is_told_a_size_that_fits_it(video2video):
    factor = video2video.vae_scale_factor
    with pytest.raises(ValueError, match="another aspect ratio") as error:
        run(video2video, video=np.zeros((8, 12 * factor - 1, 16 * factor - 1, 3), np.uint8))
    height, width = 12 * factor, 16 * factor
    assert f"make the video {width}x{height} (height {height}, width {width})" in str(error.value)
    run(video2video, video=np.zeros((8, 12 * factor - 1, 16 * factor - 1, 3), np.uint8), height=height, width=width,
        num_inference_steps=2, num_frames=2)  # fmt: skip


def test_video_to_video_takes_one_video_per_prompt_as_diffusers_does(video2video, clip):
    """A list of videos (or a batch array) is one per prompt: each prompt's output starts from its own video."""
    frames = np.asarray(clip[0])
    other = frames[:, :, ::-1].copy()  # mirrored: the object travels the other way
    prompts = ["a large red circle moving right", "a large red circle moving left"]
    call = {"prompt": prompts, "strength": 0.5, "num_frames": 8, "num_videos_per_prompt": 2}
    encoded = []
    original = video2video._initial_latents

    def record(latents, timesteps):  # the real hook; the input latents it noised kept
        start = original(latents, timesteps)
        encoded.append(video2video._video.latents)
        return start

    video2video._initial_latents = record
    try:
        batch = run(video2video, video=[list(frames), other], **call)
    finally:
        del video2video._initial_latents
    assert batch.shape == (4, 8, 3, 16, 16)
    with torch.no_grad():
        expected = [video2video.encode_frames(to_tensor_frames(video)) for video in (frames, frames, other, other)]
    torch.testing.assert_close(encoded[0], torch.stack(expected))
    as_array = run(video2video, video=np.stack([frames, other]), **call)
    torch.testing.assert_close(as_array, batch)
    paths = run(video2video, video=[frames, other], **call, motion_path="video")
    assert paths.shape == (4, 8, 3, 16, 16)


def test_video_to_video_resizes_a_video_of_the_same_aspect_ratio(video2video, clip):
    bigger = torch.nn.functional.interpolate(to_tensor_frames(clip[0]), size=(32, 32))
    assert run(video2video, video=bigger, num_frames=DEFAULT).shape == (1, 8, 3, 16, 16)


# --- image-to-video ---


@pytest.fixture(scope="module")
def image2video(pipe):
    return HarivoImageToVideoPipeline.from_pipe(pipe)


@pytest.mark.parametrize("scheduler", [DDIMScheduler, EulerDiscreteScheduler])
def test_image_to_video_keeps_the_image_as_the_first_frame(image2video, clip, scheduler):
    image = to_tensor_frames(clip[0][:1])[0]
    image2video.scheduler = scheduler.from_config(image2video.scheduler.config)
    try:
        latents = run(image2video, image=image, output_type="latent")
    finally:
        image2video.scheduler = DDIMScheduler.from_config(image2video.scheduler.config)
    torch.testing.assert_close(latents[0, :, 0], image2video.encode_frames(image[None])[:, 0])
    assert (latents[0, :, 1:] - latents[0, :, :1]).abs().mean() > 1e-3  # the rest is generated


def test_image_to_video_starts_every_frame_from_the_image(image2video, clip):
    image = to_tensor_frames(clip[0][:1])[0]
    with torch.no_grad():
        target = image2video.encode_frames(image[None])[None]  # (1, C, 1, h, w)
    starts = []
    original = image2video._initial_latents

    def record(latents, timesteps):  # the real hook, its output kept
        starts.append(original(latents, timesteps))
        return starts[-1]

    image2video._initial_latents = record
    try:
        for strength in (1.0, 0.5):
            run(image2video, image=image, strength=strength, output_type="latent")
    finally:
        del image2video._initial_latents
    far, near = ((start[:, :, 1:] - target).abs().mean() for start in starts)
    assert near < far  # a lower strength starts the other frames nearer the image


def test_image_to_video_decodes_the_image_in_frame_zero(image2video, clip):
    image = clip[0][0]
    video = run(image2video, image=image, output_type="np")[0]
    with torch.no_grad():
        expected = image2video.decode_latents(image2video.encode_frames(to_tensor_frames(image[None]))[None], 1)
        expected = image2video.video_processor.postprocess_video(expected, output_type="np")[0, 0]
    np.testing.assert_allclose(video[0], expected, atol=1e-5)


@pytest.mark.parametrize(
    "image, match",
    [
        (None, "Pass `image`"),
        (np.zeros((2, 16, 16, 3), np.uint8), "must be one image, got 2"),
        (np.zeros((16, 32, 3), np.uint8), "another aspect ratio"),
        ({"strength": 0.0}, r"`strength` must be in \(0, 1\]"),
        ({"strength": 0.1}, "runs no step"),
    ],
)
def test_bad_images_are_refused_in_one_line(image2video, clip, image, match):
    kwargs = {"image": clip[0][0], **image} if isinstance(image, dict) else {"image": image}
    with pytest.raises(ValueError, match=match) as error:
        run(image2video, **kwargs)
    assert "\n" not in str(error.value)


def test_workflow_pipelines_leave_no_state_behind(pipe, video2video, image2video, clip):
    before = run(pipe)
    run(video2video, video=list(clip[0]), strength=0.5)
    run(image2video, image=clip[0][0])
    with pytest.raises(ValueError):
        run(image2video, image=np.zeros((16, 32, 3), np.uint8))
    assert video2video._video is None and image2video._video is None and image2video._first is None
    torch.testing.assert_close(run(pipe), before, atol=0, rtol=0)


# --- long videos (FreeNoise) ---


def test_free_noise_windows_cover_the_clip_and_end_at_its_last_frame():
    settings = FreeNoiseSettings(4, 2, "pyramid", "shuffle_context")
    assert [list(w) for w in settings.windows(9)] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [5, 6, 7, 8]]
    assert [list(w) for w in settings.windows(3)] == [[0, 1, 2]]
    assert settings.weights(4).tolist() == [1, 2, 2, 1] and settings.weights(5).tolist() == [1, 2, 3, 2, 1]
    assert FreeNoiseSettings(4, 2, "flat", "random").weights(3).tolist() == [1, 1, 1]


def test_longer_videos_than_the_temporal_layers_need_free_noise(pipe):
    with pytest.raises(ValueError, match="enable_free_noise"):
        run(pipe, num_frames=12)
    pipe.enable_free_noise(context_length=6, context_stride=3)
    try:
        assert pipe.free_noise_enabled
        assert run(pipe, num_frames=12).shape == (1, 12, 3, 16, 16)
        assert run(pipe, {0: RED, 11: BLUE}, num_frames=12, mg_scale=1.0).shape == (1, 12, 3, 16, 16)
    finally:
        pipe.disable_free_noise()
    assert not pipe.free_noise_enabled


def test_free_noise_leaves_a_clip_that_fits_one_window_unchanged(pipe):
    plain = run(pipe)
    pipe.enable_free_noise(context_length=6, context_stride=2)
    try:
        fitted = run(pipe)
    finally:
        pipe.disable_free_noise()
    assert torch.equal(fitted, plain)


def test_free_noise_repeats_earlier_noise_past_the_first_window(pipe):
    noise = torch.randn(1, 4, 10, 2, 2, generator=torch.Generator().manual_seed(0))
    pipe.enable_free_noise(context_length=4, context_stride=2, noise_type="shuffle_context")
    try:
        shuffled = pipe._reschedule_noise(noise, torch.Generator().manual_seed(1))
    finally:
        pipe.disable_free_noise()
    assert torch.equal(shuffled[:, :, :4], noise[:, :, :4])
    for start in range(4, 10, 2):  # each block is a permutation of the block four frames before
        block, source = shuffled[0, 0, start : start + 2].flatten(1), shuffled[0, 0, start - 4 : start - 2].flatten(1)
        assert sorted(block[:, 0].tolist()) == sorted(source[:, 0].tolist())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"context_length": 9}, "from 1 to 8"),
        ({"context_length": 0}, "from 1 to 8"),
        ({"context_stride": 0}, "from 1 to `context_length`"),
        ({"context_length": 4, "context_stride": 5}, "from 1 to `context_length`"),
        ({"weighting_scheme": "sawtooth"}, "weighting_scheme"),
        ({"noise_type": "shuffle"}, "noise_type"),
    ],
)
def test_bad_free_noise_options_are_refused(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe.enable_free_noise(**{"context_length": 8, **kwargs})
    assert not pipe.free_noise_enabled


# --- FreeInit ---


def test_free_init_of_one_iteration_is_plain_sampling(pipe):
    plain = run(pipe)
    pipe.enable_free_init(num_iters=1)
    try:
        assert pipe.free_init_enabled and torch.equal(run(pipe), plain)
    finally:
        pipe.disable_free_init()
    assert not pipe.free_init_enabled


def test_free_init_samples_again_from_the_result_and_fast_sampling_grows_the_steps(pipe):
    plain = run(pipe)
    steps = []
    pipe.enable_free_init(num_iters=2, use_fast_sampling=True)
    try:
        again = run(pipe, callback_on_step_end=lambda p, i, t, tensors: steps.append(i) or tensors)
        pipe.enable_free_init(num_iters=2)
        slow = run(pipe)
    finally:
        pipe.disable_free_init()
    assert steps == [0, 1, 0, 1, 2, 3]  # 2 of 4 steps, then all 4
    assert not torch.equal(again, plain) and not torch.equal(slow, plain) and torch.isfinite(slow).all()


def test_free_init_keeps_the_low_frequencies_of_the_diffused_result(pipe):
    settings = FreeInitSettings(2, False, "butterworth", 4, 0.25, 0.25)
    low = settings.low_pass((8, 16, 16), torch.device("cpu"))
    assert low[0, 0, 0] == 1 and abs(float(low[1, 0, 0]) - 0.5) < 1e-6  # 1 at DC, 1/2 at the stop (1/8 cycles)
    assert float(low.amin()) < 1e-3
    box = FreeInitSettings(2, False, "box", 4, 0.5, 0.25).low_pass((8, 8, 8), torch.device("cpu"))
    assert box[1, 2, 2] == 1 and box[2, 0, 0] == 0 and box[0, 3, 0] == 0
    zero_snr = DDIMScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    original, pipe.scheduler = pipe.scheduler, zero_snr
    pipe.enable_free_init(num_iters=2, method="box", spatial_stop_frequency=1.0, temporal_stop_frequency=1.0)
    try:  # everything passes, and at a zero-terminal-SNR last step the diffused result is the first noise itself
        first = torch.randn(1, 4, 6, 8, 8, generator=torch.Generator().manual_seed(0))
        restart = pipe._free_init_restart(torch.randn(1, 4, 6, 8, 8), first, torch.Generator().manual_seed(1))
    finally:
        pipe.scheduler = original
        pipe.disable_free_init()
    torch.testing.assert_close(restart, first, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_iters": 0}, "num_iters"),
        ({"method": "sinc"}, "method"),
        ({"order": 0}, "order"),
        ({"spatial_stop_frequency": 0.0}, "spatial_stop_frequency"),
        ({"temporal_stop_frequency": float("nan")}, "temporal_stop_frequency"),
    ],
)
def test_bad_free_init_options_are_refused(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe.enable_free_init(**kwargs)
    assert not pipe.free_init_enabled


def test_free_init_with_an_input_runs_and_its_fast_sampling_is_refused(video2video, image2video, clip):
    for runner, given in ((video2video, {"video": list(clip[0])}), (image2video, {"image": clip[0][0]})):
        runner.enable_free_init(num_iters=2, use_fast_sampling=True)
        try:
            with pytest.raises(ValueError, match="use_fast_sampling=False"):
                run(runner, **given)
            runner.enable_free_init(num_iters=2)
            assert torch.isfinite(run(runner, **given, strength=0.5)).all()
        finally:
            runner.disable_free_init()


# --- IP-Adapter ---


@pytest.fixture
def ip_pipe(tiny_sd, adapter, tmp_path):
    """A fresh pipeline (the IP-Adapter changes its U-Net's processors) with a tiny IP-Adapter loaded from a folder."""
    from tests.helpers import save_tiny_ip_adapter

    parts = tiny_sd.components
    pipe = HarivoPipeline(
        parts["vae"], parts["text_encoder"], parts["tokenizer"], parts["unet"], adapter, DDIMScheduler()
    )
    pipe.set_progress_bar_config(disable=True)
    plain = run(pipe)
    weight_name = save_tiny_ip_adapter(pipe.unet, tmp_path)
    pipe.load_ip_adapter(str(tmp_path), subfolder="", weight_name=weight_name, image_encoder_folder="image_encoder")
    return pipe, plain


def test_ip_adapter_image_steers_the_video_and_scale_zero_is_without_it(ip_pipe):
    pipe, plain = ip_pipe
    image = np.full((32, 32, 3), 200, np.uint8)
    steered = run(pipe, ip_adapter_image=image)  # the subject-mask capture runs too (the adapter has a path)
    assert steered.shape == plain.shape and (steered - plain).abs().amax() > 1e-3
    embeds = pipe.prepare_ip_adapter_image_embeds(image, None, torch.device("cpu"), 1, True)
    torch.testing.assert_close(run(pipe, ip_adapter_image_embeds=embeds), steered)
    pipe.set_ip_adapter_scale(0.0)
    torch.testing.assert_close(run(pipe, ip_adapter_image=image), plain, atol=1e-4, rtol=0)
    pipe.enable_free_noise(context_length=4, context_stride=2)  # windows pass the image embeddings on
    try:
        assert run(pipe, ip_adapter_image=image, num_frames=7).shape == (1, 7, 3, 16, 16)
    finally:
        pipe.disable_free_noise()
    pipe.unload_ip_adapter()
    torch.testing.assert_close(run(pipe), plain, atol=1e-4, rtol=0)


def test_ip_adapter_image_without_an_ip_adapter_says_what_to_load(pipe):
    with pytest.raises(ValueError, match="load_ip_adapter") as error:
        run(pipe, ip_adapter_image=np.zeros((32, 32, 3), np.uint8))
    assert "\n" not in str(error.value)


def test_every_workflow_runs_with_mg_sampling_and_the_motion_path(pipe, video2video, image2video, clip):
    call = {"mg_scale": 5.0, "mg_energy": "motion_path", "num_frames": 4}
    video = list(clip[0][:4])
    outputs = [
        run(pipe, {0: RED, 3: BLUE}, **call),
        run(video2video, video=video, strength=0.5, motion_path="video", **call),
        run(image2video, image=clip[0][0], **call),
    ]
    assert all(out.shape == (1, 4, 3, 16, 16) and torch.isfinite(out).all() for out in outputs)
