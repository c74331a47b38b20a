from transformers import CLIPTokenizer

from harivo.utils.tokenizer import build_clip_tokenizer


def test_world_words_are_single_tokens_and_anything_tokenizes(tmp_path):
    tokenizer = build_clip_tokenizer(["red", "circle", "moving", "left"], save_directory=tmp_path)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("A red circle, moving left").input_ids)
    assert tokens == [
        "<|startoftext|>",
        "a</w>",
        "red</w>",
        "circle</w>",
        ",</w>",
        "moving</w>",
        "left</w>",
        "<|endoftext|>",
    ]
    unknown = tokenizer("zebra").input_ids
    assert tokenizer.unk_token_id not in unknown[1:-1] and len(unknown) > 3  # spelled out in characters
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert reloaded("red circle").input_ids == tokenizer("red circle").input_ids
    assert reloaded.model_max_length == 77
