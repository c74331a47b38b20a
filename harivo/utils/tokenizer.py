"""Build a real `CLIPTokenizer` offline for a closed vocabulary (no download).

Every byte-level character is in the vocabulary, so any text tokenizes; the given words additionally get BPE
merges that make each of them (usually) a single token.
"""

import os
from collections.abc import Iterable

from transformers import CLIPTokenizer

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-to-unicode table: printable stand-ins for all 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def build_clip_tokenizer(words: Iterable[str], save_directory: str | os.PathLike | None = None) -> CLIPTokenizer:
    """
    Build a CLIP BPE tokenizer whose merges spell out `words`.

    Args:
        words (`Iterable[str]`): The vocabulary of the world (lower-case words; punctuation is fine).
        save_directory (`str` or `os.PathLike`, *optional*): Save the tokenizer there (`save_pretrained`).

    Returns:
        `CLIPTokenizer`: A tokenizer with `model_max_length` 77, as Stable Diffusion's.
    """
    table = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for symbol in [*table.values(), *(c + "</w>" for c in table.values())]:
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in sorted({w.lower() for w in words if w.strip()}):
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        merged = symbols[0]
        for symbol in symbols[1:]:
            rule = (merged, symbol)
            if rule not in merges:
                merges.append(rule)
            merged += symbol
            vocab.setdefault(merged, len(vocab))
    for token in SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    if save_directory is not None:
        tokenizer.save_pretrained(save_directory)
    return tokenizer
