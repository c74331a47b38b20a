import pytest
import torch

from harivo.utils.text import (
    scene_words,
    subject_token_weights,
    subject_words,
    substitute_tokens,
    tokenize_captions,
)
from harivo.utils.tokenizer import build_clip_tokenizer


def test_subject_words_are_the_noun_phrase_before_the_verb_or_preposition():
    assert subject_words("a large red circle moving left on a striped black background") == ["large", "red", "circle"]
    assert subject_words("A dog, running on the beach") == ["dog"]
    assert subject_words("the red car") == ["red", "car"]
    assert subject_words("on a plain background") == ["plain", "background"]  # no noun phrase first: the rest


def test_scene_words_follow_the_first_place_preposition():
    assert scene_words("a large red circle moving left on a striped black background") == [
        "striped",
        "black",
        "background",
    ]
    assert scene_words("A dog, running on the beach") == ["beach"]
    assert scene_words("a car driving through a city at night") == ["city", "night"]
    assert scene_words("the red car") == [] and scene_words("on a plain background") == []


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    words = ["red", "circle", "moving", "left", "on", "background", "blue", "large"]
    return build_clip_tokenizer(words, save_directory=tmp_path_factory.mktemp("tokenizer"))


def test_subject_tokens_are_marked_once_each(tokenizer):
    prompts = ["a large red circle moving left on a red background", "a red zebra moving left"]
    weights = subject_token_weights(tokenizer, prompts)
    assert weights.shape == (2, tokenizer.model_max_length)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(prompts[0]).input_ids)
    marked = [token for token, weight in zip(tokens, weights[0]) if weight > 0]
    assert marked == ["large</w>", "red</w>", "circle</w>"]  # the background's "red" is not the subject's
    scene = [token for token, weight in zip(tokens, weights[0]) if weight < 0]
    assert scene == ["red</w>", "background</w>"]  # it is the scene's
    spelled = len(tokenizer("zebra", add_special_tokens=False).input_ids)
    assert weights[1].sum() == 1 + spelled  # "red" and every piece of the spelled-out "zebra"
    given = subject_token_weights(tokenizer, prompts[:1], ["circle"])
    assert (given[0] > 0).nonzero().flatten().tolist() == [4]


@pytest.mark.parametrize("subject", ["square", "circle red", ""])
def test_a_subject_not_in_the_prompt_is_refused_in_one_line(tokenizer, subject):
    with pytest.raises(ValueError, match="not among the first") as error:
        subject_token_weights(tokenizer, ["a red circle moving left"], [subject])
    assert "\n" not in str(error.value)


def test_default_words_past_the_text_encoders_length_are_left_out(tokenizer):
    """Words the truncated prompt lacks name nothing: a default subject or scene keeps those the encoder reads."""
    length = tokenizer.model_max_length - 2
    tail = "on a red background today " + "blue " * length + "\N{PARTY POPPER}"
    weights = subject_token_weights(tokenizer, ["a large red circle moving left " + tail])
    tokens = tokenizer.convert_ids_to_tokens(
        tokenize_captions(tokenizer, ["a large red circle moving left " + tail])[0]
    )
    assert [token for token, weight in zip(tokens, weights[0]) if weight > 0] == ["large</w>", "red</w>", "circle</w>"]
    assert [token for token, weight in zip(tokens, weights[0]) if weight < 0][:2] == ["red</w>", "background</w>"]
    adjectives = "a " + "large blue " * length + "circle"  # no verb, preposition or comma: every word is the subject
    assert (subject_token_weights(tokenizer, [adjectives])[0] > 0).sum() == length - 1  # all but "a"
    with pytest.raises(ValueError, match="not among the first"):  # words the user names must be read
        subject_token_weights(tokenizer, [adjectives], ["circle"])


def test_token_substitution_replaces_only_words_at_the_given_rate(tokenizer):
    ids = tokenize_captions(tokenizer, ["a large red circle moving left on a blue background"] * 400 + [""])
    special = torch.tensor(tokenizer.all_special_ids)
    words = ~torch.isin(ids, special)
    assert torch.equal(substitute_tokens(tokenizer, ids, 0.0), ids)
    swapped = substitute_tokens(tokenizer, ids, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(swapped[~words], ids[~words])  # start, end and padding stay; so does the empty caption
    assert not torch.isin(swapped[words], special).any()  # a word becomes a vocabulary token, never a special one
    changed = (swapped != ids)[words].float().mean().item()
    assert 0.25 < changed < 0.32  # 30 %, less the draws that picked the same token
    everything = substitute_tokens(tokenizer, ids, 1.0, torch.Generator().manual_seed(1))
    assert (everything != ids)[words].float().mean() > 0.9
    assert torch.equal(swapped, substitute_tokens(tokenizer, ids, 0.3, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_token_substitution_probability_is_checked(tokenizer, probability):
    with pytest.raises(ValueError, match=r"`probability` must be in \[0, 1\]"):
        substitute_tokens(tokenizer, tokenize_captions(tokenizer, ["a red circle"]), probability)


def test_the_scene_counts_against_the_subject_unless_given_empty(tokenizer):
    prompt = ["a large red circle moving left on a blue background"]
    default = subject_token_weights(tokenizer, prompt)
    assert torch.equal(subject_token_weights(tokenizer, prompt, scenes=["blue background"]), default)
    without = subject_token_weights(tokenizer, prompt, scenes=[""])
    assert torch.equal(without, default.clamp_min(0)) and (default < 0).sum() == 2
    only_blue = subject_token_weights(tokenizer, prompt, scenes=["blue"])
    assert (only_blue < 0).sum() == 1
    for scene in ("green background", "circle"):  # not in the prompt; the subject's own word
        with pytest.raises(ValueError, match=r"motion scene .* not among the first") as error:
            subject_token_weights(tokenizer, prompt, scenes=[scene])
        assert "\n" not in str(error.value)
