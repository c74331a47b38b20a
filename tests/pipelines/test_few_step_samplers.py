"""Few-step samplers of distilled models (issue: few steps): LCM and TCD with HARIVO's noise mapping network kept
correct, and diffusers' trailing timestep spacing (AnimateDiff-Lightning's Euler)."""

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, LCMScheduler, TCDScheduler

from harivo.schedulers import make_scheduler, renoised_step
from tests.pipelines.test_pipeline_reliability import conditioned_adapter, make_pipe, video


@pytest.mark.parametrize(("cls", "eta"), [(LCMScheduler, 0.0), (TCDScheduler, 0.0), (TCDScheduler, 0.3)])
def test_renoised_step_is_diffusers_step_given_the_same_noise(cls, eta):
    """Every step of a 4-step schedule: harivo's step with noise N equals diffusers' own step that drew N."""
    ours, theirs = cls(), cls()
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(4)
    torch.manual_seed(0)
    sample = torch.randn(1, 4, 2, 8, 8)
    for t in theirs.timesteps:
        model_output = torch.randn_like(sample)
        kwargs = {"eta": eta} if cls is TCDScheduler else {}
        expected = theirs.step(model_output, t, sample, generator=torch.Generator().manual_seed(7), **kwargs)

        def noise(shape=sample.shape):
            return torch.randn(shape, generator=torch.Generator().manual_seed(7))

        got = renoised_step(ours, model_output, t, sample, noise, eta)
        torch.testing.assert_close(got, expected.prev_sample)
        sample = got
    assert ours.step_index == theirs.step_index == 4


def test_lcm_and_tcd_run_with_a_trained_mapping_network_whose_noise_they_use(tiny_sd):
    """No longer refused: the fresh noise between steps goes through the mapping network like z_T's."""
    pipe = make_pipe(tiny_sd, conditioned_adapter(tiny_sd))
    mapped = []
    original = pipe.adapter.mapping_network.forward

    def recording(noise, *args, **kwargs):
        mapped.append(noise.shape)
        return original(noise, *args, **kwargs)

    pipe.adapter.mapping_network.forward = recording
    for name, eta, calls in (("lcm", 0.0, 2), ("tcd", 0.3, 2), ("tcd", 0.0, 1)):
        pipe.scheduler = make_scheduler(name, DDIMScheduler.from_config(pipe.scheduler.config))
        mapped.clear()
        first = video(pipe, eta=eta)  # 2 steps
        assert torch.isfinite(first).all()
        assert len(mapped) == calls  # z_T, then (noising samplers) the fresh noise of each step but the last
        assert torch.equal(first, video(pipe, eta=eta))  # seeded: reproducible


def test_trailing_spacing_and_its_errors():
    base = DDIMScheduler(beta_schedule="scaled_linear")
    euler = make_scheduler("euler", base, timestep_spacing="trailing")
    assert isinstance(euler, EulerDiscreteScheduler)
    euler.set_timesteps(4)
    assert int(euler.timesteps[0]) == 999  # trailing starts at the last training step, as Lightning models need
    assert make_scheduler("lcm", base).config.timestep_spacing == base.config.timestep_spacing
    with pytest.raises(ValueError, match="Unknown timestep spacing 'sideways'; choose one of: leading, linspace"):
        make_scheduler("euler", base, timestep_spacing="sideways")
