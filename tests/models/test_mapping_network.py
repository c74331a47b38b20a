import pytest
import torch

from harivo.models import NoiseMappingNetwork


def test_identity_at_initialisation():
    network = NoiseMappingNetwork(in_channels=4, hidden_channels=8)
    noise = torch.randn(2, 4, 5, 6, 6)
    torch.testing.assert_close(network(noise), noise, atol=1e-5, rtol=0)


def test_identity_without_renormalisation_is_exact():
    network = NoiseMappingNetwork(in_channels=4, hidden_channels=8, renormalize=False)
    noise = torch.randn(1, 4, 3, 4, 4)
    assert torch.equal(network(noise), noise)


def test_trained_mapping_correlates_frames_and_keeps_per_frame_statistics():
    network = NoiseMappingNetwork(in_channels=4, hidden_channels=8)
    with torch.no_grad():  # positive weights: each output sums a window of neighbouring frames
        for conv in network.layers[::2]:
            conv.weight.copy_(torch.rand(conv.weight.shape) * 0.1)
    noise = torch.randn(2, 4, 6, 8, 8)
    mapped = network(noise)
    assert not torch.allclose(mapped, noise)
    dims = (1, 3, 4)
    torch.testing.assert_close(mapped.mean(dims), noise.mean(dims), atol=1e-4, rtol=0)
    torch.testing.assert_close(mapped.std(dims), noise.std(dims), atol=1e-4, rtol=1e-4)

    # frames become correlated: the 3-D convolution mixes neighbouring frames
    def adjacent_correlation(x):
        a, b = x[:, :, :-1].flatten(), x[:, :, 1:].flatten()
        return torch.corrcoef(torch.stack([a, b]))[0, 1]

    assert adjacent_correlation(mapped) > adjacent_correlation(noise) + 0.05


def test_rejects_bad_shapes_and_settings():
    network = NoiseMappingNetwork(in_channels=4)
    with pytest.raises(ValueError, match="expects noise of shape"):
        network(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="at least 2"):
        NoiseMappingNetwork(num_layers=1)
    with pytest.raises(ValueError, match="odd"):
        NoiseMappingNetwork(kernel_size=2)


def test_save_load_round_trip(tmp_path):
    network = NoiseMappingNetwork(in_channels=4, hidden_channels=8)
    with torch.no_grad():
        network.layers[-1].weight.normal_()
    network.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = NoiseMappingNetwork.from_pretrained(tmp_path)
    noise = torch.randn(1, 4, 3, 4, 4)
    assert torch.equal(loaded(noise), network(noise))


@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_frame_mixing_keeps_unit_variance_and_gives_the_asked_correlation(rho):
    network = NoiseMappingNetwork(in_channels=4, hidden_channels=8, frame_correlation=rho)
    noise = torch.randn(64, 4, 6, 8, 8, generator=torch.Generator().manual_seed(0))
    mapped = network(noise)
    frames = mapped.transpose(1, 2).flatten(2)  # (B, F, C*h*w)
    assert frames.var().item() == pytest.approx(1.0, abs=0.03)
    correlation = (frames[:, 0] * frames[:, 3]).mean().item()
    assert correlation == pytest.approx(rho, abs=0.03)


def test_frame_mixing_is_off_at_zero_and_checks_its_range():
    noise = torch.randn(2, 4, 5, 8, 8)
    assert torch.equal(NoiseMappingNetwork(in_channels=4, hidden_channels=8, renormalize=False)(noise), noise)
    single_frame = torch.randn(2, 4, 1, 8, 8)
    mixing = NoiseMappingNetwork(in_channels=4, hidden_channels=8, frame_correlation=0.5, renormalize=False)
    assert torch.allclose(mixing(single_frame), single_frame, atol=1e-6)
    with pytest.raises(ValueError, match="frame_correlation"):
        NoiseMappingNetwork(frame_correlation=1.0)
