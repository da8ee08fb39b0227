"""p13n_utils.own_user: input validation, ALS fold-in, the new user's personas and a whole round
on tiny data (a random tiny Llama, a hashing embedder, synthetic MovieLens and PersonaChat)."""

import zlib

import numpy as np
import pandas as pd
import pytest

from p13n_utils import config, own_user, recsys, synthetic
from p13n_utils.own_user import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


def hashing_embed(texts, dim=32):
    """Bag of hashed words, unit norm: texts sharing words get close vectors."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in str(text).lower().replace(".", " ").replace(",", " ").split():
            out[row, zlib.crc32(word.encode()) % dim] += 1.0
    out[:, 0] += 1e-3  # no all-zero vector
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def labels():
    movies = pd.DataFrame({"item_id": [1, 2, 3, 4], "title": ["Alien", "Heat", "Heat", "Up"],
                           "year": pd.array([1979, 1986, 1995, pd.NA], dtype="Int64"),
                           "genres": ["Horror", "Drama", "Crime", "Comedy"]})
    return own_user.movie_labels(movies)


# --------------------------------------------------------------------------- input
def test_movie_labels_add_the_year_when_known(labels):
    assert labels.tolist() == ["Alien (1979)", "Heat (1986)", "Heat (1995)", "Up"]


def test_parse_facts_strips_bullets_and_blank_lines():
    assert own_user.parse_facts("- I like tea.\n\n  • I have a dog  \n") == ["I like tea.", "I have a dog"]
    assert own_user.parse_facts(["a", " ", "b"]) == ["a", "b"]


@pytest.mark.parametrize("facts, words", [("", "at least one fact"), ("\n  \n", "at least one fact"),
                                          (["x" * 10_000], "10,000 characters"),
                                          ([f"fact {i}" for i in range(own_user.MAX_FACTS + 1)], "at most")])
def test_parse_facts_rejects_bad_input_with_a_sentence(facts, words):
    with pytest.raises(InputError, match=words):
        own_user.parse_facts(facts)


def test_parse_ratings_matches_labels_bare_unique_titles_and_text(labels):
    got = own_user.parse_ratings({"alien (1979)": 4.5, "Up": "3", "Heat (1995)": 0.5}, labels)
    assert got["item_id"].tolist() == [1, 4, 3] and got["rating"].tolist() == [4.5, 3.0, 0.5]
    text = own_user.parse_ratings("Alien = 5\nHeat (1986) = 2\nAlien = 1\n", labels)
    assert dict(zip(text["item_id"], text["rating"])) == {1: 1.0, 2: 2.0}  # the last rating of a title wins


@pytest.mark.parametrize("ratings, words", [
    ({}, "at least one movie"), ("", "at least one movie"),
    ({"Aliens (1986)": 4}, "No movie 'Aliens \\(1986\\)'.*Did you mean: Alien \\(1979\\)"),
    ({"Zzzz": 4}, "No movie 'Zzzz'"),
    ({"Heat": 4}, "several movies.*Heat \\(1986\\); Heat \\(1995\\)"),
    ({"Up": 6}, "from 0.5 to 5.0"), ({"Up": 0}, "from 0.5 to 5.0"), ({"Up": float("nan")}, "from 0.5"),
    ({"Up": "great"}, "not a number"), ("Up 4", "Title \\(year\\) = stars"),
])
def test_parse_ratings_rejects_bad_input_with_a_sentence(labels, ratings, words):
    with pytest.raises(InputError, match=words):
        own_user.parse_ratings(ratings, labels)


def test_parse_message_and_search(labels):
    assert own_user.parse_message("  hi  ") == "hi"
    for bad in ("", "   ", None, "x" * (own_user.MAX_MESSAGE_CHARS + 1)):
        with pytest.raises(InputError):
            own_user.parse_message(bad)
    assert own_user.search_titles(labels, "heat") == ["Heat (1986)", "Heat (1995)"]
    assert own_user.search_titles(labels, "Alein (1979)") == ["Alien (1979)"]  # a close spelling
    assert own_user.search_titles(labels, " ") == []


# --------------------------------------------------------------------------- ALS fold-in
@pytest.fixture(scope="module")
def als_fit():
    ratings = synthetic.ratings(n_users=30, n_items=40, seed=3, min_per_user=3, max_per_user=15)
    inter = recsys.Interactions.from_ratings(ratings)
    model = recsys.ImplicitALS(factors=4, regularization=1.0, alpha=2.0, iterations=200, seed=0,
                               use_gpu=False).fit(inter)
    return inter, model


def test_fold_in_of_an_existing_users_items_reproduces_their_factors(als_fit):
    inter, model = als_fit
    for user in (0, 7, 19):
        items = inter.matrix[user].indices
        x = own_user.fold_in_user(model.item_factors_, items, 1.0, 2.0)
        fitted = model.user_factors_[user]
        assert np.linalg.norm(x - fitted) <= 1e-2 * np.linalg.norm(fitted), (x, fitted)


def test_fold_in_depends_on_the_items_and_rejects_no_items(als_fit):
    inter, model = als_fit
    a = own_user.fold_in_user(model.item_factors_, inter.matrix[0].indices, 1.0, 2.0)
    b = own_user.fold_in_user(model.item_factors_, inter.matrix[1].indices, 1.0, 2.0)
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="at least one"):
        own_user.fold_in_user(model.item_factors_, [], 1.0, 2.0)


def test_fold_in_contributions_sum_to_the_scores(als_fit):
    _, model = als_fit
    items, targets = [3, 5, 5, 9], [0, 1, 2, 30]
    x = own_user.fold_in_user(model.item_factors_, items, 1.0, 2.0)
    parts = own_user.fold_in_contributions(model.item_factors_, items, targets, 1.0, 2.0)
    assert parts.shape == (4, 3)
    np.testing.assert_allclose(parts.sum(axis=1), model.item_factors_[targets] @ x, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- personas of a new user
def _two_taste_population():
    movies = pd.DataFrame({"item_id": np.arange(1, 21), "title": [f"M{i}" for i in range(1, 21)],
                           "year": pd.array([2000] * 20, dtype="Int64"),
                           "genres": ["Horror"] * 10 + ["Comedy"] * 10})
    rng = np.random.default_rng(0)
    rows = []
    for user in range(1, 21):
        liked = range(1, 11) if user <= 10 else range(11, 21)
        for item in rng.choice(list(liked), size=6, replace=False):
            rows.append((user, int(item), 5.0))
    return movies, pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])


def test_genre_persona_of_a_new_user_is_the_group_sharing_their_taste():
    from p13n_utils import personas

    movies, ratings = _two_taste_population()
    found = personas.movielens_genre_personas(ratings, movies, k=2, seed=0)
    horror_persona = int(found.assignments[1])
    assert int(found.assignments[15]) != horror_persona
    horror_fan = pd.DataFrame({"item_id": [2, 3, 4], "rating": [5.0, 4.5, 5.0]})
    comedy_fan = pd.DataFrame({"item_id": [12, 13], "rating": [5.0, 4.0]})
    assert own_user.genre_persona_of(found, ratings, movies, horror_fan) == horror_persona
    assert own_user.genre_persona_of(found, ratings, movies, comedy_fan) != horror_persona


# --------------------------------------------------------------------------- a whole round, tiny
@pytest.fixture(scope="module")
def tiny_world():
    from conftest import _tiny_lm

    sizes = dict(config.get_sizes("smoke").sizes)
    sizes.update({"p12.pc_k": 2, "p12.ml_k": 2, "p12.n_items": None, "p12.max_new_tokens": 4,
                  "rec.als_iterations": 3})
    cfg = config.RunSize(name="smoke", sizes=sizes, seed=0)
    model, tok = _tiny_lm(seed=0)
    user_facts = {0: ["i like tea .", "i love cats ."], 1: ["i like coffee .", "my dog is nice ."],
                  2: ["i love music .", "i like books ."], 3: ["i hate movies .", "my cat sat on the mat ."]}
    ml = synthetic.movielens(n_users=25, n_items=30, seed=1)
    return own_user.build_world(cfg, model=model, tokenizer=tok, embed=hashing_embed, user_facts=user_facts, ml=ml)


def test_a_round_gives_every_level_and_every_list(tiny_world):
    steps = []
    labels = tiny_world.labels
    ratings = {labels.iloc[0]: 5, labels.iloc[3]: 4.5, labels.iloc[7]: 1}
    result = own_user.play_round(tiny_world, ["i love cats .", "i like tea ."], ratings, "do you like tea ?",
                                 progress=lambda step, fraction: steps.append(fraction))
    assert steps[-1] == 1.0 and steps == sorted(steps)
    assert result.replies["level"].tolist() == list(own_user.LEVELS)
    assert result.logprobs.shape == (4, 4) and (result.logprobs.to_numpy() < 0).all()
    assert result.contexts["user"]["context"] == ["i love cats .", "i like tea ."]
    assert result.contexts["user_rag"]["context"][0] == "i like tea ."  # the fact sharing the message's words
    assert set(result.contexts["persona"]["context"]) <= {f for fs in [["i like tea .", "i love cats ."],
                                                                        ["i like coffee .", "my dog is nice ."],
                                                                        ["i love music .", "i like books ."],
                                                                        ["i hate movies .", "my cat sat on the mat ."]]
                                                          for f in fs}
    assert set(result.changes) == set(own_user.LEVELS)
    rated = set(result.ratings["label"])
    for method in own_user.RECOMMENDERS:
        frame = result.recommendations[method]
        assert len(frame) == 10 and not rated & set(frame["title"]), method
        if method != "popularity":
            assert set(frame["because"]) <= rated | {"your persona"}, method
    assert result.seconds["total"] > 0


def test_a_round_with_bad_input_raises_input_error_before_computing(tiny_world):
    calls = []
    good = {tiny_world.labels.iloc[0]: 4}
    for facts, ratings, message in (([], good, "hi"), (["x" * 10_000], good, "hi"), (["a"], {}, "hi"),
                                    (["a"], {"No Such Movie (1900)": 4}, "hi"), (["a"], {tiny_world.labels.iloc[0]: 9}, "hi"),
                                    (["a"], good, "")):
        with pytest.raises(InputError):
            own_user.play_round(tiny_world, facts, ratings, message, progress=lambda *a: calls.append(a))
    assert calls == []


# --------------------------------------------------------------------------- the page
def _find(widget, css_class):
    """The widget of the form carrying ``css_class`` (depth-first)."""
    if css_class in getattr(widget, "_dom_classes", ()):
        return widget
    for child in getattr(widget, "children", ()):
        found = _find(child, css_class)
        if found is not None:
            return found
    return None


def test_round_html_shows_every_level_and_list_and_escapes_input(tiny_world):
    from p13n_utils import own_user_app

    result = own_user.play_round(tiny_world, ["i love <b>cats</b> ."], {tiny_world.labels.iloc[0]: 5}, "hi ?")
    page = own_user_app.round_html(result)
    assert page.count("class='p13n-reply'") == 4 and page.count("class='p13n-list'") == 5
    assert "&lt;b&gt;cats&lt;/b&gt;" in page and "<b>cats</b>" not in page
    assert "p13n-explain" in page
    assert "&lt;script&gt;" in own_user_app.error_html("<script>")


def test_the_form_turns_bad_input_into_a_message_and_good_input_into_an_answer(tiny_world):
    from html import unescape

    from p13n_utils import own_user_app

    labels = tiny_world.labels
    app = own_user_app.make_app(tiny_world, ["i like tea ."], {labels.iloc[0]: 4}, "do you like tea ?")
    go, answer, ratings = _find(app, "p13n-go"), _find(app, "p13n-output"), _find(app, "p13n-ratings")
    ratings.value = "No Such Movie (1900) = 4"
    go.click()
    assert "p13n-error" in answer.value and "No movie 'No Such Movie (1900)'" in unescape(answer.value)
    ratings.value = f"{labels.iloc[0]} = 12"
    go.click()
    assert "from 0.5 to 5.0" in answer.value and not go.disabled

    search, add = _find(app, "p13n-search"), _find(app, "p13n-add")
    search.value = labels.iloc[2]
    add.click()
    assert ratings.value.endswith(f"{labels.iloc[2]} = 4")
    search.value = "zzz"
    add.click()
    assert "No movie 'zzz'" in unescape(_find(app, "p13n-status").value)

    ratings.value = f"{labels.iloc[0]} = 4.5\n{labels.iloc[2]} = 2"
    go.click()
    assert answer.value.count("class='p13n-reply'") == 4 and "p13n-error" not in answer.value
    assert _find(app, "p13n-status").value.startswith("Done in")


def test_logprob_matrix_equals_scoring_every_pair(tiny_lm):
    from p13n_utils import generation

    model, tok = tiny_lm(seed=2)
    prompts_ = ["user : do you like tea ? assistant :", "user : hello my name is cat . assistant : i"]
    replies = ["yes i like tea .", "no .", "i love cats and dogs ."]
    got = own_user.logprob_matrix(model, tok, prompts_, replies)
    pairs = [(p, r) for p in prompts_ for r in replies]
    want = generation.score(model, tok, [p for p, _ in pairs], [r for _, r in pairs], progress=False)
    np.testing.assert_allclose(got.ravel(), want["logprob_sum"].to_numpy(), rtol=1e-4, atol=1e-4)
