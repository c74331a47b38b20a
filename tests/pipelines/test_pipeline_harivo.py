"""Pipeline layer, on tiny real components loaded from disk through the real loading code."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AnimateDiffPipeline

from harivo import HarivoLoadError, IncompatibleAdapterError
from harivo.models import HarivoAdapter
from harivo.pipelines import HarivoPipeline, mg_sampling
from harivo.schedulers import SCHEDULERS, make_scheduler
from harivo.utils.tiny import tiny_unet
from tests.helpers import randomize_temporal_layers

CALL = {
    "prompt": "a small red circle moving left",
    "num_frames": 4,
    "height": 16,
    "width": 16,
    "num_inference_steps": 2,
}


@pytest.fixture(scope="module")
def adapter_dir(tiny_sd, tmp_path_factory):
    torch.manual_seed(0)
    adapter = HarivoAdapter.from_unet(tiny_sd.unet, num_frame_tokens=2, max_frames=8, motion_num_attention_heads=2)
    path = tmp_path_factory.mktemp("adapters") / "harivo"
    randomize_temporal_layers(adapter).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(base_dir, adapter_dir):
    pipe = HarivoPipeline.from_pretrained(base_dir, adapter=adapter_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed=0, **kwargs):
    return pipe(**{**CALL, **kwargs}, generator=torch.Generator().manual_seed(seed)).frames


def test_output_types_and_shapes(pipe):
    as_np = run(pipe, output_type="np")
    assert as_np.shape == (1, 4, 16, 16, 3) and as_np.min() >= 0 and as_np.max() <= 1
    as_pt = run(pipe, output_type="pt")
    assert as_pt.shape == (1, 4, 3, 16, 16)
    np.testing.assert_allclose(as_pt.permute(0, 1, 3, 4, 2).numpy(), as_np, atol=1e-6)
    as_pil = run(pipe)
    assert len(as_pil) == 1 and len(as_pil[0]) == 4 and isinstance(as_pil[0][0], PIL.Image.Image)
    assert run(pipe, output_type="latent").shape == (1, 4, 4, 8, 8)
    batch = run(pipe, prompt=["a red circle", "a blue square"], num_videos_per_prompt=2, output_type="pt")
    assert batch.shape == (4, 4, 3, 16, 16)


def test_deterministic_for_a_fixed_seed(pipe):
    assert torch.equal(run(pipe, output_type="pt"), run(pipe, output_type="pt"))
    assert not torch.equal(run(pipe, output_type="pt"), run(pipe, seed=1, output_type="pt"))


def test_mg_off_equals_animatediff_and_mg_on_changes_the_video(tiny_sd, make_adapter):
    adapter = randomize_temporal_layers(make_adapter(num_frame_tokens=0))  # identity mapping, no frame tokens
    components = {k: getattr(tiny_sd, k) for k in ("vae", "text_encoder", "tokenizer", "scheduler")}
    harivo = HarivoPipeline(**components, unet=tiny_sd.unet, adapter=adapter)
    animatediff = AnimateDiffPipeline(**components, unet=harivo.unet, motion_adapter=None)
    for p in (harivo, animatediff):
        p.set_progress_bar_config(disable=True)
    reference = run(animatediff, output_type="pt")
    plain = run(harivo, output_type="pt", mg_scale=0.0)
    torch.testing.assert_close(plain, reference, atol=1e-5, rtol=0)
    assert torch.equal(run(harivo, output_type="pt", mg_scale=40.0, mg_window=(0.0, 0.0)), plain)  # empty window
    guided = run(harivo, output_type="pt", mg_scale=40.0, mg_window=(0.0, 1.0))
    assert (guided - plain).abs().max() > 1e-3
    stronger = run(harivo, output_type="pt", mg_scale=150.0, mg_window=(0.0, 1.0))
    assert (stronger - plain).abs().mean() > (guided - plain).abs().mean()


def test_mg_reduces_the_temporal_energy_of_the_first_prediction(pipe):
    """One guided step moves the latents down the frame-difference energy, as section 6 intends."""

    def first_step_latents(**kwargs):
        captured = {}

        def keep(pipeline, step, timestep, tensors):
            captured.setdefault("latents", tensors["latents"])
            return {}

        run(pipe, output_type="latent", num_inference_steps=4, callback_on_step_end=keep, **kwargs)
        return captured["latents"]

    def roughness(latents):
        return (latents[:, :, 1:] - latents[:, :, :-1]).pow(2).mean().item()

    plain = first_step_latents(mg_scale=0.0)
    guided = first_step_latents(mg_scale=100.0, mg_window=(0.0, 1.0))
    assert roughness(guided) < roughness(plain)


def test_x0_gradient_is_the_full_gradient_of_a_constant_model_output_and_runs_no_backward(pipe, monkeypatch):
    """`mg_gradient="x0"` is MG's gradient with the model output held constant; it never needs autograd through the
    U-Net, and guides the video down the same energy."""
    grad_modes = []
    hook = pipe.video_unet.register_forward_pre_hook(lambda module, args: grad_modes.append(torch.is_grad_enabled()))
    try:
        plain = run(pipe, output_type="latent", num_inference_steps=4)
        full = run(pipe, output_type="latent", num_inference_steps=4, mg_scale=100.0, mg_window=(0, 1),
                   mg_gradient="full")  # fmt: skip
        assert any(grad_modes)
        grad_modes.clear()
        cheap = run(pipe, output_type="latent", num_inference_steps=4, mg_scale=100.0, mg_window=(0, 1))
        assert grad_modes and not any(grad_modes)  # the default
    finally:
        hook.remove()

    def roughness(latents):
        return (latents[:, :, 1:] - latents[:, :, :-1]).pow(2).mean().item()

    assert roughness(cheap) < roughness(plain) and not torch.equal(cheap, full)
    # With a model output that does not depend on z_t the two gradients are the same direction: equal videos
    latents = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    constant = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(pipe, "_predict_noise", lambda *args, **kwargs: constant.clone())
    pipe.scheduler.set_timesteps(4)
    t = pipe.scheduler.timesteps[1]
    guided = {
        gradient: pipe._mg_guided_noise(latents, t, None, 100.0, "frame_difference", None, gradient=gradient)
        for gradient in ("full", "x0")
    }
    torch.testing.assert_close(guided["x0"], guided["full"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(guided["x0"], constant)


@pytest.mark.parametrize("energy", ["frame_difference", "attention"])
def test_mg_energies_run(pipe, energy):
    assert run(pipe, output_type="pt", mg_scale=40.0, mg_energy=energy).shape == (1, 4, 3, 16, 16)


@pytest.mark.parametrize("name", ["euler", "dpm-solver++", "euler-ancestral", "unipc"])
def test_any_diffusers_scheduler(pipe, name):
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(name, original)
    try:
        video = run(pipe, output_type="pt", mg_scale=20.0, mg_window=(0.0, 1.0))
    finally:
        pipe.scheduler = original
    assert video.shape == (1, 4, 3, 16, 16) and torch.isfinite(video).all()


def test_guidance_rescale_matches_the_text_outputs_scale(pipe):
    def first_output(rescale):
        outputs = []

        def keep(pipeline, step, timestep, tensors):
            if step == 0:
                text_embeds = tensors["prompt_embeds"]
                latents = tensors["latents"]
                with torch.no_grad():
                    outputs.append(pipeline._predict_noise(latents, timestep, text_embeds, None))
                    text = pipeline.video_unet(latents, timestep, text_embeds.chunk(2)[1])
                outputs.append(text)
            return {}

        run(
            pipe, guidance_scale=7.5, guidance_rescale=rescale, callback_on_step_end=keep, output_type="latent",
            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
        )  # fmt: skip
        return outputs

    guided, text = first_output(1.0)
    torch.testing.assert_close(guided.std(), text.std(), rtol=1e-4, atol=1e-6)
    plain, _ = first_output(0.0)
    assert plain.std() > 1.1 * text.std()  # guidance inflates the output: what the rescale undoes


def test_callback_can_replace_latents(pipe):
    seen = []

    def callback(pipeline, step, timestep, tensors):
        seen.append(step)
        return {"latents": torch.zeros_like(tensors["latents"])}

    latents = run(pipe, output_type="latent", callback_on_step_end=callback)
    assert seen == [0, 1] and torch.count_nonzero(latents) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 15}, "multiple of the VAE's down-sampling factor 2"),
        ({"width": 0}, "positive multiple"),
        ({"num_frames": 9}, "from 1 to 8"),
        ({"num_inference_steps": 0}, "positive integer"),
        ({"num_inference_steps": -3}, "positive integer"),
        ({"mg_scale": -1.0}, "mg_scale"),
        ({"mg_window": (0.6, 0.2)}, "mg_window"),
        ({"mg_energy": "flow"}, "mg_energy"),
        ({"mg_gradient": "half"}, "mg_gradient"),
        ({"mg_gradient": "x0", "mg_energy": "attention"}, "needs an energy of the clean latents"),
        ({"output_type": "gif"}, "output_type"),
        ({"prompt": None}, "exactly one of"),
        ({"latents": torch.randn(1, 4, 3, 8, 8)}, "latents"),
        ({"guidance_rescale": 1.5}, "guidance_rescale"),
        ({"motion_path_projection": 1.5}, "motion_path_projection"),
        ({"motion_path_window": (0.5, 0.2)}, "motion_path_window"),
    ],
)
def test_bad_inputs_raise_clear_errors(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(pipe, **kwargs)


def test_unknown_scheduler_is_refused(pipe):
    with pytest.raises(ValueError, match="Unknown scheduler 'karras-magic'"):
        make_scheduler("karras-magic", pipe.scheduler)
    assert "ddim" in SCHEDULERS


def test_loading_errors(base_dir, adapter_dir, tmp_path, tiny_sd):
    with pytest.raises(ValueError, match="holds no HARIVO adapter"):
        HarivoPipeline.from_pretrained(base_dir)
    with pytest.raises(HarivoLoadError, match="does not exist"):
        HarivoPipeline.from_pretrained(base_dir, adapter=tmp_path / "missing")
    with pytest.raises(HarivoLoadError, match="Could not load the base model"):
        HarivoPipeline.from_pretrained(tmp_path, adapter=adapter_dir)
    other = HarivoAdapter.from_unet(tiny_unet(cross_attention_dim=48), num_frame_tokens=2, max_frames=8)
    with pytest.raises(IncompatibleAdapterError, match="another architecture"):
        HarivoPipeline.from_pretrained(base_dir, adapter=other)


def test_pickle_base_model_needs_opt_in(tiny_sd, adapter_dir, tmp_path):
    tiny_sd.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(HarivoLoadError, match="allow_pickle"):
        HarivoPipeline.from_pretrained(tmp_path / "pickled", adapter=adapter_dir)
    pipe = HarivoPipeline.from_pretrained(tmp_path / "pickled", adapter=adapter_dir, allow_pickle=True)
    pipe.set_progress_bar_config(disable=True)
    assert run(pipe, output_type="pt").shape == (1, 4, 3, 16, 16)


def test_saved_pipeline_reloads_identically(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    reloaded = HarivoPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert torch.equal(run(reloaded, output_type="pt"), run(pipe, output_type="pt"))


def test_path_predictor_moves_the_initial_noise_along_the_prompts_path(tiny_sd, make_adapter):
    adapter = randomize_temporal_layers(make_adapter(noise_warping=True, noise_warp_correlation=1.0))
    components = {k: getattr(tiny_sd, k) for k in ("vae", "text_encoder", "tokenizer", "scheduler")}
    pipe = HarivoPipeline(**components, unet=tiny_sd.unet, adapter=adapter)
    pipe.set_progress_bar_config(disable=True)
    # z_T follows the path: frame f is frame 0 moved f latent pixels right (the fresh mapping network is the identity)
    path = torch.stack([torch.arange(4.0), torch.zeros(4)], dim=-1)
    latents = pipe.prepare_latents(
        1, 4, 4, 16, 16, torch.float32, "cpu", torch.Generator().manual_seed(0), None, path[None]
    )
    for frame in range(1, 4):
        torch.testing.assert_close(latents[:, :, frame, :, frame:], latents[:, :, 0, :, : 8 - frame])
    # without a path argument, the predictor's prediction for the (positive) prompt is the path
    prompt_embeds, _ = pipe.encode_prompt(CALL["prompt"], "cpu", 1, False)
    predicted = adapter.path_predictor(prompt_embeds, 4)
    assert predicted.abs().max() > 0.1
    default = run(pipe, output_type="pt")
    torch.testing.assert_close(run(pipe, output_type="pt", motion_path=predicted[0]), default)
    assert (run(pipe, output_type="pt", motion_path=path) - default).abs().max() > 1e-3
    for kwargs, message in (
        ({"motion_path": torch.zeros(3, 2)}, r"must have shape \(4, 2\)"),
        ({"motion_path": torch.full((4, 2), float("nan"))}, "finite"),
        ({"motion_path": path, "latents": torch.randn(1, 4, 4, 8, 8), "motion_path_projection": 0}, "not be used"),
    ):
        with pytest.raises(ValueError, match=message):
            run(pipe, **kwargs)


def test_motion_path_projection_makes_content_travel_the_path(pipe):
    path = torch.stack([torch.arange(4.0), torch.zeros(4)], dim=-1)  # one latent pixel right per frame
    free = run(pipe, output_type="latent")
    projected = run(
        pipe, output_type="latent", motion_path=path, motion_path_window=(0.0, 1.0), motion_path_mask="frame"
    )
    # the default strength with a path is 1: the result travels along the path almost rigidly
    energy = mg_sampling.motion_path_energy
    assert energy(projected, path[None]) < 0.1 * energy(free, path[None])
    half = run(
        pipe,
        output_type="latent",
        motion_path=path,
        motion_path_window=(0.0, 1.0),
        motion_path_projection=0.5,
        motion_path_mask="frame",
    )
    assert energy(projected, path[None]) < energy(half, path[None]) < energy(free, path[None])
    # an empty window is no projection
    assert torch.equal(run(pipe, output_type="latent", motion_path=path, motion_path_window=(0.0, 0.0)), free)


def test_motion_path_mg_guides_along_the_given_path(pipe):
    with pytest.raises(ValueError, match="would not be used"):  # no predictor, no projection, no path energy
        run(pipe, motion_path=torch.zeros(4, 2), motion_path_projection=0.0)
    for kwargs in ({"mg_scale": 40.0, "mg_energy": "motion_path"}, {"motion_path_projection": 1.0}):
        with pytest.raises(ValueError, match="need a path"):
            run(pipe, **kwargs)
    guided = {"mg_scale": 40.0, "mg_window": (0.0, 1.0), "output_type": "pt", "motion_path_projection": 0.0}
    still = run(pipe, **guided, mg_energy="motion_path", motion_path=torch.zeros(4, 2))
    # along a zero path the energy is the frame difference
    torch.testing.assert_close(still, run(pipe, **guided, mg_energy="frame_difference"), atol=1e-5, rtol=0)
    path = torch.stack([torch.arange(4.0), torch.zeros(4)], dim=-1)
    assert (run(pipe, **guided, mg_energy="motion_path", motion_path=path) - still).abs().max() > 1e-3


def _cross_attention_processors(pipe):
    return {name: type(m.processor) for name, m in pipe.video_unet.base_unet.named_modules() if name.endswith("attn2")}


def test_subject_projection_moves_the_subject_and_leaves_no_processor_behind(pipe):
    path = torch.stack([torch.arange(4.0), torch.zeros(4)], dim=-1)
    processors = _cross_attention_processors(pipe)
    projected = {"output_type": "latent", "motion_path": path, "motion_path_window": (0.0, 1.0)}
    subject = run(pipe, **projected)  # the default with a text prompt
    torch.testing.assert_close(run(pipe, **projected, motion_path_mask="subject"), subject)
    torch.testing.assert_close(run(pipe, **projected, motion_subject="small red circle"), subject)
    assert (run(pipe, **projected, motion_subject="circle") - subject).abs().max() > 1e-4
    whole = run(pipe, **projected, motion_path_mask="frame")
    free = run(pipe, output_type="latent")
    assert (subject - whole).abs().max() > 1e-3 and (subject - free).abs().max() > 1e-3
    assert torch.equal(run(pipe, **projected), subject)  # a second call is the first one again
    assert _cross_attention_processors(pipe) == processors

    def fail(*args):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        run(pipe, **projected, callback_on_step_end=fail)
    assert _cross_attention_processors(pipe) == processors  # also after an error inside the loop
    batch = run(pipe, prompt=["a red circle", "a blue square"], num_videos_per_prompt=2, **projected,
                motion_subject=["circle", "blue square"])  # fmt: skip
    assert batch.shape == (4, 4, 4, 8, 8)


def test_the_scene_of_the_prompt_counts_against_the_subject_mask(pipe):
    path = torch.stack([torch.arange(4.0), torch.zeros(4)], dim=-1)
    projected = {"output_type": "latent", "motion_path": path, "motion_path_window": (0.0, 1.0)}
    prompt = "a small red circle moving left on a plain background"
    contrasted = run(pipe, prompt=prompt, **projected)
    torch.testing.assert_close(run(pipe, prompt=prompt, **projected, motion_scene="plain background"), contrasted)
    subject_only = run(pipe, prompt=prompt, **projected, motion_scene="")
    assert (contrasted - subject_only).abs().max() > 1e-4
    travel = run(pipe, prompt={0: prompt, 3: "a small red circle moving left on a blue background"}, **projected,
                 motion_scene="background")  # fmt: skip
    assert travel.shape == (1, 4, 4, 8, 8)


def test_the_core_window_changes_only_its_steps(pipe):
    path = torch.stack([torch.arange(4.0), torch.zeros(4)], dim=-1)
    projected = {"output_type": "latent", "motion_path": path, "motion_path_window": (0.0, 1.0)}
    prompt = "a small red circle moving left on a striped background"
    union = run(pipe, prompt=prompt, **projected)
    torch.testing.assert_close(run(pipe, prompt=prompt, **projected, motion_path_core_window=(0.5, 0.5)), union)
    core = run(pipe, prompt=prompt, **projected, motion_path_core_window=(0.0, 1.0))
    assert (core - union).abs().max() > 1e-4
    # the whole-frame projection has no subject, so nothing to keep near: the window changes nothing
    whole = {**projected, "motion_path_mask": "frame"}
    torch.testing.assert_close(run(pipe, **whole, motion_path_core_window=(0.0, 1.0)), run(pipe, **whole))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"motion_path_core_window": (0.5, 0.2)}, "motion_path_core_window"),
        ({"motion_path_mask": "object"}, "'subject' or 'frame'"),
        (
            {
                "motion_path_mask": "objects",
                "motion_path_projection": 0.0,
                "mg_energy": "motion_path",
                "mg_scale": 1.0,
            },
            "'subject' or 'frame'",
        ),
        ({"motion_path_mask": "Subject", "motion_path_window": (0.0, 0.0)}, "'subject' or 'frame'"),
        ({"motion_subject": "zebra"}, "not among the first"),
        ({"motion_subject": ["red", "circle"]}, "one each"),
        ({"motion_scene": "zebra"}, "motion scene 'zebra' is not among"),
        ({"motion_scene": ["", ""]}, "`motion_scene` has 2 entries"),
        ({"prompt": {0: "a red circle", 2: "a blue circle"}, "motion_scene": [""]}, "`motion_scene` as one string"),
        ({"prompt": None, "prompt_embeds": torch.zeros(1, 77, 32), "motion_path_mask": "subject"}, "as text"),
        ({"temporal_window": (0.6, 0.2)}, "temporal_window"),
    ],
)
def test_subject_and_temporal_window_inputs_fail_in_one_line(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        run(pipe, motion_path=torch.zeros(4, 2), **kwargs)
    assert "\n" not in str(error.value)


def test_temporal_window_runs_the_image_model_alone_outside_it(pipe):
    default = run(pipe, output_type="latent")
    torch.testing.assert_close(run(pipe, output_type="latent", temporal_window=(0.0, 1.0)), default)
    with pipe.video_unet.temporal_layers_disabled():
        frame_by_frame = run(pipe, output_type="latent")
    torch.testing.assert_close(run(pipe, output_type="latent", temporal_window=(0.0, 0.0)), frame_by_frame)
    half = run(pipe, output_type="latent", temporal_window=(0.0, 0.5))
    assert (half - default).abs().max() > 1e-4 and (half - frame_by_frame).abs().max() > 1e-4
    assert torch.equal(run(pipe, output_type="latent"), default)  # the temporal layers are back after the call


def test_the_adapters_sampling_defaults_fill_what_a_call_leaves_unset(pipe):
    path = {"motion_path": torch.ones(4, 2), "output_type": "latent"}
    default = run(pipe, **path)
    recommended = run(pipe, **path, temporal_window=(0.0, 0.5), motion_path_window=(0.0, 0.8))
    pipe.adapter.sampling_defaults = {"temporal_window": (0.0, 0.5), "motion_path_window": (0.0, 0.8)}
    try:
        torch.testing.assert_close(run(pipe, **path), recommended)
        torch.testing.assert_close(run(pipe, **path, temporal_window=(0.0, 1.0), motion_path_window=(0, 0.5)), default)
    finally:
        pipe.adapter.sampling_defaults = {}
