"""Mitigating-gradient (MG) sampling, method.md section 6: the maths as small pure functions, and the pipelines'
guided step on them (`MGGuidanceMixin`).

At a guided step the pipeline predicts `x0_hat` from `z_t` with gradients on, evaluates a temporal-inconsistency
energy `E(x0_hat)`, and moves the noise prediction up the energy gradient (classifier-guidance form, so the
step goes *down* `E`):

    eps_hat = eps + (alpha / 100) * sqrt(1 - a_t) * grad_z E / rms(grad_z E)

Notation: `alpha` = `mg_scale`, `a_t` = `alpha_bar` (the scheduler's `alphas_cumprod[t]`), `z_t` = the
variance-preserving model input `sample`, `eps` = `noise_pred`. Normalising the gradient to unit RMS (per video)
is our choice: it makes `alpha` scale-free, the shift being `alpha` percent of a unit-variance noise at `t = T`,
so tens is the useful range and 150 over-does it.
"""

import torch
import torch.nn.functional as F

from ..losses import attention_map_distance
from ..models.video_unet import default_trsa_layers
from ..schedulers import PURE_NOISE_ALPHA_BAR


def epsilon_from_output(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
):
    """Convert a model output (`epsilon` or `v_prediction`) into the noise prediction `eps`."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0  =>  eps = sqrt(a) v + sqrt(1-a) z_t
        return alpha_bar.sqrt() * model_output + (1 - alpha_bar).sqrt() * sample
    raise ValueError(f"MG sampling supports prediction_type 'epsilon' or 'v_prediction', got {prediction_type!r}.")


def output_from_epsilon(epsilon: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str):
    """Inverse of `epsilon_from_output` at fixed `sample`."""
    if prediction_type == "epsilon":
        return epsilon
    return (epsilon - (1 - alpha_bar).sqrt() * sample) / alpha_bar.sqrt()


def output_from_original(
    original: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The model output (`epsilon` or `v_prediction`) that predicts `original` from `sample` (inverse of
    `original_from_output` at fixed `sample`; needs `a_t < 1`)."""
    sigma = (1 - alpha_bar).sqrt().clamp_min(1e-8)
    if prediction_type == "epsilon":  # eps = (z_t - sqrt(a) x0) / sqrt(1-a)
        return (sample - alpha_bar.sqrt() * original) / sigma
    if prediction_type == "v_prediction":  # v = (sqrt(a) z_t - x0) / sqrt(1-a)
        return (alpha_bar.sqrt() * sample - original) / sigma
    raise ValueError(f"Unsupported prediction_type {prediction_type!r}; use 'epsilon' or 'v_prediction'.")


def predict_original(sample: torch.Tensor, epsilon: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """`x0_hat = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)`."""
    return (sample - (1 - alpha_bar).sqrt() * epsilon) / alpha_bar.sqrt()


def original_from_output(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
):
    """The predicted clean latents `x0_hat` from a model output; for v-prediction also at `a_t = 0`."""
    if prediction_type == "v_prediction":  # x0 = sqrt(a) z_t - sqrt(1-a) v
        return alpha_bar.sqrt() * sample - (1 - alpha_bar).sqrt() * model_output
    return predict_original(sample, epsilon_from_output(model_output, sample, alpha_bar, prediction_type), alpha_bar)


def frame_difference_energy(original: torch.Tensor) -> torch.Tensor:
    """`E = sum_videos mean_{f,c,h,w} (x0^{f+1} - x0^f)^2` for `original` of shape `(B, C, F, h, w)`."""
    difference = original[:, :, 1:] - original[:, :, :-1]  # (B, C, F-1, h, w)
    return (difference.float() ** 2).flatten(1).mean(dim=1).sum()


def translate(
    frames: torch.Tensor, offsets: torch.Tensor, padding_mode: str = "zeros"
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Move each frame's content by a (sub-pixel) offset, bilinearly: `out(x) = frames(x - offset)`.

    Args:
        frames (`torch.Tensor`): `(N, C, h, w)`.
        offsets (`torch.Tensor`): `(N, 2)` `(x, y)` in pixels of `frames` (x to the right, y down).
        padding_mode (`str`, defaults to `"zeros"`): What enters from outside the frame (`grid_sample`'s modes).

    Returns:
        `(moved, valid)`: the moved frames and a `(N, 1, h, w)` mask of the pixels whose source lies inside the frame.
    """
    height, width = frames.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(height, device=frames.device, dtype=torch.float32),
        torch.arange(width, device=frames.device, dtype=torch.float32),
        indexing="ij",
    )
    offsets = offsets.to(device=frames.device, dtype=torch.float32)
    source_x = xs[None] - offsets[:, 0, None, None]  # (N, h, w)
    source_y = ys[None] - offsets[:, 1, None, None]
    grid = torch.stack(
        [(2 * source_x + 1) / width - 1, (2 * source_y + 1) / height - 1], dim=-1
    )  # align_corners=False
    moved = F.grid_sample(frames.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    valid = (source_x >= 0) & (source_x <= width - 1) & (source_y >= 0) & (source_y <= height - 1)
    return moved.to(frames.dtype), valid[:, None].to(frames.dtype)


def motion_path_energy(original: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """
    The frame difference along a motion path [ours]: `E = sum_videos mean (x0^{f+1} - move(x0^f, d_{f+1} - d_f))^2`
    over the pixels whose source is inside the frame. With a zero path it is `frame_difference_energy`; along a path
    it is lowest for content that travels along the path rather than for content that stands still.

    Args:
        original (`torch.Tensor`): `x0_hat`, `(B, C, F, h, w)`.
        path (`torch.Tensor`): `(B, F, 2)` `(x, y)` offsets from the first frame, in latent pixels.
    """
    batch_size, channels, num_frames = original.shape[:3]
    steps = (path[:, 1:] - path[:, :-1]).flatten(0, 1)  # (B*(F-1), 2)
    previous = original[:, :, :-1].transpose(1, 2).flatten(0, 1)  # (B*(F-1), C, h, w)
    following = original[:, :, 1:].transpose(1, 2).flatten(0, 1)
    moved, valid = translate(previous, steps)
    squared = ((following.float() - moved.float()) ** 2 * valid).unflatten(0, (batch_size, num_frames - 1))
    counts = (valid.unflatten(0, (batch_size, num_frames - 1)).flatten(1).sum(dim=1) * channels).clamp_min(1)
    return (squared.flatten(1).sum(dim=1) / counts).sum()


CORE_QUANTILE = 0.25  # the subject's core: shown in at least 75 % of the aligned frames


def project_onto_path(
    original: torch.Tensor,
    path: torch.Tensor,
    strength: float = 1.0,
    mask: torch.Tensor | None = None,
    core: bool = False,
) -> torch.Tensor:
    """
    Pull `x0_hat` towards content that travels rigidly along a path [ours].

    Without `mask` the whole frame travels: every frame is moved back to the first frame's position, the aligned
    frames are averaged, and the average is moved out along the path again (edges repeat what is at the border).
    With a `mask` of what moves (the subject), only that travels and the rest stands still: the moving layer is the
    mask-weighted average of the aligned frames and covers the union of the aligned masks, moved out along the path;
    the still layer is, at each pixel, the average over the frames where the subject is not. `strength` blends the
    result with the prediction (`1`: fully rigid, `0`: unchanged). With `core`, the moving layer keeps only the union
    near the subject's core: where at least three quarters of the aligned frames show the subject, grown by one
    pixel. What travels with the path is the same in every aligned frame; a still texture that the mask also covers
    is not (it shifts against the path), so it stays in the still layer instead of being carried along.

    Text2Video-Zero moves a frozen image model's latents by a global translation to make motion; here the
    translation is the prompt's predicted path and it acts on the early clean-latent predictions, where the layout
    is decided, while the temporal layers make the rest of each frame.

    Args:
        original (`torch.Tensor`): `x0_hat`, `(B, C, F, h, w)`.
        path (`torch.Tensor`): `(B, F, 2)` `(x, y)` offsets from the first frame, in latent pixels.
        strength (`float`, defaults to 1): Blend weight of the rigid version.
        mask (`torch.Tensor`, *optional*): `(B, 1, F, h, w)` in `[0, 1]`, where each frame shows what moves.
        core (`bool`, defaults to `False`): With `mask`, move only the union near the mask's core.
    """
    batch_size, _, num_frames = original.shape[:3]
    frames = original.transpose(1, 2).flatten(0, 1).float()  # (B*F, C, h, w)
    offsets = path.flatten(0, 1)
    aligned, _ = translate(frames, -offsets, padding_mode="border")
    aligned = aligned.unflatten(0, (batch_size, num_frames))  # (B, F, C, h, w)
    if mask is None:
        template = aligned.mean(dim=1, keepdim=True)
        rigid, _ = translate(template.expand_as(aligned).flatten(0, 1), offsets, padding_mode="border")
    else:
        masks = mask.transpose(1, 2).flatten(0, 1).float()  # (B*F, 1, h, w)
        aligned_masks, _ = translate(masks, -offsets)  # zeros enter: nothing moves in from outside
        aligned_masks = aligned_masks.unflatten(0, (batch_size, num_frames))
        weight = aligned_masks.sum(dim=1, keepdim=True)
        template = torch.where(
            weight > 1e-3, (aligned * aligned_masks).sum(dim=1, keepdim=True) / weight.clamp_min(1e-3),
            aligned.mean(dim=1, keepdim=True),
        )  # fmt: skip
        union = aligned_masks.amax(dim=1, keepdim=True)
        if core:
            shown = aligned_masks.float().quantile(CORE_QUANTILE, dim=1)  # (B, 1, h, w)
            union = union * F.max_pool2d(shown, 3, stride=1, padding=1)[:, None]
        union = union.expand_as(aligned_masks).flatten(0, 1)
        moving, _ = translate(template.expand_as(aligned).flatten(0, 1), offsets, padding_mode="border")
        moving_mask, _ = translate(union, offsets)
        still_weights = (1 - masks).unflatten(0, (batch_size, num_frames))
        still_total = still_weights.sum(dim=1, keepdim=True)
        unaligned = frames.unflatten(0, (batch_size, num_frames))
        still = torch.where(
            still_total > 1e-3, (unaligned * still_weights).sum(dim=1, keepdim=True) / still_total.clamp_min(1e-3),
            unaligned.mean(dim=1, keepdim=True),
        ).expand_as(unaligned).flatten(0, 1)  # fmt: skip
        rigid = moving_mask * moving + (1 - moving_mask) * still
    rigid = rigid.unflatten(0, (batch_size, num_frames)).transpose(1, 2).to(original.dtype)  # (B, C, F, h, w)
    return original + strength * (rigid - original)


def subject_mask(
    token_attention: dict[str, torch.Tensor], num_videos: int, num_frames: int, size: tuple[int, int],
    threshold: tuple[float, float] = (0.3, 0.6),
) -> torch.Tensor:  # fmt: skip
    """
    Where each frame shows the subject, from the cross-attention to the subject's words [ours].

    Each layer's map (`HarivoUNet.capture(token_weights=...)`) is resized to the latents and scaled to `[0, 1]` per
    frame, the layers are averaged, scaled again, and ramped from 0 at `threshold[0]` to 1 at `threshold[1]`.

    Args:
        token_attention (`dict[str, torch.Tensor]`): Layer name -> `(rows * F, h_l, w_l)`; the last
            `num_videos * F` rows are the videos' own (under classifier-free guidance the negative prompts come
            first).
        num_videos (`int`): Videos in the batch.
        num_frames (`int`): Frames per video.
        size (`tuple[int, int]`): `(h, w)` of the latents.
        threshold (`tuple[float, float]`): Where the ramp starts and ends.

    Returns:
        `torch.Tensor`: `(B, 1, F, h, w)` in `[0, 1]`.
    """

    def unit(maps: torch.Tensor) -> torch.Tensor:
        low = maps.amin(dim=(-2, -1), keepdim=True)
        high = maps.amax(dim=(-2, -1), keepdim=True)
        return (maps - low) / (high - low).clamp_min(1e-8)

    rows = num_videos * num_frames
    maps = [
        unit(F.interpolate(m[-rows:, None].float(), size=size, mode="bilinear", align_corners=False))
        for m in token_attention.values()
    ]
    combined = unit(torch.stack(maps).mean(0))  # (B*F, 1, h, w)
    low, high = threshold
    ramp = ((combined - low) / max(high - low, 1e-6)).clamp(0, 1)
    return ramp.unflatten(0, (num_videos, num_frames)).transpose(1, 2)


def attention_energy(attention_maps: dict[str, torch.Tensor], num_frames: int) -> torch.Tensor:
    """The `L_trsa` distance of the captured self-attention maps, summed over videos."""
    return torch.stack([attention_map_distance(m, num_frames) for m in attention_maps.values()]).mean(0).sum()


def guide_noise_prediction(
    noise_pred: torch.Tensor, energy_grad: torch.Tensor, alpha_bar: torch.Tensor, mg_scale: float
) -> torch.Tensor:
    """
    `eps_hat = eps + (alpha / 100) * sqrt(1 - a_t) * grad / rms(grad)`, the RMS taken per video.

    Args:
        noise_pred (`torch.Tensor`): `eps`, `(B, C, F, h, w)`.
        energy_grad (`torch.Tensor`): `grad_z E`, same shape.
        alpha_bar (`torch.Tensor`): `a_t`, a scalar tensor.
        mg_scale (`float`): `alpha`.
    """
    grad = energy_grad.float()
    rms = grad.pow(2).flatten(1).mean(dim=1).sqrt().clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
    shift = (mg_scale / 100.0) * (1 - alpha_bar).sqrt() * grad / rms
    return noise_pred + shift.to(noise_pred.dtype)


MG_GRADIENTS = ("full", "x0")


def check_gradient(gradient: str, energy: str) -> None:
    """Raise a `ValueError` unless `gradient` is one of `MG_GRADIENTS` and can be taken for `energy`."""
    if gradient not in MG_GRADIENTS:
        raise ValueError(f"`mg_gradient` must be one of {MG_GRADIENTS}, got {gradient!r}.")
    if gradient == "x0" and energy == "attention":
        raise ValueError(
            "`mg_gradient='x0'` needs an energy of the clean latents; the attention energy's gradient runs through"
            " the U-Net: use mg_gradient='full' or mg_energy='frame_difference'."
        )


def clean_latent_energy(original: torch.Tensor, energy: str, path: torch.Tensor | None = None) -> torch.Tensor:
    """`E(x0_hat)` for the energies of the clean latents (`frame_difference`, `motion_path`)."""
    return frame_difference_energy(original) if energy == "frame_difference" else motion_path_energy(original, path)


def energy_gradient(original: torch.Tensor, energy: str, path: torch.Tensor | None = None) -> torch.Tensor:
    """`grad E(x0_hat)` at `original` (`(B, C, F, h, w)`), for the energies of the clean latents: cheap, no model
    call (`frame_difference`: the temporal second difference, `motion_path`: the same along the path)."""
    with torch.enable_grad():
        original = original.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(clean_latent_energy(original, energy, path), original)
    return grad


def check_window(name: str, window: tuple[float, float]) -> None:
    """Raise a `ValueError` unless `window` is a fraction window `(start, end)` with `0 <= start <= end <= 1`."""
    try:
        start, end = (float(value) for value in window)
    except (TypeError, ValueError):
        start = end = float("nan")  # not a pair of numbers
    if not 0.0 <= start <= end <= 1.0:  # also false for NaN
        raise ValueError(f"`{name}` must be (start, end) with 0 <= start <= end <= 1, got {window!r}.")


def in_window(step_index: int, num_steps: int, window: tuple[float, float]) -> bool:
    """Whether step `step_index` of `num_steps` lies in the fraction window `[start, end)` of the schedule."""
    start, end = window
    position = step_index / max(num_steps, 1)
    return start <= position < end


class MGGuidanceMixin:
    """A pipeline's MG step (section 6) and the motion-path projection, on the functions above: what the denoising
    loop calls at a guided step."""

    def _project_onto_path(self, output, latents, t, motion_path, strength, mask=None, core=False) -> torch.Tensor:
        """The model output whose clean-latent prediction is pulled onto rigid motion along `motion_path`."""
        alpha_bar = self._alpha_bar(t).to(latents.device)
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        sample = self.scheduler.scale_model_input(latents, t)  # variance-preserving z_t
        original = original_from_output(output.float(), sample.float(), alpha_bar, prediction_type)
        projected = project_onto_path(original, motion_path, strength, mask, core)
        return output_from_original(projected, sample.float(), alpha_bar, prediction_type).to(output.dtype)

    def _alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        alphas_cumprod = getattr(self.scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None:
            raise ValueError(
                f"MG sampling needs a scheduler with `alphas_cumprod` (DDIM, DDPM, Euler, DPM-Solver, ...);"
                f" {type(self.scheduler).__name__} has none. Set `mg_scale=0` or change the scheduler."
            )
        index = min(max(round(float(t)), 0), len(alphas_cumprod) - 1)
        return alphas_cumprod[index].float()

    def _mg_guided_noise(
        self, latents, t, prompt_embeds, mg_scale, mg_energy, cross_attention_kwargs, path=None, gradient="full"
    ):
        """The model output at a guided step: MG moves it along the gradient of the temporal energy (section 6)."""
        alpha_bar = self._alpha_bar(t).to(latents.device)
        if alpha_bar < PURE_NOISE_ALPHA_BAR:  # a zero-terminal-SNR schedule's pure-noise step: nothing to guide
            return self._predict_noise(latents, t, prompt_embeds, cross_attention_kwargs)
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if gradient == "x0":  # the model output held constant: d x0_hat / d z_t = 1 / sqrt(a_t), a scalar
            output = self._predict_noise(latents, t, prompt_embeds, cross_attention_kwargs)
            sample = self.scheduler.scale_model_input(latents, t)
            epsilon = epsilon_from_output(output, sample, alpha_bar, prediction_type)
            original = predict_original(sample.float(), epsilon.float(), alpha_bar)
            grad = energy_gradient(original, mg_energy, path)
            guided = guide_noise_prediction(epsilon, grad, alpha_bar, mg_scale)
            return output_from_epsilon(guided, sample, alpha_bar, prediction_type)
        layers = default_trsa_layers(self.video_unet.base_unet) if mg_energy == "attention" else []
        with torch.enable_grad():
            latents_in = latents.detach().requires_grad_(True)
            with self.video_unet.capture(layers) as capture:
                output = self._predict_noise(latents_in, t, prompt_embeds, cross_attention_kwargs)
            sample = self.scheduler.scale_model_input(latents_in, t)  # variance-preserving z_t
            epsilon = epsilon_from_output(output, sample, alpha_bar, prediction_type)
            if mg_energy == "attention":
                energy = attention_energy(capture.attention_maps, latents.shape[2])
            else:
                original = predict_original(sample, epsilon, alpha_bar)
                energy = clean_latent_energy(original, mg_energy, path)
            (grad,) = torch.autograd.grad(energy, latents_in)
        guided = guide_noise_prediction(epsilon.detach(), grad, alpha_bar, mg_scale)
        return output_from_epsilon(guided, sample.detach(), alpha_bar, prediction_type)
