"""MovieLens genre-taste personas on synthetic users with planted tastes."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from p13n_utils import personas

GENRES = ["Horror", "Romance", "Comedy"]


def _planted(n_per_group=(30, 20), n_items=60, seed=0):
    """Items 0..59 cycle through Horror, Romance, Comedy (+ one '(no genres listed)' item);
    group 0 likes horror, group 1 likes romance; both rate comedies low."""
    rng = np.random.default_rng(seed)
    movies = pd.DataFrame({"item_id": np.arange(n_items + 1),
                           "genres": [GENRES[i % 3] for i in range(n_items)] + ["(no genres listed)"]})
    rows, truth, user = [], {}, 0
    for group, n_users in enumerate(n_per_group):
        liked_genre = GENRES[group]
        for _ in range(n_users):
            items = rng.choice(n_items + 1, size=20, replace=False)
            for item in items:
                genre = movies.loc[item, "genres"]
                rows.append((user, int(item), 5.0 if genre == liked_genre else 2.0))
            truth[user] = group
            user += 1
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    return ratings, movies, pd.Series(truth)


def test_recovers_planted_personas_and_describes_them():
    ratings, movies, truth = _planted()
    result = personas.movielens_genre_personas(ratings, movies, k=2, seed=0)
    assigned = result.assignments.reindex(truth.index)
    assert adjusted_rand_score(truth, assigned) == pytest.approx(1.0)
    # persona 0 is the bigger group (the 30 horror fans)
    desc = result.descriptions.set_index("persona")
    assert desc.loc[0, "n_users"] == 30 and desc.loc[1, "n_users"] == 20
    assert desc.loc[0, "top_genres"][0] == "Horror"
    assert desc.loc[1, "top_genres"][0] == "Romance"
    assert desc.loc[0, "label"].startswith("Horror")
    assert list(result.taste.columns) == sorted(GENRES)  # no "(no genres listed)" feature


def test_taste_is_positive_for_the_liked_genre():
    ratings, movies, truth = _planted()
    taste = personas.genre_taste(ratings, movies)
    horror_fans = truth.index[truth == 0]
    assert (taste.loc[horror_fans, "Horror"] > 0).all()
    assert (taste.loc[horror_fans, "Romance"] < 0).all()


def test_users_who_liked_nothing_are_described_by_all_they_rated():
    ratings, movies, _ = _planted()
    grumpy = pd.DataFrame({"user_id": 999, "item_id": [0, 3, 6], "rating": 1.0})  # horror only
    taste = personas.genre_taste(pd.concat([ratings, grumpy]), movies)
    assert taste.loc[999, "Horror"] > 0


def test_seeded_and_deterministic():
    ratings, movies, _ = _planted((15, 15, 15))
    a = personas.movielens_genre_personas(ratings, movies, k=3, seed=1)
    b = personas.movielens_genre_personas(ratings, movies, k=3, seed=1)
    pd.testing.assert_series_equal(a.assignments, b.assignments)


def test_bad_input_is_refused():
    ratings, movies, _ = _planted()
    for k in (0, len(ratings["user_id"].unique()) + 1, 2.0):
        with pytest.raises(ValueError, match="k must be"):
            personas.movielens_genre_personas(ratings, movies, k=k)
    with pytest.raises(ValueError, match="NaN"):
        personas.movielens_genre_personas(ratings.assign(rating=np.nan), movies, k=2)
    with pytest.raises(ValueError, match="empty"):
        personas.movielens_genre_personas(ratings.iloc[:0], movies, k=2)
    with pytest.raises(ValueError, match="movies table"):
        personas.genre_taste(ratings.assign(item_id=ratings["item_id"] + 1000), movies)


def test_genre_matrix():
    movies = pd.DataFrame({"item_id": [1, 2, 3], "genres": ["Action|Comedy", "Comedy", "(no genres listed)"]})
    flags = personas.genre_matrix(movies)
    assert flags.loc[1].tolist() == [1.0, 1.0]
    assert flags.loc[3].sum() == 0


def test_unit_scales_vectors_and_rows_and_leaves_zero_alone():
    np.testing.assert_allclose(personas.unit(np.array([3.0, 4.0])), [0.6, 0.8])
    np.testing.assert_allclose(personas.unit(np.array([[0.0, 2.0], [0.0, 0.0]])), [[0.0, 1.0], [0.0, 0.0]])
