"""The few-step distillation stage on the embedded model: the teacher's recorded paths, the regression target, a
training run with resume, its LoRA under `harivo generate --fast`, and one-line refusals."""

import json

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors import safe_open
from safetensors.torch import load_file

from harivo import HarivoPipeline
from harivo.defaults import DEFAULT_MODEL_DIR
from harivo.generation import fast_variant, generate, load_model
from harivo.request import GenerateRequest
from harivo.schedulers import make_scheduler
from harivo.training import Trainer, load_config
from harivo.training.stages.distill import implied_clean_latents, predicted_clean_latents

CONFIG = "configs/shapes/distill.yaml"
PROMPT = "a large red circle moving right on a plain black background"


def config(tmp_path, *extra):
    return load_config(CONFIG, [
        f"output_dir={tmp_path}", f"distill.base_model={DEFAULT_MODEL_DIR / 'base'}",
        f"distill.adapter={DEFAULT_MODEL_DIR / 'adapter'}", "max_steps=2", "batch_size=2", "checkpoint_every=1",
        "log_every=1", "num_validation_samples=0", "distill.num_trajectories=2", "distill.trajectory_batch=2",
        "distill.num_frames=4", "distill.lora_rank=2", "distill.teacher_steps=4", "distill.num_inference_steps=2",
        f"distill.prompts=[{PROMPT}]", *extra,
    ])  # fmt: skip


def train(cfg, resume=False):
    try:
        return Trainer(cfg, resume=resume).train()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill")
    return folder, train(config(folder))


@pytest.mark.parametrize(("alpha_t", "alpha_next"), [(0.0, 0.3), (0.2, 0.6), (0.7, 1.0)])
def test_the_target_is_the_clean_latents_of_the_ddim_step_between_the_teachers_latents(alpha_t, alpha_next):
    x0, noise = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 3, 8, 8)
    levels = torch.tensor(alpha_t), torch.tensor(alpha_next)
    x_t = levels[0].sqrt() * x0 + (1 - levels[0]).sqrt() * noise
    x_next = levels[1].sqrt() * x0 + (1 - levels[1]).sqrt() * noise  # deterministic DDIM: the same noise
    assert torch.allclose(implied_clean_latents(x_t, x_next, *levels), x0, atol=1e-4)
    v = levels[0].sqrt() * noise - (1 - levels[0]).sqrt() * x0
    assert torch.allclose(predicted_clean_latents(v, x_t, levels[0], "v_prediction"), x0, atol=1e-5)


def test_a_teacher_path_is_the_teachers_own_sampling_seeded_by_index(distilled):
    folder, _ = distilled
    with safe_open(folder / "trajectories" / "00001.safetensors", "pt") as file:
        states, prompt = file.get_tensor("states"), file.metadata()["prompt"]
    assert prompt == PROMPT and states.shape[0] == 3  # the start, then the end of each of the 2 student steps
    pipe = HarivoPipeline.from_pretrained(DEFAULT_MODEL_DIR / "base", adapter=DEFAULT_MODEL_DIR / "adapter")
    pipe.scheduler = make_scheduler("dpm-solver++", pipe.scheduler, "trailing")
    pipe.set_progress_bar_config(disable=True)
    latents = pipe(
        PROMPT, num_frames=4, num_inference_steps=4, guidance_rescale=0.7, generator=torch.Generator().manual_seed(1),
        output_type="latent",
    ).frames[0]  # fmt: skip
    assert torch.allclose(states[-1], latents, atol=1e-3)  # sampled alone here, in a batch of 2 there


def test_distillation_resumes_exactly_and_its_lora_is_what_generate_fast_loads(distilled, tmp_path):
    folder, final = distilled
    assert sorted(p.name for p in final.iterdir()) == ["harivo_fast.json", "pytorch_lora_weights.safetensors"]
    assert json.loads((final / "harivo_fast.json").read_text())["num_inference_steps"] == [2]
    again = tmp_path / "again"
    train(config(again, "max_steps=1"))
    train(config(again), resume=True)
    once, twice = (load_file(path / "final" / "pytorch_lora_weights.safetensors") for path in (folder, again))
    assert once.keys() == twice.keys() and all(torch.allclose(once[k], twice[k], atol=1e-6) for k in once)
    assert any("motion_modules" in key for key in once) and any("attentions" in key for key in once)

    request = GenerateRequest(PROMPT, fast=str(final), num_frames=4, output=str(tmp_path / "fast.gif"))
    settings = json.loads((generate(request).parent / "fast.gif.json").read_text())["resolved"]
    assert settings["steps"] == 2 and settings["guidance_scale"] == 1.0 and settings["scheduler"] == "DDIMScheduler"

    def video(pipe):
        pipe.scheduler = make_scheduler("ddim", pipe.scheduler, "trailing")
        pipe.set_progress_bar_config(disable=True)
        return pipe(PROMPT, num_frames=4, num_inference_steps=2, guidance_scale=1.0, output_type="np",
                    generator=torch.Generator().manual_seed(0)).frames[0]  # fmt: skip

    pipe = HarivoPipeline.from_pretrained(DEFAULT_MODEL_DIR / "base", adapter=DEFAULT_MODEL_DIR / "adapter")
    plain = video(pipe)
    pipe.load_lora_weights(final, adapter_name="fast")
    loaded = video(pipe)
    assert not np.allclose(loaded, plain, atol=1e-3)  # trained: the LoRA moves the output
    # generate --fast merges the LoRA into the weights: the same video, to float rounding
    assert np.allclose(video(load_model(request, torch.float32)), loaded, atol=1e-4)


def test_fast_refuses_what_its_model_was_not_distilled_for_in_one_line(distilled, tmp_path):
    _, final = distilled
    with pytest.raises(ValueError, match=r"distilled for 2 steps; use --steps 2 or leave --steps out"):
        fast_variant(GenerateRequest(PROMPT, fast=str(final), steps=4))
    with pytest.raises(ValueError, match=r"leave --scheduler out"):
        GenerateRequest(PROMPT, fast=str(final), scheduler="lcm")
    with pytest.raises(ValueError, match=r"without classifier-free guidance .* leave --guidance-scale out"):
        GenerateRequest(PROMPT, fast=str(final), guidance_scale=5.0)
    with pytest.raises(ValueError, match=r"not a few-step variant \(no harivo_fast.json in it\)"):
        fast_variant(GenerateRequest(PROMPT, fast=str(tmp_path)))
    with pytest.raises(ValueError, match=r"has no few-step variant .* pass --fast OUTPUT_DIR/final"):
        fast_variant(GenerateRequest(PROMPT, fast="adapter", adapter=str(tmp_path)))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distill.teacher_steps=6", r"teacher_steps \(6\) must be a multiple of distill.num_inference_steps \(4\)"),
        ("distill.teacher_scheduler=fast", r"distill.teacher_scheduler must be one of ddim, .*, not 'fast'"),
        ("distill.prompts_file=nowhere.txt", r"distill.prompts_file 'nowhere.txt' does not exist"),
        ("distill.lora_rank=0", r"distill.lora_rank must be at least 1, not 0"),
    ],
)
def test_bad_distill_settings_are_one_line_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(CONFIG, [override])


def test_a_few_step_variant_of_another_base_model_is_refused_in_one_line(distilled, base_dir, make_adapter, tmp_path):
    _, final = distilled
    make_adapter().save_pretrained(tmp_path / "adapter")
    request = GenerateRequest(PROMPT, base_model=str(base_dir), adapter=str(tmp_path / "adapter"), fast=str(final))
    with pytest.raises(ValueError, match=r"^--fast .*: The LoRA .* was made for a base model of another architecture"):
        load_model(request, torch.float32)
