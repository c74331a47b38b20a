"""Perturbed-attention guidance with diffusers' names: off at 0, a third branch otherwise, processors restored."""

import pytest
import torch

from tests.pipelines.test_pipeline_reliability import conditioned_adapter, make_pipe, video


@pytest.fixture
def pipe(tiny_sd):
    return make_pipe(tiny_sd, conditioned_adapter(tiny_sd))


def test_pag_guides_away_from_the_perturbed_branch_and_leaves_the_processors(pipe):
    processors = {name: type(module.processor) for name, module in pipe.video_unet._spatial_self_attention.items()}
    plain = video(pipe, steps=3)
    torch.testing.assert_close(video(pipe, steps=3, pag_scale=0.0), plain)
    guided = video(pipe, steps=3, pag_scale=3.0)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain)
    # the adaptive scale brings it to 0 at every step here: the plain video (to the batch's rounding)
    torch.testing.assert_close(
        video(pipe, steps=3, pag_scale=3.0, pag_adaptive_scale=1.0), plain, atol=1e-5, rtol=1e-4
    )
    assert {n: type(m.processor) for n, m in pipe.video_unet._spatial_self_attention.items()} == processors
    pipe.set_pag_applied_layers(["up_blocks.1"])
    assert not torch.allclose(video(pipe, steps=3, pag_scale=3.0), guided)  # other layers perturbed: another video
    assert torch.isfinite(video(pipe, steps=3, pag_scale=3.0, guidance_scale=1.0)).all()  # without CFG: two branches
    assert torch.isfinite(video(pipe, steps=3, pag_scale=3.0, mg_scale=10.0)).all()  # with MG


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            lambda p: p.set_pag_applied_layers(["sideways"]),
            "`pag_applied_layers`: 'sideways' matches no self-attention",
        ),
        (lambda p: p.set_pag_applied_layers(["("]), "`pag_applied_layers`: '(' is not a regular expression"),
        (lambda p: video(p, steps=3, pag_scale=-1.0), "`pag_scale` must be a number >= 0 (0: off), got -1.0."),
        (
            lambda p: video(p, steps=3, pag_scale=1.0, pag_adaptive_scale=float("inf")),
            "`pag_adaptive_scale` must be a number",
        ),
    ],
)
def test_bad_pag_settings_are_one_line(pipe, action, message):
    with pytest.raises(ValueError) as error:
        action(pipe)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_pipelines_that_do_not_take_pag_yet_say_so():
    from tests.pipelines.test_pipeline_contract import make_pipe as task_pipe
    from tests.pipelines.test_pipeline_contract import task_inputs

    with pytest.raises(ValueError, match="`pag_scale`: HarivoControlNetPipeline does not take PAG yet"):
        task_pipe("controlnet")(**task_inputs("controlnet"), pag_scale=1.0)
    video2video = task_pipe("video2video")
    assert torch.isfinite(video2video(**task_inputs("video2video"), pag_scale=1.0).frames).all()
