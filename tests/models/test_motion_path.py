"""Motion paths [ours]: measured on clips, predicted from the prompt, and the warped noise (exact N(0, 1) frames)."""

import json

import numpy as np
import pytest
import torch

from harivo import HarivoLoss, LossWeights
from harivo.data.shapes import ShapeScene, render_clip, to_model_range
from harivo.models import HarivoAdapter, HarivoUNet, MotionPathPredictor, estimate_displacements, warped_noise
from tests.helpers import randomize_temporal_layers

SHAPE = (2, 4, 6, 8, 8)


def _path(step_x: float, step_y: float, num_frames: int = 6) -> torch.Tensor:
    frames = torch.arange(num_frames, dtype=torch.float32)
    return torch.stack([frames * step_x, frames * step_y], dim=-1)  # (F, 2)


def test_each_frame_is_standard_normal_for_any_path_and_correlation():
    generator = torch.Generator().manual_seed(0)
    for correlation in (0.0, 0.6, 1.0):
        noise = warped_noise((64, 4, 6, 8, 8), _path(-0.75, 0.5), correlation=correlation, generator=generator)
        per_frame = noise.transpose(1, 2).flatten(2)  # (B, F, C*h*w)
        assert per_frame.mean().abs() < 0.02
        torch.testing.assert_close(per_frame.std(dim=(0, 2)), torch.ones(6), atol=0.03, rtol=0)
        # neighbouring latent pixels stay independent: the sum-pooling keeps the noise white
        neighbours = torch.corrcoef(torch.stack([noise[..., :, :-1].flatten(), noise[..., :, 1:].flatten()]))[0, 1]
        assert neighbours.abs() < 0.02


def test_frames_are_the_first_frame_translated_along_the_path():
    generator = torch.Generator().manual_seed(1)
    noise = warped_noise(SHAPE, _path(-1.0, 1.0), correlation=1.0, generator=generator)
    for frame in range(1, 6):  # moved `frame` pixels left and `frame` pixels down
        torch.testing.assert_close(noise[:, :, frame, frame:, : 8 - frame], noise[:, :, 0, : 8 - frame, frame:])
    # a sub-pixel path: two quarter-pixel steps share half of each latent pixel's canvas, correlation 1/2
    noise = warped_noise((256, 4, 3, 8, 8), _path(0.25, 0.0, 3), correlation=1.0, generator=generator)
    pairs = torch.stack([noise[:, :, 0, :, :-1].flatten(), noise[:, :, 2, :, :-1].flatten()])
    assert abs(torch.corrcoef(pairs)[0, 1].item() - 0.5) < 0.03
    # the fresh share lowers the correlation of aligned pixels to `correlation`
    noise = warped_noise((256, 4, 2, 8, 8), torch.zeros(2, 2), correlation=0.6, generator=generator)
    aligned = torch.corrcoef(torch.stack([noise[:, :, 0].flatten(), noise[:, :, 1].flatten()]))[0, 1]
    assert abs(aligned.item() - 0.6) < 0.03


def test_warped_noise_is_reproducible_and_per_video():
    path = torch.stack([_path(0.5, 0.0), _path(0.0, -0.5)])  # (B, F, 2): one path per video

    def draw(seeds):
        return warped_noise(SHAPE, path, generator=[torch.Generator().manual_seed(s) for s in seeds])

    assert torch.equal(draw([0, 1]), draw([0, 1]))
    assert torch.equal(draw([0, 1])[1], draw([2, 1])[1])  # video 1 depends only on its own generator
    assert not torch.equal(draw([0, 1])[0], draw([2, 1])[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"displacements": torch.zeros(5, 2)}, "must have shape"),
        ({"correlation": 1.5}, "correlation"),
        ({"upscale": 0}, "upscale"),
        ({"generator": [torch.Generator()]}, "one per video"),
    ],
)
def test_warped_noise_errors(kwargs, message):
    arguments = {"displacements": torch.zeros(6, 2), **kwargs}
    with pytest.raises(ValueError, match=message):
        warped_noise(SHAPE, **arguments)


def test_estimated_displacements_match_a_rendered_trajectory():
    rng = np.random.default_rng(0)
    for caption in (
        "a large red circle moving left on a plain black background",
        "a small green square moving down on a plain white background",
        "a small blue triangle moving up on a plain grey background",
    ):
        frames, trajectory = render_clip(ShapeScene.from_caption(caption), 12, rng)
        measured = estimate_displacements(to_model_range(frames)[None])[0]  # (F, 2)
        truth = torch.as_tensor(trajectory.centers - trajectory.centers[0], dtype=torch.float32)
        torch.testing.assert_close(measured, truth, atol=0.5, rtol=0)
    # further than half the frame: a large object that crosses most of it (shifts are known only modulo the frame)
    scene = ShapeScene.from_caption("a large red triangle moving right on a plain black background")
    frames, trajectory = render_clip(scene, 16, np.random.default_rng(4))
    travel = trajectory.centers[-1, 0] - trajectory.centers[0, 0]
    assert travel > 32
    measured = estimate_displacements(to_model_range(frames)[None])[0]
    assert abs(measured[-1, 0].item() - travel) < 0.5
    with pytest.raises(ValueError, match="batch, frames, channels"):
        estimate_displacements(torch.zeros(12, 3, 64, 64))


def test_fresh_predictor_predicts_no_motion_and_trains_to_a_path(text_embeds):
    torch.manual_seed(0)
    predictor = MotionPathPredictor(cross_attention_dim=text_embeds.shape[-1], hidden_dim=16, max_frames=8)
    assert torch.equal(predictor(text_embeds, 6), torch.zeros(2, 6, 2))
    target = torch.stack([_path(-0.5, 0.0), _path(0.0, -0.5)])  # "moving left", "moving up"
    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        loss = (predictor(text_embeds, 6) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    torch.testing.assert_close(predictor(text_embeds, 6), target, atol=0.05, rtol=0)
    assert torch.equal(predictor(text_embeds, 4)[:, 0], torch.zeros(2, 2))  # frame 0 at the origin
    with pytest.raises(ValueError, match="at most 8 frames"):
        predictor(text_embeds, 9)


@torch.no_grad()
def test_adapter_round_trip_and_settings(tiny_sd, make_adapter, tmp_path):
    adapter = randomize_temporal_layers(make_adapter(noise_warping=True, noise_warp_correlation=0.8))
    assert adapter.path_predictor.config.correlation == 0.8
    adapter.save_pretrained(tmp_path / "warped")
    manifest = json.loads((tmp_path / "warped" / "harivo_adapter.json").read_text())
    assert "path_predictor" in manifest["components"]
    loaded = HarivoAdapter.from_pretrained(tmp_path / "warped")
    text = torch.randn(2, 77, tiny_sd.unet.config.cross_attention_dim)
    assert torch.equal(loaded.path_predictor(text, 6), adapter.path_predictor(text, 6))
    assert loaded.path_predictor.config.correlation == 0.8 and loaded.path_predictor.config.warp_noise
    assert not make_adapter(motion_path=True).path_predictor.config.warp_noise  # a path, IID noise
    make_adapter().save_pretrained(tmp_path / "plain")
    assert HarivoAdapter.from_pretrained(tmp_path / "plain").path_predictor is None
    with pytest.raises(ValueError, match="noise_frame_correlation"):
        make_adapter(noise_warping=True, noise_frame_correlation=0.5)


def test_loss_trains_the_predictor_and_warps_only_when_asked(tiny_sd, make_adapter, text_embeds):
    model = HarivoUNet.from_unet2d(tiny_sd.unet, make_adapter(noise_warping=True))
    scheduler = tiny_sd.scheduler
    latents = torch.randn(2, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    path = torch.stack([_path(-1.0, 0.0, 4), _path(0.0, 1.0, 4)])
    loss_fn = HarivoLoss(LossWeights(diffusion=1.0, reg=0.0, trsa=0.0, dc=0.0, path=1.0))
    with pytest.raises(ValueError, match="displacements"):
        loss_fn(model, scheduler, latents, text_embeds, generator=torch.Generator().manual_seed(0))
    total, logs = loss_fn(model, scheduler, latents, text_embeds, torch.Generator().manual_seed(0), path)
    assert set(logs) == {"diffusion", "path", "total"}
    # a fresh predictor predicts no motion: L_path is the mean squared path
    assert logs["path"] == pytest.approx(path.pow(2).mean().item(), rel=1e-5)
    total.backward()
    assert model.adapter.path_predictor.proj_out.weight.grad.abs().sum() > 0
    # the noise follows the path: the same draws along another path give another loss
    _, still = loss_fn(
        model, scheduler, latents, text_embeds, torch.Generator().manual_seed(0), torch.zeros_like(path)
    )
    assert still["diffusion"] != pytest.approx(logs["diffusion"], rel=1e-4)
    # a predictor that does not warp: the noise does not depend on the path, L_path is still there
    model = HarivoUNet.from_unet2d(tiny_sd.unet, make_adapter(motion_path=True))
    _, along = loss_fn(model, scheduler, latents, text_embeds, torch.Generator().manual_seed(0), path)
    _, still = loss_fn(model, scheduler, latents, text_embeds, torch.Generator().manual_seed(0), 0 * path)
    assert along["diffusion"] == pytest.approx(still["diffusion"], rel=1e-6) and along["path"] > still["path"]
