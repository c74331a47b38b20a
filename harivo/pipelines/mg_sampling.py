"""Mitigating-gradient (MG) sampling, method.md section 6: the maths, as small pure functions.

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

from ..losses import attention_map_distance


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


def in_window(step_index: int, num_steps: int, window: tuple[float, float]) -> bool:
    """Whether step `step_index` of `num_steps` lies in the fraction window `[start, end)` of the schedule."""
    start, end = window
    position = step_index / max(num_steps, 1)
    return start <= position < end
