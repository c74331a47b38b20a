"""Text encoding as Stable Diffusion does it, shared by training and evaluation."""

import torch
from transformers import CLIPTextModel, CLIPTokenizer


def tokenize_captions(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids `(B, L)` of captions, padded (and truncated) to the tokenizer's length."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_captions(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, captions: list[str]) -> torch.Tensor:
    """Text tokens `(B, L, D)` of captions: the text encoder's last hidden state, as Stable Diffusion uses it."""
    return text_encoder(tokenize_captions(tokenizer, captions).to(text_encoder.device))[0]
