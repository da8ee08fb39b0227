"""The checks of notebook 03's exercises: a right answer passes, a wrong one raises with the
hint, ``None`` prints "not attempted yet" (small hand-made curves and random fact vectors)."""

import numpy as np
import pandas as pd
import pytest

from p13n_utils import lesson, personas
from p13n_utils.exercises import nb03


def _curve():
    # a hand-made trade-off table: K=6 is the largest K whose smallest persona has >= 5 users,
    # K=5 has the largest lift among those that pass the floor, K=8 the largest overall
    return pd.DataFrame({
        "k": [1, 2, 5, 6, 8],
        "min_users": [40, 18, 7, 5, 2],
        "target_lift": [0.0, 0.010, 0.020, 0.015, 0.030],
        "target_lift_se": [0.001, 0.004, 0.005, 0.005, 0.006],
    })


def test_check_1(capsys):
    curve = _curve()
    assert nb03.check_1([6, 1, 5, 2], curve, 5) is True
    with pytest.raises(lesson.ExerciseFailed, match="Hint"):
        nb03.check_1([1, 2, 5, 6, 8], curve, 5)
    with pytest.raises(lesson.ExerciseFailed):
        nb03.check_1(6, curve, 5)  # a single K, not the list
    assert nb03.check_1(None, curve, 5) is None
    assert "not attempted" in capsys.readouterr().out


def test_check_2_compares_with_the_rule(capsys):
    curve = _curve()
    assert personas.choose_k_min_users(curve, 5) == 6
    assert nb03.k_max_lift(curve, 5) == 5
    right = {2: 8, 5: 5, 40: 1}
    assert nb03.check_2(right, curve, [2, 5, 40]) is True
    out = capsys.readouterr().out
    assert "disagree for 1 of 3 floors" in out and "the rule's K=6" in out
    for wrong in ({2: 8, 5: 6, 40: 1},      # the rule's K, not the largest lift
                  {2: 8, 5: 5},             # a floor missing
                  {2: 8, 5: "5", 40: 1},    # a string, not a K
                  5):                       # not a dict
        with pytest.raises(lesson.ExerciseFailed, match="target_lift"):
            nb03.check_2(wrong, curve, [2, 5, 40])
    assert nb03.check_2(None, curve, [2, 5, 40]) is None
    assert "not attempted" in capsys.readouterr().out


def _facts(seed=0, n_users=12, n_facts=30, dim=8):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_facts, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    fact_vectors = {f"fact {i}": vectors[i] for i in range(n_facts)}
    user_facts = {u: [f"fact {i}" for i in rng.choice(n_facts, size=4, replace=False)] for u in range(n_users)}
    return user_facts, fact_vectors


def _specificity_by_hand(user_facts, fact_vectors, k, n_facts=4, seed=0):
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    fp = personas.personachat_fact_personas(user_facts, fact_vectors, k=k, seed=seed)
    sims = []
    for user, facts in user_facts.items():
        description = fp.context_for(user, n_facts)
        if description:
            d = unit(np.mean([fact_vectors[f] for f in description], axis=0))
            f = unit(np.mean([fact_vectors[f] for f in facts], axis=0))
            sims.append(d @ f)
    return float(np.mean(sims))


def test_check_3(capsys):
    user_facts, fact_vectors = _facts()
    right = _specificity_by_hand(user_facts, fact_vectors, k=3)
    assert nb03.check_3(right, user_facts, fact_vectors, k=3) is True
    with pytest.raises(lesson.ExerciseFailed, match="unit"):
        nb03.check_3(right + 0.01, user_facts, fact_vectors, k=3)
    with pytest.raises(lesson.ExerciseFailed):
        nb03.check_3("x", user_facts, fact_vectors, k=3)
    assert nb03.check_3(None, user_facts, fact_vectors, k=3) is None
    assert "not attempted" in capsys.readouterr().out
