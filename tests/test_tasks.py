"""Evaluation sets and scorers of the two direct tasks (p13n_utils.tasks)."""

import numpy as np
import pandas as pd
import pytest

from p13n_utils import cache, config, metrics, profiles, results, synthetic, tasks


# --------------------------------------------------------------------------- synthetic data
def _characters(n_users=6, dialogues_per_user=3, n_turns=5, seed=0):
    """PersonaChat-like dialogues: user u has facts 'fact u-0' .. 'fact u-4'; each of their
    dialogues shows 4 of them, one rephrased ("I'm" / punctuation), as in ConvAI2."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        facts = [f"i am user {u} with hobby {h}." for h in range(5)]
        for d in range(dialogues_per_user):
            shown = list(rng.choice(facts, size=4, replace=False))
            shown[0] = shown[0].replace("i am", "I'm").rstrip(".") + " !"
            turns = [(f"partner {u}-{d}-{t} ?", f"reply of user {u} in {d} turn {t} .") for t in range(n_turns)]
            rows.append({"dialogue_id": len(rows), "persona": shown, "turns": turns, "truth": u})
    order = rng.permutation(len(rows))   # interleave the users
    frame = pd.DataFrame([rows[i] for i in order]).reset_index(drop=True)
    frame["dialogue_id"] = np.arange(len(frame))
    return frame


@pytest.fixture
def lm_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"


# --------------------------------------------------------------------------- users
def test_user_ids_recover_the_characters_despite_rephrasing():
    dialogues = _characters()
    ids = profiles.personachat_user_ids(dialogues)
    assert ids.nunique() == 6
    truth = dialogues["truth"]
    assert all(ids[truth == u].nunique() == 1 for u in range(6))   # one id per character
    assert ids.iloc[0] == 0 and ids.is_monotonic_increasing is False


def test_one_shared_fact_does_not_merge_users():
    dialogues = pd.DataFrame({"dialogue_id": [0, 1], "persona": [["i like tea.", "i am tall."],
                                                               ["i like tea.", "i am short."]],
                              "turns": [[("a", "b")], [("c", "d")]]})
    assert profiles.personachat_user_ids(dialogues).tolist() == [0, 1]
    assert profiles.personachat_user_ids(dialogues, min_shared=1).tolist() == [0, 0]


def test_normalize_fact():
    assert profiles.normalize_fact("I'm a  Nurse , really!") == "i am a nurse really"


# --------------------------------------------------------------------------- PersonaChat eval set
def test_personachat_eval_set_is_seeded_and_holds_out_the_last_turns():
    dialogues = _characters()
    ev = tasks.personachat_eval_set(dialogues, n_users=4, dialogues_per_user=2, seed=3)
    again = tasks.personachat_eval_set(dialogues, n_users=4, dialogues_per_user=2, seed=3)
    other = tasks.personachat_eval_set(dialogues, n_users=4, dialogues_per_user=2, seed=4)
    pd.testing.assert_frame_equal(ev.test, again.test)
    assert not ev.test["dialogue_id"].equals(other.test["dialogue_id"])
    assert len(ev.users) == 4 and len(ev.test) == 8 and len(ev.val) == 8
    assert ev.test.groupby("user_id").size().eq(2).all()
    assert (ev.test["turn"] == 4).all() and (ev.val["turn"] == 3).all()
    # no held-out reply is in the training turns; the held-out dialogues lost exactly 2 turns
    train_replies = {s for turns in ev.train["turns"] for _, s in turns}
    assert not train_replies & set(ev.test["reply"]) and not train_replies & set(ev.val["reply"])
    held = ev.train[ev.train["dialogue_id"].isin(ev.test["dialogue_id"])]
    assert held["turns"].map(len).eq(3).all()
    assert ev.train["turns"].map(len).sum() == dialogues["turns"].map(len).sum() - 16
    # the test row sees the val turn in its history
    row = ev.test.iloc[0]
    val_row = ev.val[ev.val["dialogue_id"] == row["dialogue_id"]].iloc[0]
    assert row["history"][-1] == (val_row["partner"], val_row["reply"])


def test_user_facts_merge_rephrasings_and_unknown_user():
    ev = tasks.personachat_eval_set(_characters(), seed=0)
    facts = ev.facts_of(int(ev.test["user_id"].iloc[0]))
    assert 4 <= len(facts) <= 5       # the 5 facts of the character, rephrasings merged
    assert len({profiles.normalize_fact(f) for f in facts}) == len(facts)
    with pytest.raises(KeyError, match="cold-start"):
        ev.facts_of(999)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_users=0), "n_users"), (dict(n_users=99), "only 6 users"),
    (dict(dialogues_per_user=0), "dialogues_per_user"), (dict(n_test_turns=3, n_val_turns=2), "no dialogue"),
])
def test_personachat_eval_set_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.personachat_eval_set(_characters(), **kwargs)


# --------------------------------------------------------------------------- scoring helpers
def test_per_user_nll_pools_tokens_and_record_ppl(monkeypatch):
    scores = pd.DataFrame({"user_id": [1, 1, 2], "logprob_sum": [-2.0, -4.0, -3.0], "n_tokens": [1, 2, 3]})
    nll = tasks.per_user_nll(scores)
    assert nll.to_dict() == {1: 2.0, 2: 1.0}
    monkeypatch.delenv("P13N_RESULTS", raising=False)
    row = results.record_ppl("t", "global", "m", nll, n_resamples=200)
    assert row["value"] == pytest.approx(np.exp(1.5)) and row["n"] == 2
    assert np.exp(1.0) <= row["lower"] <= row["value"] <= row["upper"] <= np.exp(2.0)
    results.clear()
    with pytest.raises(KeyError, match="score_personachat"):
        tasks.per_user_nll(scores.drop(columns="user_id"))


def test_paired_difference():
    a = pd.Series([1.0, 2.0, 3.0, 4.0], index=[1, 2, 3, 4])
    b = (a + 0.5).iloc[::-1]          # same users, another order: pairing is by index
    out = results.paired_difference(a, b, n_resamples=200)
    assert out["mean"] == pytest.approx(-0.5) and out["lower"] == pytest.approx(-0.5)
    assert out["share_a_lower"] == 1.0 and out["n"] == 4
    with pytest.raises(ValueError, match="same users"):
        results.paired_difference(a, b.iloc[:3])


def test_context_with_fallback_cold_start():
    assert tasks.context_with_fallback(["mine"], ["group"]) == (["mine"], "user")
    assert tasks.context_with_fallback([], ["group"]) == (["group"], "persona")
    assert tasks.context_with_fallback(None, None) == (None, "global")


# --------------------------------------------------------------------------- MovieLens
def test_rating_eval_set_is_temporal_and_disjoint():
    ml = synthetic.movielens(n_users=30, n_items=60, seed=1)
    ev = tasks.movielens_rating_eval_set(ml, n_users=10, n_per_user=3, seed=0)
    assert len(ev.users) == 10 and len(ev.test) == 30 and len(ev.val) == 30
    assert set(ev.test["user_id"]) == set(ev.val["user_id"]) == set(ev.users)
    for user in ev.users:
        hist = ev.history(user)
        test = ev.test[ev.test["user_id"] == user]
        val = ev.val[ev.val["user_id"] == user]
        assert hist["timestamp"].max() <= test["timestamp"].min()
        assert not set(hist["item_id"]) & set(test["item_id"])
        assert set(val["item_id"]) <= set(hist["item_id"])            # val is part of the history
        before_val = ev.history(user, before="val")
        assert not set(before_val["item_id"]) & set(val["item_id"])
        assert len(before_val) == len(hist) - 3
    again = tasks.movielens_rating_eval_set(ml, n_users=10, n_per_user=3, seed=0)
    pd.testing.assert_frame_equal(ev.test, again.test)


def test_rating_eval_set_bad_input_and_unknown_user():
    ml = synthetic.movielens(n_users=30, n_items=60, seed=1)
    ev = tasks.movielens_rating_eval_set(ml, n_users=5, seed=0)
    with pytest.raises(KeyError, match="cold-start"):
        ev.history(10_000)
    with pytest.raises(ValueError, match="before"):
        ev.history(int(ev.users[0]), before="future")
    with pytest.raises(ValueError, match="n_users"):
        tasks.movielens_rating_eval_set(ml, n_users=10_000)


def test_rating_errors_checks_lengths():
    pairs = pd.DataFrame({"user_id": [1, 1, 2], "rating": [4.0, 2.0, 5.0]})
    err = metrics.rating_errors(pairs, [3.0, 3.0, 5.0])
    assert err.set_index("user")["mae"].to_dict() == {1: 1.0, 2: 0.0}
    with pytest.raises(ValueError, match="predictions"):
        metrics.rating_errors(pairs, [3.0])


def test_record_rating_errors_rmse_is_the_root_of_the_mean_squared_error():
    results.clear()
    pairs = pd.DataFrame({"user_id": [1, 2, 3], "rating": [4.0, 2.0, 5.0]})  # one rating per user
    err = metrics.rating_errors(pairs, [3.0, 4.0, 5.0])                          # errors 1, 2, 0
    rows = results.record_rating_errors("movielens-rating", "global", "m", err, n_resamples=200)
    assert rows["mae"]["value"] == pytest.approx(1.0)
    assert rows["rmse"]["value"] == pytest.approx(np.sqrt(5 / 3))           # not the MAE again
    assert rows["rmse"]["lower"] <= rows["rmse"]["value"] <= rows["rmse"]["upper"]
    assert [r["metric"] for r in results.rows()] == ["mae", "rmse"]
    assert rows["mae"]["set"] == rows["rmse"]["set"] == results.set_id("movielens-rating", [1, 2, 3])
    kept = results.user_values().set_index(["metric", "user"])["value"]
    assert kept["mae"].to_dict() == {1: 1.0, 2: 2.0, 3: 0.0} and kept["rmse"].to_dict() == {1: 1.0, 2: 4.0, 3: 0.0}
    results.clear()


# --------------------------------------------------------------------------- with the real LM
def test_scoring_and_rating_with_the_default_model(lm_cache):
    from p13n_utils import generation, models

    model, tok = models.load_lm()
    ev = tasks.personachat_eval_set(_characters(n_users=2, dialogues_per_user=1), seed=0)
    scores = tasks.score_personachat(model, tok, ev.test, batch_size=2)
    direct = generation.score(model, tok, tasks.personachat_prompts(tok, ev.test), list(ev.test["reply"]),
                              progress=False)
    np.testing.assert_allclose(scores["logprob_sum"], direct["logprob_sum"], rtol=1e-5)
    assert list(scores["user_id"]) == list(ev.test["user_id"])
    assert any(lm_cache.glob("lm/score-*.json"))
    cached = tasks.score_personachat(model, tok, ev.test)         # from the cache, same numbers
    pd.testing.assert_frame_equal(scores, cached)
    with_facts = tasks.score_personachat(model, tok, ev.test, context_fn=lambda r: r["persona"], cache=False)
    assert not np.allclose(with_facts["logprob_sum"], scores["logprob_sum"])

    ml = synthetic.movielens(n_users=12, n_items=40, seed=2)
    rev = tasks.movielens_rating_eval_set(ml, n_users=2, n_per_user=2, seed=0)
    texts = tasks.rating_prompts(tok, rev.test, rev.movies)
    expected, probs = tasks.predict_ratings(model, tok, texts)
    assert expected.shape == (4,) and probs.shape == (4, 5)
    assert np.allclose(probs.sum(axis=1), 1) and ((expected >= 1) & (expected <= 5)).all()
    np.testing.assert_allclose(tasks.predict_ratings(model, tok, texts, cache=False)[0], expected, rtol=1e-6)


def test_fingerprint_changes_with_the_weights():
    import torch

    model = torch.nn.Linear(3, 2)
    model.config = type("C", (), {"_name_or_path": "tiny"})()
    before = cache.fingerprint(model)
    assert cache.fingerprint(model) == before
    with torch.no_grad():
        model.weight[0, 0] += 0.5
    assert cache.fingerprint(model) != before


def test_per_user_loss_is_nll_for_dialogue_and_mae_for_ratings():
    scores = pd.DataFrame({"user_id": [1, 1, 2], "logprob_sum": [-2.0, -4.0, -3.0], "n_tokens": [2, 4, 1]})
    assert tasks.per_user_loss(scores, "personachat").to_dict() == {1: 1.0, 2: 3.0}
    frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "rating": [4.0, 2.0, 3.0],
                          "pred": [3.0, 3.0, 3.5]})
    assert tasks.per_user_loss(frame, "movielens-rating").to_dict() == {1: 1.0, 2: 0.5}
    with pytest.raises(ValueError, match="unknown task"):
        tasks.per_user_loss(frame, "lamp")
