"""HARIVO's training losses (method.md sections 2-5), one small callable class per term.

Every loss has the same call signature, `loss(model, step) -> (B,)` per-sample values, where `model` is a
`HarivoUNet` and `step` a `DenoisingStep` (what one training forward saw and produced). `HarivoLoss` runs the
forward, asks only for the captures the active terms need, and returns the weighted total plus every term.

Notation (method.md): `z0` clean latents, `eps~ = m(eps)` mapped noise, `z_t` noisy latents, `c` text tokens,
`eps_theta` the video model, `eps_phi` the frozen T2I model (temporal layers bypassed), `A_l^f` the
self-attention map of layer `l` at frame `f`, `h` the mid-block output, `g` the projection head.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .models.video_unet import FeatureCapture, HarivoUNet, default_trsa_layers


@dataclass
class DenoisingStep:
    """Inputs and outputs of one training forward.

    Attributes:
        noisy_latents (`torch.Tensor`): `z_t`, `(B, C, F, h, w)`.
        timesteps (`torch.Tensor`): `t`, `(B,)`.
        encoder_hidden_states (`torch.Tensor`): `c`, `(B, L, D)`.
        model_output (`torch.Tensor`): The video model's prediction, `(B, C, F, h, w)`.
        target (`torch.Tensor`): The diffusion target built from the mapped noise, `(B, C, F, h, w)`.
        capture (`FeatureCapture`): Attention maps / h-space recorded during the forward.
        displacements (`torch.Tensor`, *optional*): The measured motion path the noise was warped along,
            `(B, F, 2)` in latent pixels (only with a motion path predictor).
        path_encoder_hidden_states (`torch.Tensor`, *optional*): The text the motion path predictor reads for
            `L_path`, `(k * B, L, D)`: `k` (augmented) copies of the batch's captions, copy-major; default
            `encoder_hidden_states`.
    """

    noisy_latents: torch.Tensor
    timesteps: torch.Tensor
    encoder_hidden_states: torch.Tensor
    model_output: torch.Tensor
    target: torch.Tensor
    capture: FeatureCapture | None = field(default_factory=FeatureCapture)
    displacements: torch.Tensor | None = None
    path_encoder_hidden_states: torch.Tensor | None = None


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the model must predict for `scheduler.add_noise(latents, noise, timesteps)`: `noise` or the velocity."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"Unsupported prediction_type {prediction_type!r}; use 'epsilon' or 'v_prediction'.")


def per_sample_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first: `(B, ...) -> (B,)`."""
    return values.flatten(1).mean(dim=1)


class DiffusionLoss:
    """`L_diff = ||eps_theta(z_t, t, c) - target||^2`, the target built from the mapped noise `eps~`."""

    def __call__(self, model: HarivoUNet, step: DenoisingStep) -> torch.Tensor:
        return per_sample_mean((step.model_output.float() - step.target.float()) ** 2)


class TemporalRegularizationLoss:
    """`L_reg = ||eps_theta(z_t, t, c_f) - sg[eps_phi(z_t, t, c)]||^2`: the video model against itself with every
    temporal layer and frame token bypassed (the frozen T2I model, frame by frame), on the same noisy input.
    Costs one extra forward without gradients.

    Args:
        num_frames (`int`, defaults to 0): Compare only this many frames of each clip, drawn at random each step
            (0: every frame) [ours]. Without its temporal layers the image model treats each frame on its own, so a
            subset is exact for its frames and the loss an unbiased estimate of the all-frames one, at that share of
            the extra forward's cost.
    """

    def __init__(self, num_frames: int = 0):
        if num_frames < 0:
            raise ValueError(f"`num_frames` must be >= 0 (0: every frame), got {num_frames}.")
        self.num_frames = num_frames

    def __call__(self, model: HarivoUNet, step: DenoisingStep) -> torch.Tensor:
        noisy, output = step.noisy_latents, step.model_output
        frames = noisy.shape[2]
        if 0 < self.num_frames < frames:
            chosen = torch.randperm(frames, device=noisy.device)[: self.num_frames].sort().values
            noisy, output = noisy[:, :, chosen], output[:, :, chosen]
        with torch.no_grad(), model.temporal_layers_disabled():
            image_prediction = model(noisy, step.timesteps, step.encoder_hidden_states)
        return per_sample_mean((output.float() - image_prediction.float()) ** 2)


class MotionPathLoss:
    """`L_path = ||p(c) - d||^2`: the motion path predicted from the prompt against the path measured on the training
    clip, in latent pixels per frame [ours]. Teaches the path predictor what motion a prompt means, so that sampling
    can move the content the way a training clip of that prompt moved."""

    def __call__(self, model: HarivoUNet, step: DenoisingStep) -> torch.Tensor:
        predictor = model.adapter.path_predictor
        if predictor is None or step.displacements is None:
            raise ValueError("L_path needs a motion path predictor and the measured displacements of the batch.")
        text = step.path_encoder_hidden_states
        text = step.encoder_hidden_states if text is None else text
        batch_size, num_frames = step.displacements.shape[:2]
        if text.shape[0] % batch_size:
            raise ValueError(
                f"The motion path predictor's text has {text.shape[0]} rows for a batch of {batch_size} clips; give"
                " a whole number of copies of the batch."
            )
        copies = text.shape[0] // batch_size
        predicted = predictor(text.float(), num_frames)  # (k * B, F, 2), copy-major
        error = per_sample_mean((predicted - step.displacements.float().repeat(copies, 1, 1)) ** 2)
        return error.view(copies, batch_size).mean(dim=0)


def attention_map_distance(attention_map: torch.Tensor, num_frames: int) -> torch.Tensor:
    """
    Mean L1 distance between the attention distributions of adjacent frames (in `[0, 2]`).

    Args:
        attention_map (`torch.Tensor`): `A_l` of shape `(B*F, heads, queries, keys)`, frames in the batch.
        num_frames (`int`): `F`.

    Returns:
        `torch.Tensor`: `(B,)`, `mean_{f, heads, queries} sum_keys |A_l^f - A_l^{f+1}|`.
    """
    maps = attention_map.float().unflatten(0, (-1, num_frames))  # (B, F, heads, Q, K)
    distance = (maps[:, 1:] - maps[:, :-1]).abs().sum(dim=-1)  # (B, F-1, heads, Q)
    return per_sample_mean(distance)


class TemporalAttentionLoss:
    """`L_trsa`: distance between the frozen model's spatial self-attention maps of adjacent frames, averaged
    over the captured layers. Identical frames give 0."""

    def __call__(self, model: HarivoUNet, step: DenoisingStep) -> torch.Tensor:
        maps = step.capture.attention_maps
        if not maps:
            raise ValueError("L_trsa needs attention maps: run the forward inside `model.capture(attention_layers)`.")
        num_frames = step.noisy_latents.shape[2]
        return torch.stack([attention_map_distance(m, num_frames) for m in maps.values()]).mean(dim=0)


class DecoupledContrastiveLoss(nn.Module):
    r"""
    `L_dc` on h-space: two different frames of one video are positives; the negatives are a FIFO queue of
    embeddings from earlier videos plus the other videos in the batch. The positive pair is left out of the
    denominator ("decoupled"), and the loss is symmetrised over the two frames.

    `L_dc = -<z1, z2>/tau + log sum_{q in negatives} exp(<z1, z_q>/tau)`

    It is an `nn.Module` so that its queue is saved with training checkpoints.

    Args:
        temperature (`float`, defaults to 0.1): `tau`.
        queue_size (`int`, defaults to 4096): Negatives kept from earlier batches (`0`: in-batch only).
        embedding_dim (`int`, defaults to 128): Dimension of the projected embeddings.
    """

    def __init__(self, temperature: float = 0.1, queue_size: int = 4096, embedding_dim: int = 128):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        self.temperature = temperature
        self.register_buffer("queue", torch.zeros(queue_size, embedding_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_position", torch.zeros((), dtype=torch.long))

    def negatives(self) -> torch.Tensor:
        return self.queue[: int(self.queue_filled)]

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor) -> None:
        """Push detached embeddings `(N, dim)` into the FIFO queue."""
        size = self.queue.shape[0]
        if size == 0:
            return
        embeddings = embeddings.detach().to(self.queue.dtype)[-size:]
        indices = (int(self.queue_position) + torch.arange(len(embeddings), device=self.queue.device)) % size
        self.queue[indices] = embeddings
        self.queue_position.fill_((int(self.queue_position) + len(embeddings)) % size)
        self.queue_filled.fill_(min(int(self.queue_filled) + len(embeddings), size))

    def contrast(self, anchor: torch.Tensor, positive: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """
        Args:
            anchor, positive (`torch.Tensor`): Unit vectors `(B, dim)`; row `i` of each comes from video `i`.
            others (`torch.Tensor`): Unit vectors `(B, dim)` of the same videos, used as in-batch negatives.

        Returns:
            `torch.Tensor`: `(B,)` decoupled contrastive loss of each anchor.
        """
        positive_logit = (anchor * positive).sum(dim=-1) / self.temperature  # (B,)
        batch_logits = anchor @ others.T / self.temperature  # (B, B)
        own_video = torch.eye(len(anchor), dtype=torch.bool, device=anchor.device)
        batch_logits = batch_logits.masked_fill(own_video, float("-inf"))
        queue = self.negatives().to(anchor.dtype).clone()  # a snapshot: `enqueue` later writes in place
        queue_logits = anchor @ queue.T / self.temperature  # (B, Q)
        negative_logits = torch.cat([batch_logits, queue_logits], dim=1)
        if negative_logits.shape[1] == 0 or torch.isinf(negative_logits).all():
            return -positive_logit  # no negatives yet: alignment only
        return -positive_logit + torch.logsumexp(negative_logits, dim=1)

    def forward(self, model: HarivoUNet, step: DenoisingStep) -> torch.Tensor:
        head = model.adapter.projection_head
        if head is None or step.capture.h_space is None:
            raise ValueError(
                "L_dc needs the projection head and the h-space (run inside `model.capture(h_space=True)`)."
            )
        num_frames = step.noisy_latents.shape[2]
        if num_frames < 2:
            raise ValueError("L_dc needs at least 2 frames per video.")
        embeddings = head(step.capture.h_space).unflatten(0, (-1, num_frames))  # (B, F, dim)
        batch_size = embeddings.shape[0]
        first = torch.randint(num_frames, (batch_size,), device=embeddings.device)
        offset = torch.randint(1, num_frames, (batch_size,), device=embeddings.device)
        second = (first + offset) % num_frames  # always a different frame
        rows = torch.arange(batch_size, device=embeddings.device)
        z1, z2 = embeddings[rows, first], embeddings[rows, second]  # (B, dim) each
        loss = 0.5 * (self.contrast(z1, z2, z2) + self.contrast(z2, z1, z1))
        if model.training:
            self.enqueue(z1)
        return loss


@dataclass
class LossWeights:
    """Weight of each term; `0` removes the term and its extra compute."""

    diffusion: float = 1.0
    reg: float = 0.1
    trsa: float = 0.1
    dc: float = 0.01
    path: float = 0.0


class HarivoLoss(nn.Module):
    r"""
    The total HARIVO loss `L = L_diff + lambda_reg L_reg + lambda_trsa L_trsa + lambda_dc L_dc (+ lambda_path L_path
    with a motion path predictor)`.

    Args:
        weights ([`LossWeights`], *optional*): Term weights.
        trsa_layers (`Sequence[str]`, *optional*): Self-attention layers for `L_trsa`; defaults to the
            lowest-resolution decoder block's (`default_trsa_layers`).
        dc_temperature (`float`, defaults to 0.1), dc_queue_size (`int`, defaults to 4096): `L_dc` settings.
        embedding_dim (`int`, defaults to 128): Projection-head output dimension.
        timestep_bias (`float`, defaults to 0): Sample training timesteps with density `∝ (t / T)^bias`: `0` is
            uniform; larger values train more at high noise, where a clip's layout (and so its temporal
            consistency) is decided and where the epsilon loss gives the temporal layers the least signal.
        reg_frames (`int`, defaults to 0): Frames of each clip `L_reg` compares (random each step; 0: every frame).
    """

    def __init__(
        self,
        weights: LossWeights | None = None,
        trsa_layers: Sequence[str] | None = None,
        dc_temperature: float = 0.1,
        dc_queue_size: int = 4096,
        embedding_dim: int = 128,
        timestep_bias: float = 0.0,
        reg_frames: int = 0,
    ):
        super().__init__()
        if timestep_bias < 0:
            raise ValueError(f"`timestep_bias` must be >= 0 (0 is uniform), got {timestep_bias}.")
        self.timestep_bias = timestep_bias
        self.weights = weights or LossWeights()
        self.trsa_layers = None if trsa_layers is None else list(trsa_layers)
        self.terms = {
            "diffusion": DiffusionLoss(),
            "reg": TemporalRegularizationLoss(reg_frames),
            "trsa": TemporalAttentionLoss(),
            "path": MotionPathLoss(),
        }
        self.dc = DecoupledContrastiveLoss(dc_temperature, dc_queue_size, embedding_dim)
        self.terms["dc"] = self.dc

    def sample_timesteps(self, batch_size: int, num_train_timesteps: int, generator=None, device=None) -> torch.Tensor:
        """`(B,)` integer timesteps, uniform or biased towards high noise (`timestep_bias`)."""
        if self.timestep_bias == 0:
            return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=device)
        uniform = torch.rand(batch_size, generator=generator, device=device)
        # inverse CDF of the density (t/T)^bias on [0, 1)
        fraction = uniform ** (1.0 / (1.0 + self.timestep_bias))
        return (fraction * num_train_timesteps).long().clamp(max=num_train_timesteps - 1)

    def active_terms(self) -> dict[str, float]:
        return {name: weight for name, weight in vars(self.weights).items() if weight != 0}

    @property
    def calls_model(self) -> bool:
        """Whether a training step needs the video model's forward (every term but `L_path` does)."""
        return set(self.active_terms()) != {"path"}

    def _model_step(
        self, model, scheduler, latents, encoder_hidden_states, generator, displacements, path_encoder_hidden_states
    ) -> DenoisingStep:
        """Noise the latents, run the video model once (capturing what the active terms need)."""
        batch_size = latents.shape[0]
        predictor = model.adapter.path_predictor
        if predictor is not None and predictor.config.warp_noise:
            noise = predictor.noise(
                latents.shape, displacements, generator, device=latents.device, dtype=latents.dtype
            )
        else:
            noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        mapped_noise = model.map_noise(noise)  # eps~ = m(eps)
        num_train_timesteps = scheduler.config.num_train_timesteps
        timesteps = self.sample_timesteps(batch_size, num_train_timesteps, generator, latents.device)
        noisy_latents = scheduler.add_noise(latents, mapped_noise, timesteps)  # sqrt(a) z0 + sqrt(1-a) eps~
        target = diffusion_target(scheduler, latents, mapped_noise, timesteps)

        active = self.active_terms()
        attention_layers = []
        if "trsa" in active:
            attention_layers = self.trsa_layers if self.trsa_layers is not None else default_trsa_layers(model.unet)
        with model.capture(attention_layers, h_space="dc" in active) as capture:
            model_output = model(noisy_latents, timesteps, encoder_hidden_states)
        return DenoisingStep(
            noisy_latents,
            timesteps,
            encoder_hidden_states,
            model_output,
            target,
            capture,
            displacements,
            path_encoder_hidden_states,
        )

    def forward(
        self,
        model: HarivoUNet,
        scheduler,
        latents: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        generator: torch.Generator | None = None,
        displacements: torch.Tensor | None = None,
        path_encoder_hidden_states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """
        One training forward and the losses on it.

        Args:
            model ([`HarivoUNet`]): The video model.
            scheduler: A diffusers training scheduler with `add_noise` (e.g. `DDPMScheduler`).
            latents (`torch.Tensor`): Clean video latents `z0`, `(B, C, F, h, w)` (already VAE-scaled); unused when
                `L_path` is the only term (`calls_model` is false).
            encoder_hidden_states (`torch.Tensor`): Text tokens `(B, L, D)`.
            generator (`torch.Generator`, *optional*): For the noise and timesteps.
            displacements (`torch.Tensor`, *optional*): Each clip's motion path `(B, F, 2)` in latent pixels
                (`estimate_displacements` of its frames over the VAE factor); required when the adapter has a noise
                path predictor (for `L_path`, and the warped noise if it warps).
            path_encoder_hidden_states (`torch.Tensor`, *optional*): What the path predictor reads for `L_path`
                instead of `encoder_hidden_states`: `k` copies of the batch's text tokens `(k * B, L, D)`, copy-major
                (e.g. with words substituted, `substitute_tokens`).

        Returns:
            `(total, logs)`: the weighted total (a scalar with gradient) and each unweighted term as a float.
        """
        predictor = model.adapter.path_predictor
        if predictor is not None and displacements is None:
            raise ValueError(
                "This adapter predicts motion paths: pass each clip's `displacements` (its measured path)."
            )
        active = self.active_terms()
        if self.calls_model:
            step = self._model_step(
                model, scheduler, latents, encoder_hidden_states, generator, displacements, path_encoder_hidden_states
            )
        else:  # refitting the path predictor alone: it reads only the text, no U-Net call
            step = DenoisingStep(
                latents, None, encoder_hidden_states, None, None, None, displacements, path_encoder_hidden_states
            )

        total = encoder_hidden_states.new_zeros((), dtype=torch.float32)
        logs = {}
        for name, weight in active.items():
            value = self.terms[name](model, step).mean()
            total = total + weight * value
            logs[name] = value.item()
        logs["total"] = total.item()
        return total, logs
