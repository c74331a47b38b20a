"""Prompt travel: per-frame prompts given at keyframes (`prompt={0: "...", 8: "..."}`, diffusers' form), their text
embeddings interpolated linearly in between and held before the first and after the last keyframe."""

import torch


def interpolation_weights(keyframes: list[int], num_frames: int) -> torch.Tensor:
    """
    `(num_frames, len(keyframes))` weights of each (sorted) keyframe's embedding in each frame: linear between
    neighbouring keyframes, the nearest keyframe alone before the first and after the last. Rows sum to 1.
    """
    weights = torch.zeros(num_frames, len(keyframes))
    for frame in range(num_frames):
        after = next((k for k, key in enumerate(keyframes) if key >= frame), None)
        if after is None:
            weights[frame, -1] = 1.0
        elif after == 0 or keyframes[after] == frame:
            weights[frame, after] = 1.0
        else:
            start, end = keyframes[after - 1], keyframes[after]
            share = (frame - start) / (end - start)
            weights[frame, after - 1], weights[frame, after] = 1.0 - share, share
    return weights


def interpolate(weights: torch.Tensor, values: torch.Tensor, copies: int) -> torch.Tensor:
    """Per-frame values `(copies, F, ...)` from keyframe values `(K * copies, ...)` (each keyframe's copies
    contiguous, as `encode_prompt` repeats them) and `weights` `(F, K)`."""
    keyed = values.unflatten(0, (weights.shape[1], copies)).float()  # (K, copies, ...)
    frames = torch.einsum("fk,kc...->cf...", weights.to(keyed.device), keyed)
    return frames.to(values.dtype)


def predicted_path(predictor: torch.nn.Module, embeds: torch.Tensor, num_frames: int) -> torch.Tensor:
    """
    The path `(B, F, 2)` a motion path predictor gives text `(B, L, D)`, or per-frame text `(B, F, L, D)`: then the
    step into frame `f` is the step the path of frame `f`'s text takes there, so the content turns where the prompt
    says so. Past the predictor's `max_frames` (long videos) the path goes on at its mean velocity.
    """
    if embeds.ndim == 3:
        return _extended(predictor, embeds, num_frames)
    batch_size = embeds.shape[0]
    paths = _extended(predictor, embeds.flatten(0, 1), num_frames).unflatten(0, (batch_size, num_frames))
    steps = torch.diagonal(paths.diff(dim=2), offset=-1, dim1=1, dim2=2).movedim(-1, 1)  # (B, F-1, 2): text f+1
    return torch.cat([paths.new_zeros(batch_size, 1, 2), steps.cumsum(dim=1)], dim=1)


def _extended(predictor: torch.nn.Module, embeds: torch.Tensor, num_frames: int) -> torch.Tensor:
    known = min(num_frames, predictor.config.max_frames)
    path = predictor(embeds, known)  # (B, known, 2)
    if known == num_frames:
        return path
    velocity = path[:, -1] / max(known - 1, 1)  # frame 0 is at the origin
    later = torch.arange(1, num_frames - known + 1, device=path.device, dtype=path.dtype)
    return torch.cat([path, path[:, -1:] + later[None, :, None] * velocity[:, None]], dim=1)
