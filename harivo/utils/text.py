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


def substitute_tokens(
    tokenizer: CLIPTokenizer, ids: torch.Tensor, probability: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """
    Token ids `(B, L)` with each word token (not the start, end or padding tokens) replaced, with `probability`, by a
    random token of the tokenizer's vocabulary: a caption augmentation that teaches a text head to read the words
    that matter to it whatever the words around them are [ours].

    Args:
        tokenizer (`CLIPTokenizer`): The tokenizer `ids` come from (its vocabulary and special tokens).
        ids (`torch.Tensor`): Token ids `(B, L)`, e.g. from `tokenize_captions`.
        probability (`float`): Chance that a word token is replaced, in `[0, 1]`.
        generator (`torch.Generator`, *optional*): Random source.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"`probability` must be in [0, 1], got {probability}.")
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=ids.dtype)
    words = ~torch.isin(ids, special)
    chosen = words & (torch.rand(ids.shape, generator=generator) < probability)
    vocabulary = torch.tensor([i for i in range(len(tokenizer)) if i not in set(special.tolist())], dtype=ids.dtype)
    replaced = ids.clone()
    replaced[chosen] = vocabulary[torch.randint(len(vocabulary), (int(chosen.sum()),), generator=generator)]
    return replaced


# Words that end the subject of a prompt such as "a red car driving left on a wet road" (the verb or preposition
# after the noun phrase), and articles, which name nothing.
_SUBJECT_END = frozenset(
    "is are was moving moves move walking walks running runs flying flies swimming swims rolling rolls jumping jumps"
    " driving drives going goes sliding slides falling falls rising rises floating floats dancing dances spinning"
    " turning travelling traveling bouncing on in at over under across through along into onto from with near above"
    " below beside behind against to toward towards while and , .".split()
)
_ARTICLES = frozenset({"a", "an", "the"})


def _words(prompt: str) -> list[str]:
    """A prompt's lower-case words, with commas and full stops as words of their own."""
    return prompt.replace(",", " , ").replace(".", " . ").lower().split()


def subject_words(prompt: str) -> list[str]:
    """The words naming what a prompt is about: the words before its first verb or preposition, articles left out
    ("a large red circle moving left on a striped background" -> `["large", "red", "circle"]`)."""
    words = _words(prompt)
    end = next((i for i, word in enumerate(words) if i > 0 and word in _SUBJECT_END), len(words))
    subject = [word for word in words[:end] if word not in _ARTICLES and word not in _SUBJECT_END]
    return subject or [word for word in words if word not in _ARTICLES]


# Prepositions that say where the subject is: the words after the first of them name the scene.
_PLACE = frozenset("on in at over under across through along near above below beside behind against".split())


def scene_words(prompt: str) -> list[str]:
    """The words naming where the subject is: those after the first place preposition that follows the subject,
    articles and verbs left out ("a red circle moving left on a striped black background" -> `["striped", "black",
    "background"]`); `[]` when the prompt names no place."""
    words = _words(prompt)
    start = next((i for i, word in enumerate(words) if i > 0 and word in _PLACE), len(words))
    return [word for word in words[start + 1 :] if word not in _ARTICLES and word not in _SUBJECT_END]


def _mark(tokenizer, ids: torch.Tensor, weights: torch.Tensor, row: int, words: list[str], value: float) -> list[str]:
    """Set `weights[row]` to `value` on each word's first tokens after the previous word's (skipping tokens already
    marked: "red" of "a red car on a red road" is the car's, then the road's); the words not found."""
    cursor, missing = 1, []
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False).input_ids
        starts = [
            start
            for start in range(cursor, ids.shape[1] - len(pieces) + 1)
            if ids[row, start : start + len(pieces)].tolist() == pieces
            and not weights[row, start : start + len(pieces)].any()
        ]
        if not starts:
            missing.append(word)
            continue
        weights[row, starts[0] : starts[0] + len(pieces)] = value
        cursor = starts[0] + len(pieces)
    return missing


def subject_token_weights(
    tokenizer: CLIPTokenizer,
    prompts: list[str],
    subjects: list[str] | None = None,
    scenes: list[str] | None = None,
) -> torch.Tensor:
    """
    `(B, L)` weights of each prompt's tokens: 1 on the tokens of its subject, -1 on those of its scene, 0 elsewhere
    (start, end and padding tokens included), `L` the tokenizer's length. The attention paid to these weights is
    where the subject is, less where the scene is: a textured background that the subject's words also attend to
    ("small", "green" on stripes) does not count as the subject [ours].

    Args:
        tokenizer (`CLIPTokenizer`): The tokenizer the prompts are encoded with.
        prompts (`list[str]`): The prompts.
        subjects (`list[str]`, *optional*): Per prompt, the words naming what moves (e.g. `"red circle"`); each
            must occur in its prompt's tokens (the first `tokenizer.model_max_length - 2`, the words the text
            encoder reads). Default: `subject_words(prompt)`, those of its words that the text encoder reads.
        scenes (`list[str]`, *optional*): Per prompt, the words naming what stands still (e.g. `"striped
            background"`), each in its prompt after the subject's, or `""` for none. Default: `scene_words(prompt)`,
            those of its words that the text encoder reads.

    Raises:
        `ValueError`: A given subject or scene does not occur in its prompt's tokens, or the text encoder reads none
            of the default subject's words.
    """
    ids = tokenize_captions(tokenizer, prompts)
    weights = torch.zeros(ids.shape, dtype=torch.float32)
    for row, prompt in enumerate(prompts):
        # words found by default may lie past the text encoder's length, which cuts the prompt: those name nothing
        words = subject_words(prompt) if subjects is None else subjects[row].lower().split()
        missing = _mark(tokenizer, ids, weights, row, words, 1.0)
        if (missing and subjects is not None) or len(missing) == len(words):
            raise ValueError(
                f"The motion subject {' '.join(words)!r} is not among the first {ids.shape[1] - 2} tokens of the"
                f" prompt {prompt!r} (in order), which the text encoder reads; name words of the prompt as the motion"
                ' subject, e.g. "red circle".'
            )
        scene = scene_words(prompt) if scenes is None else scenes[row].lower().split()
        if _mark(tokenizer, ids, weights, row, scene, -1.0) and scenes is not None:
            raise ValueError(
                f"The motion scene {' '.join(scene)!r} is not among the first {ids.shape[1] - 2} tokens of the prompt"
                f" {prompt!r} apart from its subject (in order), which the text encoder reads; name words of the"
                ' prompt as the motion scene, e.g. "striped background", or "" for none.'
            )
    return weights
