"""Do the temporal layers help? Held-out denoising error of the video model against the frozen T2I frame by frame.

A trained adapter must predict a noisy clip's clean latents better than the image model does alone, above all at
high noise, where the layout (and so temporal consistency) is decided. This measures it on any clips (Shapes or
real), with no detector: the x0 error ratio `video / image` per timestep (below 1: the temporal layers help).
"""

from collections.abc import Sequence

import numpy as np
import torch

from ..models.motion_path import estimate_displacements
from ..pipelines.mg_sampling import original_from_output
from ..utils.text import encode_captions


@torch.no_grad()
def denoising_errors(
    pipe,
    clips: torch.Tensor,
    captions: Sequence[str],
    timesteps: Sequence[int] = (100, 400, 700, 900, 980),
    repeats: int = 1,
    seed: int = 0,
    batch_size: int = 4,
) -> dict[int, dict[str, float]]:
    """
    Mean squared error of the predicted clean latents, video model vs frozen T2I, on the same noisy clips.

    Args:
        pipe ([`HarivoPipeline`]): Gives the VAE, text encoder, tokenizer, video U-Net and noise schedule.
        clips (`torch.Tensor`): `(N, F, 3, H, W)` pixels in `[-1, 1]`.
        captions (`Sequence[str]`): One caption per clip.
        timesteps (`Sequence[int]`): Training timesteps to measure at.
        repeats (`int`): Noise draws per clip and timestep.
        seed (`int`): Seed of the noise (the same noise for both models).
        batch_size (`int`): Clips per forward.

    Returns:
        `dict[int, dict[str, float]]`: per timestep, `video` and `image` x0 errors and their `ratio`.
    """
    if len(clips) != len(captions):
        raise ValueError(f"Got {len(clips)} clips but {len(captions)} captions.")
    model = pipe.video_unet
    alphas_cumprod = pipe.scheduler.alphas_cumprod
    prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
    generator = torch.Generator().manual_seed(seed)
    device, dtype = pipe.vae.device, pipe.vae.dtype
    sums = {int(t): np.zeros(2) for t in timesteps}
    for start in range(0, len(clips), batch_size):
        pixels = clips[start : start + batch_size]
        num_clips, num_frames = pixels.shape[:2]
        latents = pipe.vae.encode(pixels.flatten(0, 1).to(device, dtype)).latent_dist.mean
        latents = (latents.float() * pipe.vae.config.scaling_factor).unflatten(0, (num_clips, num_frames))
        latents = latents.transpose(1, 2)  # (N, C, F, h, w)
        text = encode_captions(pipe.tokenizer, pipe.text_encoder, list(captions[start : start + batch_size]))
        predictor = model.adapter.path_predictor
        warps = predictor is not None and predictor.config.warp_noise
        path = estimate_displacements(pixels) / pipe.vae_scale_factor if warps else None  # noise as in training
        for t in sums:
            alpha = alphas_cumprod[t].to(device)
            for _ in range(repeats):
                if warps:
                    noise = predictor.noise(latents.shape, path, generator)
                else:
                    noise = torch.randn(latents.shape, generator=generator)
                noise = model.map_noise(noise.to(device))
                noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
                step = torch.full((num_clips,), t, device=device)
                video = model(noisy.to(model.dtype), step, text.to(model.dtype)).float()
                with model.temporal_layers_disabled():
                    image = model(noisy.to(model.dtype), step, text.to(model.dtype)).float()
                for index, prediction in enumerate((video, image)):
                    x0 = original_from_output(prediction, noisy, alpha, prediction_type)
                    sums[t][index] += float(((x0 - latents) ** 2).mean()) * num_clips
    total = len(clips) * repeats
    results = {}
    for t, (video, image) in sums.items():
        results[t] = {"video": video / total, "image": image / total, "ratio": video / max(image, 1e-12)}
    return results
