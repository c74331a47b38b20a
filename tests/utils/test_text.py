import pytest

from harivo.utils.text import subject_token_weights, subject_words
from harivo.utils.tokenizer import build_clip_tokenizer


def test_subject_words_are_the_noun_phrase_before_the_verb_or_preposition():
    assert subject_words("a large red circle moving left on a striped black background") == ["large", "red", "circle"]
    assert subject_words("A dog, running on the beach") == ["dog"]
    assert subject_words("the red car") == ["red", "car"]
    assert subject_words("on a plain background") == ["plain", "background"]  # no noun phrase first: the rest


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    words = ["red", "circle", "moving", "left", "on", "background", "blue", "large"]
    return build_clip_tokenizer(words, save_directory=tmp_path_factory.mktemp("tokenizer"))


def test_subject_tokens_are_marked_once_each(tokenizer):
    prompts = ["a large red circle moving left on a red background", "a red zebra moving left"]
    weights = subject_token_weights(tokenizer, prompts)
    assert weights.shape == (2, tokenizer.model_max_length)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(prompts[0]).input_ids)
    marked = [token for token, weight in zip(tokens, weights[0]) if weight]
    assert marked == ["large</w>", "red</w>", "circle</w>"]  # the background's "red" is not the subject's
    spelled = len(tokenizer("zebra", add_special_tokens=False).input_ids)
    assert weights[1].sum() == 1 + spelled  # "red" and every piece of the spelled-out "zebra"
    given = subject_token_weights(tokenizer, prompts[:1], ["circle"])
    assert given[0].nonzero().flatten().tolist() == [4]


@pytest.mark.parametrize("subject", ["square", "circle red", ""])
def test_a_subject_not_in_the_prompt_is_refused_in_one_line(tokenizer, subject):
    with pytest.raises(ValueError, match="not in the prompt") as error:
        subject_token_weights(tokenizer, ["a red circle moving left"], [subject])
    assert "\n" not in str(error.value)
