"""The text of a HARIVO call: keyframe prompts (prompt travel), per-frame embeddings, and the token weights that find
the prompt's subject for the motion-path mask (`HarivoPromptMixin`)."""

import torch

from ..utils.text import subject_token_weights
from . import prompt_travel


def _per_prompt(name: str, words: str | list[str] | None, num_prompts: int) -> list[str] | None:
    """`motion_subject` / `motion_scene` as one string per prompt (`None`: each prompt's own words)."""
    if words is None or isinstance(words, str):
        return None if words is None else [words] * num_prompts
    if len(words) != num_prompts:
        raise ValueError(f"`{name}` has {len(words)} entries for {num_prompts} prompts; give one each.")
    return list(words)


class HarivoPromptMixin:
    """Prompt encoding of the HARIVO pipelines beyond diffusers' `encode_prompt` (which they use as it is)."""

    def encode_prompt_travel(
        self,
        prompt: dict[int, str],
        num_frames: int,
        device: torch.device,
        num_videos_per_prompt: int,
        do_classifier_free_guidance: bool,
        negative_prompt: str | None = None,
        lora_scale: float | None = None,
        clip_skip: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-frame text `(num_videos_per_prompt, F, L, D)` (and the negative's) from keyframe prompts
        `{frame: prompt}`: each keyframe's embedding, linearly interpolated in between (`prompt_travel`)."""
        keyframes = sorted(prompt)
        weights = prompt_travel.interpolation_weights(keyframes, num_frames)
        negative = None if negative_prompt is None else [negative_prompt] * len(keyframes)
        positive, negative = self.encode_prompt(
            [prompt[frame] for frame in keyframes], device, num_videos_per_prompt, do_classifier_free_guidance,
            negative, lora_scale=lora_scale, clip_skip=clip_skip,
        )  # fmt: skip
        positive = prompt_travel.interpolate(weights, positive, num_videos_per_prompt)
        if negative is not None:
            negative = prompt_travel.interpolate(weights, negative, num_videos_per_prompt)
        return positive, negative

    def _encode_call_prompt(
        self, prompt, num_frames, device, num_videos_per_prompt, negative_prompt, prompt_embeds,
        negative_prompt_embeds, cross_attention_kwargs, clip_skip,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """The call's text `(B, L, D)`, or per frame `(B, F, L, D)` (keyframe prompts, or 4-dim embeddings: prompt
        travel); with classifier-free guidance `[negative; positive]` in the batch. Returns it and the negative."""
        lora_scale = cross_attention_kwargs.get("scale") if cross_attention_kwargs else None
        if isinstance(prompt, dict):
            prompt_embeds, negative_prompt_embeds = self.encode_prompt_travel(
                prompt, num_frames, device, num_videos_per_prompt, self.do_classifier_free_guidance,
                negative_prompt, lora_scale, clip_skip,
            )  # fmt: skip
        elif prompt_embeds is not None and prompt_embeds.ndim == 4:  # per-frame text given: encoded frames in batch
            videos, frames = prompt_embeds.shape[:2]
            if isinstance(negative_prompt, list):
                negative_prompt = [text for text in negative_prompt for _ in range(frames)]
            flat = [None if e is None else e.flatten(0, 1) for e in (prompt_embeds, negative_prompt_embeds)]
            encoded = self.encode_prompt(
                None, device, num_videos_per_prompt, self.do_classifier_free_guidance, negative_prompt,
                prompt_embeds=flat[0], negative_prompt_embeds=flat[1], lora_scale=lora_scale, clip_skip=clip_skip,
            )  # fmt: skip
            prompt_embeds, negative_prompt_embeds = (
                None if e is None else e.unflatten(0, (videos, frames, -1)).transpose(1, 2).flatten(0, 1)
                for e in encoded
            )  # (videos * copies, F, L, D)
        else:
            prompt_embeds, negative_prompt_embeds = self.encode_prompt(
                prompt, device, num_videos_per_prompt, self.do_classifier_free_guidance, negative_prompt,
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, lora_scale=lora_scale,
                clip_skip=clip_skip,
            )  # fmt: skip
        if self.do_classifier_free_guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])  # (2B, L, D) or (2B, F, L, D)
        return prompt_embeds, negative_prompt_embeds

    def _subject_token_weights(self, prompt, mask_mode, subject, scene, num_videos_per_prompt, device, num_frames):
        """`(videos in the U-Net batch, L)` token weights for `motion_path_mask="subject"`: the subject's tokens 1,
        the scene's -1 (negative prompts weigh 0; keyframe prompts' tokens weighed by the share of frames they hold),
        or `None` for the whole frame."""
        mask_mode = mask_mode if mask_mode is not None else ("subject" if prompt is not None else "frame")
        if mask_mode not in ("subject", "frame"):
            raise ValueError(f"`motion_path_mask` must be 'subject' or 'frame', got {mask_mode!r}.")
        if mask_mode == "frame":
            return None
        if prompt is None or self.tokenizer is None:
            raise ValueError(
                "`motion_path_mask='subject'` needs the prompt as text (and a tokenizer) to find the subject's words;"
                " pass `prompt`, or use `motion_path_mask='frame'`."
            )
        if isinstance(prompt, dict):  # prompt travel: the keyframes' subject tokens, weighed by their frames' share
            for name, words in (("motion_subject", subject), ("motion_scene", scene)):
                if words is not None and not isinstance(words, str):
                    raise ValueError(f"With keyframe prompts give `{name}` as one string (or leave it unset).")
            keyframes = sorted(prompt)
            texts = [prompt[k] for k in keyframes]
        else:
            texts = [prompt] if isinstance(prompt, str) else list(prompt)
        subjects, scenes = (
            _per_prompt(name, words, len(texts))
            for name, words in (("motion_subject", subject), ("motion_scene", scene))
        )
        weights = subject_token_weights(self.tokenizer, texts, subjects, scenes)  # (prompts or keyframes, L)
        if isinstance(prompt, dict):
            share = prompt_travel.interpolation_weights(keyframes, num_frames).mean(dim=0)  # (K,)
            weights = (share @ weights)[None].repeat(num_videos_per_prompt, 1)  # (videos, L)
        else:
            weights = weights.repeat_interleave(num_videos_per_prompt, 0)
        if self.do_classifier_free_guidance:
            weights = torch.cat([torch.zeros_like(weights), weights])
        return weights.to(device)
