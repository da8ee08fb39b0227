"""Prompt templates: what the model sees at each rung, on a tokenizer with and without a chat
template (no model weights needed)."""

import pandas as pd
import pytest

from p13n_utils import prompts


class PlainTokenizer:
    """A tokenizer without a chat template: prompts.chat_prompt falls back to a
    'Role: text' layout, which makes the prompts easy to assert on."""

    chat_template = None


TOK = PlainTokenizer()


def test_context_block_renders_bullets_and_drops_blanks():
    assert prompts.context_block(["i like dogs.", "  ", "i am tall."], "About you:") == \
        "About you:\n- i like dogs.\n- i am tall."
    assert prompts.context_block(None, "About you:") == ""
    assert prompts.context_block([" ", ""], "About you:") == ""
    with pytest.raises(TypeError, match="wrap it"):
        prompts.context_block("i like dogs.", "About you:")


def test_personachat_prompt_global_vs_persona_differs_only_in_context():
    history = [("hi !", "hello ."), ("how are you ?", "fine , you ?"), ("good . pets ?", "a cat .")]
    plain = prompts.personachat_prompt(TOK, "what is its name ?", history)
    facts = ["i have a cat named tom.", "i am a nurse."]
    with_facts = prompts.personachat_prompt(TOK, "what is its name ?", history, facts,
                                            header=prompts.HEADERS["persona"])
    assert plain.startswith("System: " + prompts.CHAT_SYSTEM)
    assert "hi !" not in plain and "how are you ?" in plain          # last 2 turns only
    assert plain.rstrip().endswith("User: what is its name ?\nAssistant:")
    assert prompts.HEADERS["persona"] + "\n- i have a cat named tom.\n- i am a nurse." in with_facts
    block = prompts.context_block(facts, prompts.HEADERS["persona"])
    assert with_facts == plain.replace(prompts.CHAT_SYSTEM, prompts.CHAT_SYSTEM + "\n" + block)


def test_personachat_messages_roles_and_history_length():
    history = [("a", "b"), ("c", "d")]
    msgs = prompts.personachat_messages("e", history, n_history=1)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert [m["content"] for m in msgs] == ["c", "d", "e"]
    assert len(prompts.personachat_messages("e", history, n_history=0)) == 1
    assert len(prompts.personachat_messages("e", [], n_history=5)) == 1


@pytest.mark.parametrize("bad, error, match", [
    (dict(partner="  "), ValueError, "empty"),
    (dict(partner="hi", n_history=-1), ValueError, "non-negative"),
    (dict(partner="hi", history=[("only one",)]), ValueError, "pair"),
    (dict(partner=None), TypeError, "string"),
])
def test_personachat_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        prompts.personachat_messages(**bad)


def test_movie_text_and_rating_prompt():
    assert prompts.movie_text("Heat", 1995, "Action|Crime") == "Heat (1995; Action, Crime)"
    assert prompts.movie_text("Heat", None, "(no genres listed)") == "Heat"
    assert prompts.movie_text("Heat", float("nan"), None) == "Heat"
    assert prompts.rating_line("Heat (1995)", 4.0) == "Heat (1995): 4"
    zero_shot = prompts.rating_prompt(TOK, "Heat (1995)")
    assert zero_shot.startswith("System: " + prompts.RATING_SYSTEM)
    assert zero_shot.endswith("give Heat (1995)?\nAssistant:" + prompts.RATING_ANSWER_PREFIX)
    ctx = prompts.rating_prompt(TOK, "Heat (1995)", ["Favourite genres: Action"],
                                header=prompts.HEADERS["persona_ratings"])
    assert prompts.HEADERS["persona_ratings"] + "\n- Favourite genres: Action\n\nHow many" in ctx
    with pytest.raises(ValueError, match="movie_text"):
        prompts.rating_message("  ")


def test_rating_labels_are_single_tokens_of_the_default_model():
    from p13n_utils import models

    tokenizer = models.load_lm()[1]
    ids = [tokenizer.encode(c, add_special_tokens=False) for c in prompts.RATING_CANDIDATES]
    assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == 5
    real = prompts.rating_prompt(tokenizer, "Heat (1995)")
    assert real.endswith("<|im_start|>assistant\n" + prompts.RATING_ANSWER_PREFIX) and prompts.RATING_SYSTEM in real


def test_genre_persona_lines():
    assert prompts.genre_persona_lines(["Horror", "Thriller"], 3.44, 12) == [
        "Favourite genres: Horror, Thriller", "Average rating given: 3.4 stars", "Group size: 12 viewers"]
    assert prompts.genre_persona_lines([]) == []


def test_movie_text_sentence_style_and_the_movies_table():
    assert prompts.movie_text("Heat", 1995.0, "Action|Crime", style="sentences") == "Heat (1995). Genres: Action, Crime."
    assert prompts.movie_text("Heat", None, "(no genres listed)", ["heist", "la"], style="sentences") == \
        "Heat. Tags: heist, la."
    assert prompts.movie_text("Heat", 1995, "Action", ["heist"]) == "Heat (1995; Action)"   # inline: no tags
    with pytest.raises(ValueError, match="style"):
        prompts.movie_text("Heat", style="poem")
    movies = pd.DataFrame({"item_id": [1, 2], "title": ["Heat", "Alien"], "year": [1995, None],
                           "genres": ["Action|Crime", "Horror"]})
    assert prompts.movie_descriptions(movies, [2, 1, 9]) == ["Alien (Horror)", "Heat (1995; Action, Crime)", "movie #9"]
    assert prompts.movie_descriptions(movies, [1, 9], genres=False, unknown="item {item}") == ["Heat (1995)", "item 9"]
    assert prompts.movie_descriptions(movies, [1], style="sentences", tags={1: ["heist"]}) == \
        ["Heat (1995). Genres: Action, Crime. Tags: heist."]


def test_chat_prompt_without_a_template_and_bad_messages():
    assert prompts.chat_prompt(TOK, "hello", system="Be brief.") == "System: Be brief.\nUser: hello\nAssistant:"
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                    {"role": "user", "content": "ok?"}]
    assert prompts.chat_prompt(TOK, conversation).endswith("Assistant: yo\nUser: ok?\nAssistant:")
    with pytest.raises(ValueError, match="role"):
        prompts.chat_prompt(TOK, [{"text": "hi"}])


def test_rerank_prompts_share_the_profile_line():
    asks = prompts.rerank_prompts(TOK, ["Alien (1979)", "Heat (1995)"], ["Babe (1995).", "Se7en (1995)."])
    assert len(asks) == 2 and asks[0].split("Would")[0] == asks[1].split("Would")[0]
    assert "A user liked: Alien (1979); Heat (1995).\n" in asks[0] and prompts.RERANK_SYSTEM in asks[0]
