"""The caption-content head: what it reads, what it skips, and that it can make a text encoder keep a word."""

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from harivo.data.shapes import build_shapes_tokenizer
from harivo.training.caption_content import ATTRIBUTES, CaptionContentHead
from harivo.utils.text import tokenize_captions

CAPTIONS = [
    "a small red circle moving left on a plain black background",
    "a small red circle moving right on a plain black background",
    "a small red circle moving up on a plain black background",
    "a small red circle moving down on a plain black background",
    "a small red circle on a plain black background",
]


def test_empty_captions_are_skipped_and_every_attribute_is_scored():
    head = CaptionContentHead(hidden_size=8)
    pooled = torch.randn(3, 8, requires_grad=True)
    loss = head.loss(pooled, [CAPTIONS[0], "", CAPTIONS[4]])
    loss.backward()
    assert pooled.grad[1].abs().sum() == 0 and pooled.grad[0].abs().sum() > 0  # the empty caption gets no gradient
    assert head.loss(pooled, ["", "", ""]).item() == 0.0
    assert set(head.accuracy(pooled[[0, 2]], [CAPTIONS[0], CAPTIONS[4]])) == set(ATTRIBUTES)


def test_it_makes_a_text_encoder_tell_the_directions_apart():
    torch.manual_seed(0)
    tokenizer = build_shapes_tokenizer(model_max_length=16)
    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )  # fmt: skip
    head = CaptionContentHead(hidden_size=encoder.config.hidden_size)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=3e-3)
    ids = tokenize_captions(tokenizer, CAPTIONS)
    for _ in range(60):
        optimizer.zero_grad()
        head.loss(encoder(ids).pooler_output, CAPTIONS).backward()
        optimizer.step()
    with torch.no_grad():
        assert head.accuracy(encoder(ids).pooler_output, CAPTIONS)["direction"] == 1.0
