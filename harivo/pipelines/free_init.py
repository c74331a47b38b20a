"""FreeInit (Wu et al. 2023): sample, diffuse the result back to the last training step, keep its low spatio-temporal
frequencies, take the high ones from fresh noise, and sample again. diffusers' `FreeInitMixin` options and names.

Why it helps (where it does): a model trained with a schedule whose last step is not pure noise learns to read the
low frequencies left at that step, which inference's Gaussian start lacks; FreeInit hands them back. A model trained
with a zero-terminal-SNR schedule (such as the embedded Shapes model) has pure noise at its last step, so the
diffused result *is* the first noise and only the high frequencies change: measured in `docs/workflows.md`.
"""

from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from .checks import is_finite, is_int

FILTERS = ("butterworth", "gaussian", "ideal", "box")


@dataclass(frozen=True)
class FreeInitSettings:
    num_iters: int
    use_fast_sampling: bool
    method: str
    order: int
    spatial_stop_frequency: float
    temporal_stop_frequency: float

    def steps(self, iteration: int, num_inference_steps: int) -> int:
        """Denoising steps of `iteration` (0-based): all, or with fast sampling a growing share of them."""
        if not self.use_fast_sampling:
            return num_inference_steps
        return max(1, int(num_inference_steps / self.num_iters * (iteration + 1)))

    def low_pass(self, shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """The low-pass filter `(F, h, w)` over frames, height and width, in `fftn`'s frequency order."""
        frequencies = [torch.fft.fftfreq(n, device=device) for n in shape]  # cycles per sample, in [-0.5, 0.5)
        stops = (self.temporal_stop_frequency, self.spatial_stop_frequency, self.spatial_stop_frequency)
        scaled = torch.meshgrid(*[2 * f / max(s, 1e-8) for f, s in zip(frequencies, stops)], indexing="ij")
        distance = torch.sqrt(sum(axis**2 for axis in scaled))  # 1 at the stop frequency
        if self.method == "butterworth":
            return 1 / (1 + distance ** (2 * self.order))
        if self.method == "gaussian":
            return torch.exp(-(distance**2) / 2)
        if self.method == "ideal":
            return (distance <= 1).float()
        return torch.stack(scaled).abs().amax(dim=0).le(1).float()  # box: inside the stop on every axis


class HarivoFreeInitMixin:
    """`enable_free_init` / `disable_free_init` for [`HarivoPipeline`]."""

    _free_init: FreeInitSettings | None = None

    @property
    def free_init_enabled(self) -> bool:
        return self._free_init is not None

    def enable_free_init(
        self,
        num_iters: int = 3,
        use_fast_sampling: bool = False,
        method: str = "butterworth",
        order: int = 4,
        spatial_stop_frequency: float = 0.25,
        temporal_stop_frequency: float = 0.25,
    ) -> None:
        r"""
        Sample `num_iters` times, each start made of the last result's low frequencies and fresh high ones (FreeInit).

        Args:
            num_iters (`int`, defaults to 3): Samplings per video (the cost, without fast sampling).
            use_fast_sampling (`bool`, defaults to `False`): Iteration `i` runs `(i + 1) / num_iters` of the steps
                (coarse-to-fine, cheaper).
            method (`str`, defaults to `"butterworth"`): The low-pass filter: `butterworth`, `gaussian`, `ideal`
                or `box`.
            order (`int`, defaults to 4): The Butterworth filter's order.
            spatial_stop_frequency, temporal_stop_frequency (`float`, defaults to 0.25): Where the filter stops,
                as a fraction of the highest frequency, in (0, 1].
        """
        if not is_int(num_iters) or num_iters < 1:
            raise ValueError(f"`num_iters` must be a positive integer, got {num_iters!r}.")
        if method not in FILTERS:
            raise ValueError(f"`method` must be one of {FILTERS}, got {method!r}.")
        if not is_int(order) or order < 1:
            raise ValueError(f"`order` must be a positive integer, got {order!r}.")
        for name, value in (("spatial_stop_frequency", spatial_stop_frequency),
                            ("temporal_stop_frequency", temporal_stop_frequency)):  # fmt: skip
            if not is_finite(value) or not 0 < value <= 1:
                raise ValueError(f"`{name}` must be in (0, 1], got {value!r}.")
        self._free_init = FreeInitSettings(
            num_iters, bool(use_fast_sampling), method, order, float(spatial_stop_frequency),
            float(temporal_stop_frequency),
        )  # fmt: skip

    def disable_free_init(self) -> None:
        self._free_init = None

    def _free_init_iterations(self) -> int:
        return self._free_init.num_iters if self._free_init is not None else 1

    def _free_init_restart(
        self,
        result: torch.Tensor,
        first_noise: torch.Tensor,
        generator: torch.Generator | list | None,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        The next iteration's start: `result` `(B, C, F, h, w)` diffused to the last training step with the first
        iteration's (mapped) noise `first_noise`, low-passed, plus fresh mapped noise high-passed. With `start` (an
        input video's or image's first step) [ours]: `result` noised to that step with noise whose low frequencies
        are the first noise's and high ones fresh, so the input's part of the schedule runs again from there.
        """
        sigma = self.scheduler.init_noise_sigma
        fresh = randn_tensor(result.shape, generator=generator, device=result.device, dtype=result.dtype)
        fresh = self.adapter.mapping_network(fresh).float()
        low = self._free_init.low_pass(tuple(result.shape[2:]), result.device)
        if start is not None:
            noise = self._mix_frequencies(first_noise.float() / sigma, fresh, low)
            timesteps = start.reshape(1).repeat(result.shape[0])
            return self.scheduler.add_noise(result, noise.to(result.dtype), timesteps)
        last = self.scheduler.config.get("num_train_timesteps", 1000) - 1
        timesteps = torch.full((result.shape[0],), last, device=result.device, dtype=torch.long)
        diffused = self.scheduler.add_noise(result, first_noise / sigma, timesteps).float()
        return self._mix_frequencies(diffused, fresh * sigma, low).to(result.dtype)

    @staticmethod
    def _mix_frequencies(low_source: torch.Tensor, high_source: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """`low_source`'s spatio-temporal frequencies where the filter `low` passes, `high_source`'s elsewhere."""
        dims = (-3, -2, -1)
        spectrum = torch.fft.fftn(low_source, dim=dims) * low + torch.fft.fftn(high_source, dim=dims) * (1 - low)
        return torch.fft.ifftn(spectrum, dim=dims).real
