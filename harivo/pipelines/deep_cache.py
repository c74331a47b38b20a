"""DeepCache (Ma et al. 2024) for the video U-Net: neighbouring steps' deep features barely change, so between full
steps only the shallowest blocks run and the deep ones give what they gave at the last full step.

`enable_deep_cache(cache_interval, cache_branch_id)` uses DeepCache's own names. Every `cache_interval`-th step runs
the whole U-Net and keeps the outputs of its deep blocks (every down block after `cache_branch_id`, the mid block,
every up block before the last `cache_branch_id + 1`); the steps between run the shallow blocks on fresh inputs (the
time embedding, the text, the ControlNet residuals of those blocks) and take the deep blocks' kept outputs.

A step always runs whole where the reused features would be wrong or the saving lost: under MG guidance (its
gradient must see the whole U-Net), where the temporal layers switch on or off (`temporal_window`), and after any
change of the latents' shape. Each U-Net call of a step is kept apart (the windows of a long video, FreeInit's
iterations), so every window reuses its own features. The block wrappers exist only during a call.
"""

import contextlib

import torch

from .checks import is_int


class DeepCacheState:
    """The features one call keeps: per U-Net call of a step (`call`), per deep block, its detached output."""

    def __init__(self, interval: int, branch: int):
        self.interval, self.branch = interval, branch
        self.kept: dict[tuple[int, int], object] = {}
        self.kept_attention: dict[int, dict[str, torch.Tensor]] = {}  # per call: the token attention it recorded
        self._before: dict[str, int] = {}
        self.reuse = False
        self.call = 0
        self.full_steps = self.cached_steps = 0
        self._mode = None

    def begin_step(self, step: int, mode: tuple, full: bool = False) -> None:
        """Start step `step`; `mode` is what the features depend on besides the latents' values (the temporal layers
        on or off, the latents' shape); `full` runs the whole U-Net whatever the interval says."""
        self.reuse = not full and step % self.interval != 0 and mode == self._mode and bool(self.kept)
        if not self.reuse:
            self.kept.clear()
            self.kept_attention.clear()
            self._mode = mode
        self.call = 0
        self.full_steps += not self.reuse
        self.cached_steps += self.reuse

    def wrap(self, index: int, forward):
        def cached(*args, **kwargs):
            key = (self.call, index)
            if self.reuse and key in self.kept:
                return self.kept[key]
            output = forward(*args, **kwargs)
            if not torch.is_grad_enabled():
                self.kept[key] = _detached(output)
            return output

        return cached

    def before_call(self, capture) -> None:
        if capture is not None:
            self._before = {name: id(maps) for name, maps in capture.token_attention.items()}

    def after_call(self, capture) -> None:
        """A full call keeps the token attention it recorded; a cached call gets the deep layers' (which did not run)
        from the full call it reuses, so the subject's mask reads this window's maps, never another's."""
        if capture is not None:
            if not self.reuse:
                self.kept_attention[self.call] = dict(capture.token_attention)
            else:
                stale = [name for name, maps in capture.token_attention.items() if self._before.get(name) == id(maps)]
                for name in stale:
                    capture.token_attention[name] = self.kept_attention.get(self.call, {}).get(
                        name, capture.token_attention[name]
                    )
        self.call += 1


def _detached(output):
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, tuple):
        return tuple(_detached(item) for item in output)
    return output


def deep_blocks(unet, branch: int) -> list[torch.nn.Module]:
    """The blocks a cached step skips: down blocks after `branch`, the mid block, up blocks before the last
    `branch + 1`."""
    return [
        *unet.down_blocks[branch + 1 :],
        *([unet.mid_block] if unet.mid_block is not None else []),
        *unet.up_blocks[: len(unet.up_blocks) - branch - 1],
    ]


class HarivoDeepCacheMixin:
    """`enable_deep_cache` / `disable_deep_cache` on a HARIVO pipeline; the denoising loop calls `_deep_cache_step`."""

    _deep_cache_settings: tuple[int, int] | None = None
    _deep_cache: DeepCacheState | None = None

    def enable_deep_cache(self, cache_interval: int = 3, cache_branch_id: int = 0) -> None:
        r"""
        Reuse the video U-Net's deep features between full steps (DeepCache).

        Args:
            cache_interval (`int`, defaults to 3): Every `cache_interval`-th step runs the whole U-Net; 1 is off.
            cache_branch_id (`int`, defaults to 0): The deepest block level that still runs at every step (0: only
                the first down block and the last up block); higher is slower and closer to uncached.
        """
        if not is_int(cache_interval) or cache_interval < 1:
            raise ValueError(f"`cache_interval` must be a positive integer, got {cache_interval!r}.")
        levels = len(self.video_unet.base_unet.down_blocks)
        if not is_int(cache_branch_id) or not 0 <= cache_branch_id < levels - 1:
            raise ValueError(f"`cache_branch_id` must be an integer from 0 to {levels - 2} (this U-Net has {levels}"
                             f" block levels), got {cache_branch_id!r}.")  # fmt: skip
        self._deep_cache_settings = (int(cache_interval), int(cache_branch_id))

    def disable_deep_cache(self) -> None:
        self._deep_cache_settings = None

    @property
    def deep_cache_enabled(self) -> bool:
        return self._deep_cache_settings is not None

    @contextlib.contextmanager
    def _deep_cache_during_call(self):
        """Wrap the deep blocks' `forward` for this call only (removed after it, also on an error)."""
        if self._deep_cache_settings is None or self._deep_cache_settings[0] == 1:
            yield
            return
        state = DeepCacheState(*self._deep_cache_settings)
        unet = self.video_unet.base_unet
        blocks = deep_blocks(unet, state.branch)
        for index, block in enumerate(blocks):
            block.forward = state.wrap(index, block.forward)
        hooks = [  # each U-Net call of a step (a window) apart, with the token attention it recorded
            unet.register_forward_pre_hook(lambda *_: state.before_call(self._token_capture)),
            unet.register_forward_hook(lambda *_: state.after_call(self._token_capture)),
        ]
        self._deep_cache = state
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()
            for block in blocks:
                del block.forward  # the class's own forward again
            self._deep_cache = None

    def _deep_cache_step(self, step: int, mode: tuple, full: bool = False) -> None:
        if self._deep_cache is not None:
            self._deep_cache.begin_step(step, mode, full)
