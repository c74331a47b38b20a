import pytest
import torch

from harivo.models import FrameTokenGenerator


def test_shapes_and_zero_tokens_at_initialisation():
    generator = FrameTokenGenerator(cross_attention_dim=32, num_tokens=3, max_frames=8)
    text = torch.randn(2, 77, 32)
    tokens = generator(text, num_frames=5)
    assert tokens.shape == (2 * 5, 3, 32)
    assert torch.count_nonzero(tokens) == 0


def test_tokens_differ_across_frames_and_prompts_once_trained():
    generator = FrameTokenGenerator(cross_attention_dim=32, num_tokens=2, max_frames=8)
    with torch.no_grad():
        generator.mlp[-1].weight.normal_()
    text = torch.randn(2, 77, 32)
    tokens = generator(text, num_frames=4).unflatten(0, (2, 4))  # (B, F, K, D)
    assert not torch.allclose(tokens[:, 0], tokens[:, 1])  # frame-wise
    assert not torch.allclose(tokens[0], tokens[1])  # prompt-dependent


def test_switched_off_has_no_weights_and_no_tokens():
    generator = FrameTokenGenerator(cross_attention_dim=32, num_tokens=0)
    assert not generator.enabled
    assert len(list(generator.parameters())) == 0
    assert generator(torch.randn(2, 7, 32), num_frames=3).shape == (6, 0, 32)


def test_rejects_too_many_frames_and_negative_k():
    generator = FrameTokenGenerator(cross_attention_dim=32, num_tokens=2, max_frames=4)
    with pytest.raises(ValueError, match="at most 4 frames"):
        generator(torch.randn(1, 7, 32), num_frames=5)
    with pytest.raises(ValueError, match="num_tokens"):
        FrameTokenGenerator(num_tokens=-1)
