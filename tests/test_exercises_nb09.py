"""Checks of notebook 09's exercises: a right answer passes, a wrong one raises with the hint,
None prints "not attempted yet" (tiny synthetic inputs)."""

import numpy as np
import pandas as pd
import pytest

from p13n_utils import evaluation, lesson
from p13n_utils.exercises import nb09

P = [0.01, 0.04, 0.3]


def _frame():
    rows = []
    for method, ppl, rouge in (("a", 10.0, 0.30), ("b", 12.0, 0.20), ("c", 11.0, 0.25), ("d", 13.0, 0.26)):
        for metric, v in (("ppl", ppl), ("rougeL", rouge)):
            rows.append({"notebook": "04_x", "task": "personachat", "level": "user", "method": method,
                         "metric": metric, "value": v, "lower": v, "upper": v, "n": 5})
    return evaluation.rows_frame({"notebooks": [], "rows": rows})


def test_check_1(capsys):
    assert nb09.check_1([0.03, 0.12, 0.9], P) is True
    with pytest.raises(lesson.ExerciseFailed, match="cap at 1"):
        nb09.check_1([0.01, 0.04, 0.3], P)
    assert nb09.check_1(None, P) is None
    assert "not attempted" in capsys.readouterr().out


def test_check_2():
    frame = _frame()
    # higher is better after negating ppl: a > c > b > d by ppl; a > d > c > b by ROUGE-L.
    # pairs: ab +, ac +, ad +, bc +, bd -, cd - -> (4 - 2) / 6
    assert nb09.check_2(2 / 6, frame, "04_x", "personachat", "ppl", "rougeL") is True
    with pytest.raises(lesson.ExerciseFailed, match="negate"):
        nb09.check_2(-2 / 6, frame, "04_x", "personachat", "ppl", "rougeL")
    assert nb09.check_2(None, frame, "04_x", "personachat", "ppl", "rougeL") is None
    with pytest.raises(ValueError, match="both"):
        nb09.metric_pair(frame, "04_x", "personachat", "ppl", "mae")


def test_check_3():
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(30)]
    b = pd.Series(rng.normal(0, 1, 30), index=users)
    a = b + rng.normal(0.1, 0.5, 30)
    # the learner's own permutation test: another seed, fewer permutations
    d = (a - b).to_numpy()
    signs = np.random.default_rng(7).choice([-1.0, 1.0], size=(5000, d.size))
    p = ((np.abs((signs * d).mean(axis=1)) >= abs(d.mean())).sum() + 1) / 5001
    assert nb09.check_3(p, a, b) is True
    with pytest.raises(lesson.ExerciseFailed, match="random signs"):
        nb09.check_3(p / 2 + 0.3 if p < 0.5 else p - 0.3, a, b)
    assert nb09.check_3(None, a, b) is None


def test_sign_flip_p_of_a_clear_shift_is_small_and_of_noise_is_not():
    rng = np.random.default_rng(1)
    assert nb09.sign_flip_p(1 + rng.normal(0, 0.3, 25), n_permutations=2000) < 0.001
    assert nb09.sign_flip_p(rng.normal(0, 1, 25), n_permutations=2000) > 0.05
