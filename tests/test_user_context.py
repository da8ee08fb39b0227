"""User-level context builders (p13n_utils.user_context) on small synthetic data."""

import json

import numpy as np
import pandas as pd
import pytest

from p13n_utils import config, prompts, retrieval, synthetic, tasks
from p13n_utils import user_context as uc


class PlainTokenizer:
    """No chat template: chat_prompt falls back to a plain 'User: ... Assistant:' layout."""

    chat_template = None


def _characters(n_users=6, dialogues_per_user=3, n_turns=6, seed=0):
    """PersonaChat-like dialogues: user u has facts 'i am user u with hobby h.'; each dialogue
    shows 4 of them; replies name their user, dialogue and turn."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        facts = [f"i am user {u} with hobby {h}." for h in range(5)]
        for d in range(dialogues_per_user):
            turns = [(f"partner {u}-{d}-{t} ?", f"reply u{u} d{d} t{t} .") for t in range(n_turns)]
            rows.append({"persona": list(rng.choice(facts, size=4, replace=False)), "turns": turns})
    frame = pd.DataFrame([rows[i] for i in rng.permutation(len(rows))]).reset_index(drop=True)
    frame.insert(0, "dialogue_id", np.arange(len(frame)))
    return frame


@pytest.fixture(scope="module")
def pc():
    return tasks.personachat_eval_set(_characters(), n_users=None, dialogues_per_user=2, seed=0)


@pytest.fixture(scope="module")
def rating():
    ml = synthetic.movielens(n_users=30, n_items=60, seed=1)
    return tasks.movielens_rating_eval_set(ml, n_users=10, n_per_user=2, seed=0)


# --------------------------------------------------------------------------- which items
def test_evaluated_users_are_seeded_sorted_and_nested():
    users = np.arange(100, 150)
    small, big = uc.evaluated_users(users, 5, seed=3), uc.evaluated_users(users, 20, seed=3)
    assert list(small) == sorted(small) and len(small) == 5 and set(small) <= set(big)
    assert list(uc.evaluated_users(users, 5, seed=3)) == list(small)
    assert list(uc.evaluated_users(users, None)) == list(users)
    assert list(uc.evaluated_users(users, 500)) == list(users)
    with pytest.raises(ValueError, match=">= 1"):
        uc.evaluated_users(users, 0)


def test_pc_items_take_val_and_test_from_the_same_first_dialogue(pc):
    users = pc.users[:3]
    val, test = uc.pc_items(pc, users, dialogues_per_user=1)
    assert sorted(test["user_id"]) == sorted(users) and len(test) == 3
    assert set(val["dialogue_id"]) == set(test["dialogue_id"])
    for user, dialogue in zip(test["user_id"], test["dialogue_id"]):
        assert dialogue == pc.test.loc[pc.test["user_id"] == user, "dialogue_id"].min()
    _, both = uc.pc_items(pc, users, dialogues_per_user=None)
    assert len(both) == 6
    with pytest.raises(KeyError, match="not evaluated users"):
        uc.pc_items(pc, [999])


def test_ml_items_keep_each_users_first_held_out_ratings(rating):
    users = rating.users[:4]
    val, test = uc.ml_items(rating, users, ratings_per_user=1)
    assert sorted(test["user_id"]) == sorted(users) and len(val) == 4
    for user, time in zip(test["user_id"], test["timestamp"]):
        assert time == rating.test.loc[rating.test["user_id"] == user, "timestamp"].min()
    assert len(uc.ml_items(rating, users, None)[1]) == 8
    with pytest.raises(KeyError, match="not evaluated users"):
        uc.ml_items(rating, [10_000])


# --------------------------------------------------------------------------- contexts
def test_pc_facts_and_replies_are_the_users_own_and_never_held_out(pc):
    user = int(pc.users[0])
    facts = uc.pc_facts(pc, user)
    character = facts[0].split()[3]  # "i am user <c> with hobby <h>."
    assert all(f"user {character} " in fact for fact in facts)
    replies = uc.pc_replies(pc, user)
    assert replies and all(r.startswith(f"reply u{character} ") for r in replies)
    held_out = set(pc.val["reply"]) | set(pc.test["reply"])
    assert not held_out & set(replies)
    with pytest.raises(KeyError, match="unknown PersonaChat user"):
        uc.pc_facts(pc, 999)
    with pytest.raises(KeyError):
        uc.pc_replies(pc, 999)


@pytest.mark.parametrize("seed", range(20))
def test_derangement_moves_everybody(seed):
    users = list(range(7))
    mapping = uc.derangement(users, seed=seed)
    assert sorted(mapping) == users and sorted(mapping.values()) == users
    assert all(mapping[u] != u for u in users)
    assert mapping == uc.derangement(users, seed=seed)


def test_derangement_needs_two_users():
    assert uc.derangement([4, 9]) == {4: 9, 9: 4}
    with pytest.raises(ValueError, match="at least 2"):
        uc.derangement([1])


def test_ml_history_lines_are_the_latest_ratings_before_the_split(rating):
    user = int(rating.users[0])
    before_test = rating.history(user, "test")
    lines = uc.ml_history_lines(rating, user, "test", m=3)
    titles = prompts.movie_descriptions(rating.movies, before_test["item_id"].tail(3), genres=False)
    assert lines == [prompts.rating_line(t, r) for t, r in zip(titles, before_test["rating"].tail(3))]
    val_items = set(rating.val.loc[rating.val["user_id"] == user, "item_id"])
    val_titles = set(prompts.movie_descriptions(rating.movies, list(val_items), genres=False))
    assert not any(line.rsplit(":", 1)[0] in val_titles for line in uc.ml_history_lines(rating, user, "val", m=None))
    assert len(uc.ml_history_lines(rating, user, "test", m=None)) == len(before_test)
    with pytest.raises(KeyError, match="unknown MovieLens user"):
        uc.ml_history_lines(rating, 10_000)


def test_movie_descriptions_with_and_without_genres(rating):
    item = int(rating.movies["item_id"].iloc[0])
    with_genres, short = (prompts.movie_descriptions(rating.movies, [item], g)[0] for g in (True, False))
    assert short in with_genres or with_genres.startswith(short[:-1])
    assert prompts.movie_descriptions(rating.movies, [-5]) == ["movie #-5"]


# --------------------------------------------------------------------------- profiles
def test_summary_prompts_carry_the_data_and_refuse_cold_start(pc, rating):
    tok = PlainTokenizer()
    user = int(pc.users[0])
    text = prompts.pc_summary_prompt(tok, uc.pc_facts(pc, user), uc.pc_replies(pc, user), n_replies=2)
    assert all(fact in text for fact in uc.pc_facts(pc, user))
    assert text.count('said: "') == 2 and text.endswith(prompts.PC_SUMMARY_PREFIX)
    with pytest.raises(ValueError, match="cold start"):
        prompts.pc_summary_prompt(tok, [], [])
    ml_user = int(rating.users[0])
    lines = uc.ml_summary_lines(rating, ml_user, before="val", n_best=2, n_worst=2)
    text = prompts.ml_summary_prompt(tok, lines)
    assert len(lines) == 4 and text.count("\n- ") == 4 and text.endswith(prompts.ML_SUMMARY_PREFIX)
    with pytest.raises(ValueError, match="cold start"):
        prompts.ml_summary_prompt(tok, [])
    val_titles = prompts.movie_descriptions(rating.movies, rating.val.loc[rating.val["user_id"] == ml_user, "item_id"])
    assert not any(title in text for title in val_titles)


def test_profile_summaries_generate_once_and_cache_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    calls = []

    def fake_generate(texts):
        calls.append(list(texts))
        return [f"'m person {t[-1]}. I like tea. I like tea." for t in texts]

    requests = {1: "prompt A", 2: "prompt B"}
    first = uc.profile_summaries(None, None, requests, "unit", prefix="I", generate_fn=fake_generate)
    assert first == {1: "I'm person A. I like tea.", 2: "I'm person B. I like tea."}
    files = list((tmp_path / "profiles").iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"
    assert json.loads(files[0].read_text())[0] == "'m person A. I like tea. I like tea."  # raw text kept

    def must_not_run(texts):
        raise AssertionError("the cached summaries should have been used")

    assert uc.profile_summaries(None, None, requests, "unit", prefix="I", generate_fn=must_not_run) == first
    uc.profile_summaries(None, None, {1: "prompt C"}, "unit", prefix="I", generate_fn=fake_generate)
    assert len(calls) == 2 and len(list((tmp_path / "profiles").iterdir())) == 2
    uc.profile_summaries(None, None, requests, "unit", generate_fn=fake_generate, cache=False)
    assert len(calls) == 3
    with pytest.raises(ValueError, match="no requests"):
        uc.profile_summaries(None, None, {}, "unit", generate_fn=fake_generate)
    with pytest.raises(RuntimeError, match="returned 1 texts"):
        uc.profile_summaries(None, None, requests, "other", generate_fn=lambda t: ["x"], cache=False)


def test_clean_summary_drops_loops_and_keeps_two_sentences():
    assert uc.clean_summary("I am a nurse.  I am a nurse. I love dogs! I am tall.") == "I am a nurse. I love dogs!"
    assert len(uc.clean_summary("word " * 200)) <= 303


# --------------------------------------------------------------------------- refinement
def test_restrict_to_items_keeps_the_items_order_and_names_missing_ones():
    scores = pd.DataFrame({"dialogue_id": [3, 1, 2], "turn": [5, 5, 5], "nll": [3.0, 1.0, 2.0]})
    items = pd.DataFrame({"dialogue_id": [2, 3], "turn": [5, 5], "user_id": [11, 12]})
    out = uc.restrict_to_items(scores, items, ["dialogue_id", "turn"])
    assert out.columns.tolist() == ["dialogue_id", "turn", "nll"] and out["nll"].tolist() == [2.0, 3.0]
    with pytest.raises(KeyError, match="1 of 2 items have no row"):
        uc.restrict_to_items(scores.iloc[1:], items, ["dialogue_id", "turn"])
    with pytest.raises(pd.errors.MergeError):  # two rows for one item
        uc.restrict_to_items(pd.concat([scores, scores]), items, ["dialogue_id", "turn"])


def test_compose_choice_takes_each_users_chosen_candidate():
    items = pd.DataFrame({"dialogue_id": [1, 2, 3], "turn": [5, 5, 5], "user_id": [10, 11, 12]})
    a = items.assign(nll=[1.0, 1.0, 1.0])
    b = items.assign(nll=[2.0, 2.0, 2.0])
    only_12 = items.iloc[[2]].assign(nll=[3.0])
    choice = pd.Series({10: "a", 11: "b", 12: "c"})
    out = uc.compose_choice(choice, {"a": a, "b": b, "c": only_12}, items, ["dialogue_id", "turn"])
    assert out["nll"].tolist() == [1.0, 2.0, 3.0]
    assert out["choice"].tolist() == ["a", "b", "c"] and out["user_id"].tolist() == [10, 11, 12]
    with pytest.raises(KeyError, match="no choice for users"):
        uc.compose_choice(choice.drop(12), {"a": a, "b": b}, items, ["dialogue_id", "turn"])
    with pytest.raises(KeyError, match="has no results"):
        uc.compose_choice(choice, {"a": a, "b": b}, items, ["dialogue_id", "turn"])
    with pytest.raises(KeyError, match="no result for their chosen candidate"):
        uc.compose_choice(choice, {"a": a, "b": b, "c": only_12.iloc[:0]}, items, ["dialogue_id", "turn"])


def test_refinement_selects_on_validation_losses():
    val = pd.DataFrame({"none": [3.0, 2.0], "contextual": [2.5, 2.2], "profile": [2.8, 1.9]}, index=[7, 8])
    assert uc.select_per_user(val).to_dict() == {7: "contextual", 8: "profile"}


# --------------------------------------------------------------------------- cold start
def test_with_fallback_goes_user_then_persona_then_global():
    lines, header, level = uc.with_fallback(["i like tea."], ["tea lovers"])
    assert (lines, header, level) == (["i like tea."], prompts.HEADERS["user"], "user")
    lines, header, level = uc.with_fallback([], ["tea lovers"])
    assert (lines, header, level) == (["tea lovers"], prompts.HEADERS["persona"], "persona")
    lines, header, level = uc.with_fallback(None, None)
    assert lines is None and level == "global"
    assert prompts.context_block(lines, header) == ""


# --------------------------------------------------------------------------- RAG corpora
def test_pc_corpus_holds_facts_and_earlier_turns_but_no_held_out_or_shown_turn(pc):
    row = pc.test.iloc[0]
    texts, times = uc.pc_corpus(pc, row, n_history=2)
    facts = uc.pc_facts(pc, row["user_id"])
    assert texts[:len(facts)] == facts
    assert list(times) == list(range(len(texts)))
    shown = {reply for _, reply in row["history"][-2:]}
    held_out = set(pc.val["reply"]) | set(pc.test["reply"])
    assert not (shown | held_out) & set(texts)
    earlier = [reply for _, reply in row["history"][:-2]]
    assert texts[-len(earlier):] == earlier  # the current dialogue's earlier replies are the most recent
    others = pc.train[(pc.train["user_id"] == row["user_id"]) & (pc.train["dialogue_id"] != row["dialogue_id"])]
    assert all(reply in texts for turns in others["turns"] for _, reply in turns)
    newest = retrieval.retrieve("recency", row["partner"], texts, 1, times=times)
    assert texts[newest[0]] == earlier[-1]


def test_ml_corpus_matches_genres_but_shows_short_lines(rating):
    user = int(rating.users[0])
    documents, lines, times = uc.ml_corpus(rating, user, before="val")
    history = rating.history(user, "val")
    assert len(documents) == len(lines) == len(times) == len(history)
    assert np.array_equal(times, history["timestamp"].to_numpy(dtype=float))
    assert all(line.rsplit(":", 1)[0] in doc or doc.startswith(line.rsplit(" (", 1)[0])
               for doc, line in zip(documents, lines))
    assert any(";" in doc for doc in documents) and not any(";" in line for line in lines)


def test_ranked_context_serves_each_items_top_k_lines():
    items = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 20]})
    fn = uc.ranked_context(items, ["user_id", "item_id"], [["a", "b", "c"], ["x", "y"]], k=2)
    assert fn(items.iloc[0]) == ["a", "b"] and fn(items.iloc[1]) == ["x", "y"]
    assert uc.ranked_context(items, ["user_id", "item_id"], [["a"], ["x"]], k=0)(items.iloc[0]) == []
