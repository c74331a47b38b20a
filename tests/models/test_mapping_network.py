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
