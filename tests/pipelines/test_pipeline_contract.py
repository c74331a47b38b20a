"""diffusers' pipeline contract, on every harivo pipeline that mirrors one of diffusers' AnimateDiff pipelines.

diffusers tests its pipelines with shared mixins (`PipelineTesterMixin`, `PipelineFromPipeTesterMixin`,
`SDFunctionTesterMixin`, `IPAdapterTesterMixin`); its test files are not installed with the package, so this file
states the same contract in harivo's words and runs it on each task pipeline with the tiny components: text-to-video
(`AnimateDiffPipeline`), ControlNet (`AnimateDiffControlNetPipeline`), video-to-video
(`AnimateDiffVideoToVideoPipeline`) and image-to-video (for SparseCtrl's `AnimateDiffSparseControlNetPipeline`).

Left out, with the reason:
- the mixins' expected pixel slices: they are diffusers' dummy weights' numbers, not a contract;
- `test_attention_slicing_forward_pass`: diffusers skips it for its AnimateDiff pipelines too;
- CPU offload, float16 inference and device moves: they need a GPU (`benchmarks/gpu_check.py` runs them);
- samplers whose per-step noise bypasses a trained mapping network in the FreeInit scheduler sweep: refused (a deliberate
  policy, `harivo.schedulers.check_scheduler`), as are pickle weights without `allow_pickle`;
- the call-signature difference of video-to-video (`timesteps`, `sigmas`, `enforce_inference_steps`) and of
  image-to-video against SparseCtrl: listed in `test_diffusers_conformance.NOT_TAKEN`.
"""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler

from harivo.models import HarivoAdapter
from harivo.pipelines import (
    HarivoControlNetPipeline,
    HarivoImageToVideoPipeline,
    HarivoPipeline,
    HarivoVideoToVideoPipeline,
)
from harivo.utils.tiny import tiny_stable_diffusion
from tests.helpers import randomize_temporal_layers, save_tiny_ip_adapter

TASKS = {
    "text2video": HarivoPipeline,
    "controlnet": HarivoControlNetPipeline,
    "video2video": HarivoVideoToVideoPipeline,
    "image2video": HarivoImageToVideoPipeline,
}
SIZE, FRAMES = 16, 2


def make_pipe(task: str):
    """A pipeline of fresh tiny components (nothing shared between tests: some change their components)."""
    from tests.pipelines.test_pipeline_controlnet import make_controlnet

    torch.manual_seed(0)
    sd = tiny_stable_diffusion()
    adapter = randomize_temporal_layers(HarivoAdapter.from_unet(sd.unet, max_frames=8, motion_num_attention_heads=2))
    parts = {key: sd.components[key] for key in ("vae", "text_encoder", "tokenizer", "unet")}
    extra = {"controlnet": make_controlnet(sd.unet)} if task == "controlnet" else {}
    pipe = TASKS[task](**parts, adapter=adapter, scheduler=DDIMScheduler(), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def task_inputs(task: str, seed: int = 0, **kwargs) -> dict:
    """The dummy call of each task, as diffusers' `get_dummy_inputs`."""
    rng = np.random.default_rng(seed)
    frames = [PIL.Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(FRAMES)]
    inputs = {
        "prompt": "a small red circle moving left", "num_frames": FRAMES, "height": SIZE, "width": SIZE,
        "num_inference_steps": 2, "guidance_scale": 7.5, "output_type": "pt",
        "generator": torch.Generator().manual_seed(seed),
    }  # fmt: skip
    inputs.update(
        {
            "controlnet": {"conditioning_frames": frames},
            "video2video": {"video": frames, "strength": 1.0},
            "image2video": {"image": frames[0], "strength": 1.0},
        }.get(task, {})
    )
    return {**inputs, **kwargs}


def frames_of(output) -> torch.Tensor:
    return output.frames if hasattr(output, "frames") else output[0]


@pytest.fixture(params=list(TASKS))
def task(request):
    return request.param


def test_dict_and_tuple_outputs_are_the_same(task):
    pipe = make_pipe(task)
    as_dict = pipe(**task_inputs(task)).frames
    as_tuple = pipe(**task_inputs(task), return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict)


def test_a_batch_gives_each_video_what_it_gives_alone(task):
    """`test_inference_batch_single_identical`: the first video of a batch of two prompts (the second 100 words
    long), with one generator each, is the video of the first prompt alone."""
    pipe = make_pipe(task)
    alone = pipe(**task_inputs(task)).frames
    inputs = task_inputs(task)
    batch = pipe(
        **{**inputs, "prompt": [inputs["prompt"], "very long " * 100],
           "generator": [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]},
    ).frames  # fmt: skip
    assert batch.shape[0] == 2
    assert (batch[0] - alone[0]).abs().max() < 1e-4


@pytest.mark.parametrize("prompts, per_prompt", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_videos_per_prompt_give_the_batch_size(task, prompts, per_prompt):
    pipe = make_pipe(task)
    inputs = task_inputs(task, num_videos_per_prompt=per_prompt)
    inputs["prompt"] = [inputs["prompt"]] * prompts if prompts > 1 else inputs["prompt"]
    assert pipe(**inputs).frames.shape == (prompts * per_prompt, FRAMES, 3, SIZE, SIZE)


def test_the_callback_gets_the_tensors_it_asks_for_and_may_change_them(task):
    pipe = make_pipe(task)
    assert set(pipe._callback_tensor_inputs) >= {"latents", "prompt_embeds"}
    seen = []

    def callback(pipeline, step, timestep, tensors):
        seen.append(sorted(tensors))
        is_last = step == pipeline.num_timesteps - 1
        return {"latents": torch.zeros_like(tensors["latents"])} if is_last else tensors

    for asked in (["latents"], list(pipe._callback_tensor_inputs)):
        seen.clear()
        output = pipe(**task_inputs(task), callback_on_step_end=callback, callback_on_step_end_tensor_inputs=asked)
        assert seen and all(names == sorted(asked) for names in seen)
        assert torch.isfinite(output.frames).all()
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(**task_inputs(task), callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])


def test_a_callback_can_change_the_guidance_scale(task):
    """`test_callback_cfg`: the loop reads `pipe._guidance_scale` at every step."""
    pipe = make_pipe(task)

    def raise_guidance(pipeline, step, timestep, tensors):
        pipeline._guidance_scale += 1.0
        return tensors

    inputs = task_inputs(task)
    pipe(**inputs, callback_on_step_end=raise_guidance)
    assert pipe.guidance_scale == inputs["guidance_scale"] + pipe.num_timesteps


def test_components_rebuild_the_same_pipeline(task):
    """`test_components_function`: `pipe.components` holds every `__init__` component and builds an equal pipeline."""
    import inspect

    pipe = make_pipe(task)
    expected = set(inspect.signature(type(pipe).__init__).parameters) - {"self"}
    assert set(pipe.components) == expected
    again = type(pipe)(**pipe.components)
    again.set_progress_bar_config(disable=True)
    torch.testing.assert_close(again(**task_inputs(task)).frames, pipe(**task_inputs(task)).frames)


def test_save_and_load_give_the_same_videos(task, tmp_path):
    """`test_save_load_local` and `test_save_load_optional_components` (the IP-Adapter's, `None` here)."""
    pipe = make_pipe(task)
    expected = pipe(**task_inputs(task)).frames
    pipe.save_pretrained(tmp_path / "saved")
    loaded = type(pipe).from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.feature_extractor is None and loaded.image_encoder is None
    torch.testing.assert_close(loaded(**task_inputs(task)).frames, expected, atol=1e-4, rtol=1e-4)


def test_from_pipe_gives_the_same_videos_both_ways(task):
    """`PipelineFromPipeTesterMixin`: a text-to-video pipeline made from the task's, and the task's made back from it,
    share the components and give what a fresh pipeline gives."""
    pipe = make_pipe(task)
    expected = pipe(**task_inputs(task)).frames
    text = HarivoPipeline.from_pipe(pipe)
    extra = {"controlnet": pipe.controlnet} if task == "controlnet" else {}
    back = TASKS[task].from_pipe(text, **extra)
    back.set_progress_bar_config(disable=True)
    assert back.unet is pipe.unet and back.adapter is pipe.adapter
    torch.testing.assert_close(back(**task_inputs(task)).frames, expected)
    fresh = make_pipe("text2video")
    torch.testing.assert_close(text(**task_inputs("text2video")).frames, fresh(**task_inputs("text2video")).frames)


def test_to_dtype_moves_every_component(task):
    pipe = make_pipe(task)
    assert {c.dtype for c in pipe.components.values() if hasattr(c, "dtype")} == {torch.float32}
    pipe.to(dtype=torch.float16)
    assert {c.dtype for c in pipe.components.values() if hasattr(c, "dtype")} == {torch.float16}


def test_encode_prompt_works_in_isolation(task):
    """The embeddings of `encode_prompt` passed in give the video of the prompt."""
    pipe = make_pipe(task)
    inputs = task_inputs(task)
    positive, negative = pipe.encode_prompt(inputs["prompt"], torch.device("cpu"), 1, True, None)
    embedded = pipe(**{**inputs, "prompt": None}, prompt_embeds=positive, negative_prompt_embeds=negative).frames
    torch.testing.assert_close(embedded, pipe(**task_inputs(task)).frames)


def test_vae_slicing_and_fused_projections_keep_the_video_and_freeu_changes_it(task):
    """`SDFunctionTesterMixin`: VAE slicing (`pipe.vae.enable_slicing()`, diffusers' current form) and fused QKV
    projections give the same frames; FreeU changes them and disabling it restores them."""
    pipe = make_pipe(task)
    plain = pipe(**task_inputs(task)).frames
    pipe.vae.enable_slicing()
    torch.testing.assert_close(pipe(**task_inputs(task)).frames, plain, atol=1e-4, rtol=1e-4)
    pipe.vae.disable_slicing()
    pipe.fuse_qkv_projections()
    torch.testing.assert_close(pipe(**task_inputs(task)).frames, plain, atol=1e-4, rtol=1e-4)
    pipe.unfuse_qkv_projections()
    torch.testing.assert_close(pipe(**task_inputs(task)).frames, plain, atol=1e-4, rtol=1e-4)
    pipe.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
    assert (pipe(**task_inputs(task)).frames - plain).abs().max() > 1e-4
    pipe.disable_freeu()
    torch.testing.assert_close(pipe(**task_inputs(task)).frames, plain)


def test_free_init_changes_the_video_and_disabling_restores_it(task):
    pipe = make_pipe(task)
    plain = pipe(**task_inputs(task)).frames
    with_input = task in ("video2video", "image2video")  # restarts where the input starts, at a fixed step count
    if with_input:
        pipe.enable_free_init(num_iters=2, use_fast_sampling=True)
        with pytest.raises(ValueError, match="fast sampling changes the number of steps"):
            pipe(**task_inputs(task))
    pipe.enable_free_init(num_iters=2, use_fast_sampling=not with_input, method="butterworth", order=4)
    assert (pipe(**task_inputs(task)).frames - plain).abs().sum() > 1e-2
    pipe.disable_free_init()
    torch.testing.assert_close(pipe(**task_inputs(task)).frames, plain)


@pytest.mark.parametrize("scheduler_cls", [DPMSolverMultistepScheduler, LCMScheduler])
def test_free_init_with_schedulers(scheduler_cls):
    """diffusers' `test_free_init_with_schedulers`: FreeInit changes the video under other samplers too (LCM's fresh
    noise between steps goes through the mapping network)."""
    pipe = make_pipe("text2video")
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    plain = pipe(**task_inputs("text2video")).frames
    pipe.enable_free_init(num_iters=2, use_fast_sampling=False)
    free_init = pipe(**task_inputs("text2video")).frames
    assert torch.isfinite(free_init).all() and (free_init - plain).abs().sum() > 1e-2


def test_ip_adapter_at_scale_zero_is_without_it_and_steers_otherwise(task, tmp_path):
    """`IPAdapterTesterMixin`: one IP-Adapter at scale 0 gives the plain video; at scale 1 another one."""
    pipe = make_pipe(task)
    plain = pipe(**task_inputs(task)).frames
    weight_name = save_tiny_ip_adapter(pipe.unet, tmp_path)
    pipe.load_ip_adapter(str(tmp_path), subfolder="", weight_name=weight_name, image_encoder_folder="image_encoder")
    image = np.full((32, 32, 3), 200, np.uint8)
    pipe.set_ip_adapter_scale(0.0)
    torch.testing.assert_close(pipe(**task_inputs(task), ip_adapter_image=image).frames, plain, atol=1e-4, rtol=1e-4)
    pipe.set_ip_adapter_scale(1.0)
    assert (pipe(**task_inputs(task), ip_adapter_image=image).frames - plain).abs().max() > 1e-3
