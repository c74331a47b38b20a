"""Tiny, real diffusers / transformers components (random weights) for tests and smoke runs on CPU."""

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import build_clip_tokenizer

TINY_WORDS = "a an the small large red green blue circle square triangle moving left right up down on plain black white background".split()


def tiny_unet(cross_attention_dim: int = 32, seed: int = 0) -> UNet2DConditionModel:
    """Two-level U-Net (16/32 channels), cross-attention on both levels; works on latents of side 4k."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
    )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """VAE with a down-sampling factor of 2 (two levels)."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=16,
    )


def tiny_text_encoder(vocab_size: int, hidden_size: int = 32, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config)


def tiny_stable_diffusion(seed: int = 0) -> StableDiffusionPipeline:
    """A complete, tiny, randomly initialised Stable Diffusion pipeline (diffusers layout on `save_pretrained`)."""
    tokenizer = build_clip_tokenizer(TINY_WORDS)
    return StableDiffusionPipeline(
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(len(tokenizer), seed=seed),
        tokenizer=tokenizer,
        unet=tiny_unet(seed=seed),
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
