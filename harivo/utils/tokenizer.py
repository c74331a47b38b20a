"""Build a real `CLIPTokenizer` offline for a closed vocabulary (no download).

Every byte-level character is in the vocabulary, so any text tokenizes; the given words additionally get BPE
merges (learned by running BPE on them) that make each of them a single token.
"""

import itertools
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


def _learn_merges(words: list[list[str]]) -> list[tuple[str, str]]:
    """
    Train BPE on the words (each once) until every word is one symbol.

    Encoding replays merges by rank, so a merge order learned this way tokenizes each of the words as a single
    token; a hand-made prefix order would not (an early merge of another word can split it).
    """
    words = [[*symbols[:-1], symbols[-1] + "</w>"] for symbols in words if symbols]
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in words:
            for pair in itertools.pairwise(symbols):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, ties broken by name
        merges.append(best)
        for symbols in words:
            index = 0
            while index < len(symbols) - 1:
                if (symbols[index], symbols[index + 1]) == best:
                    symbols[index : index + 2] = [symbols[index] + symbols[index + 1]]
                index += 1


def build_clip_tokenizer(
    words: Iterable[str], save_directory: str | os.PathLike | None = None, model_max_length: int = 77
) -> CLIPTokenizer:
    """
    Build a CLIP BPE tokenizer whose merges spell out `words`.

    Args:
        words (`Iterable[str]`): The vocabulary of the world (lower-case words; punctuation is fine).
        save_directory (`str` or `os.PathLike`, *optional*): Save the tokenizer there (`save_pretrained`).
        model_max_length (`int`, defaults to 77): Padded prompt length (77 as Stable Diffusion's).

    Returns:
        `CLIPTokenizer`: The tokenizer.
    """
    table = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for symbol in [*table.values(), *(c + "</w>" for c in table.values())]:
        vocab.setdefault(symbol, len(vocab))
    merges = _learn_merges([[table[b] for b in word.encode("utf-8")] for word in sorted({w.lower() for w in words})])
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for token in SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    if save_directory is not None:
        tokenizer.save_pretrained(save_directory)
    return tokenizer
