"""The checks of notebook 04's exercises: a right answer passes, a wrong one raises with the
hint, ``None`` prints "not attempted yet" (tiny inputs, no LM)."""

import math

import numpy as np
import pandas as pd
import pytest

from p13n_utils import lesson, prompts
from p13n_utils.exercises import nb04

FACTS = ["i have two dogs.", "i love hiking."]


def test_check_1(capsys):
    by_hand = prompts.CHAT_SYSTEM + "\n" + prompts.HEADERS["user"] + "\n" + "\n".join(f"- {f}" for f in FACTS)
    assert nb04.check_1(by_hand, FACTS) is True
    with pytest.raises(lesson.ExerciseFailed, match="HEADERS"):
        nb04.check_1(prompts.CHAT_SYSTEM + "\n" + "\n".join(FACTS), FACTS)  # no header, no bullets
    with pytest.raises(lesson.ExerciseFailed):
        nb04.check_1(by_hand.replace("dogs", "cats"), FACTS)
    assert nb04.check_1(None, FACTS) is None
    assert "not attempted" in capsys.readouterr().out


def test_share_with_fixed_point_small_n():
    # n=3: of the 6 permutations, 2 are derangements
    assert nb04.share_with_fixed_point(3) == pytest.approx(4 / 6)
    assert nb04.share_with_fixed_point(1) == pytest.approx(1.0)
    assert nb04.share_with_fixed_point(30) == pytest.approx(1 - math.exp(-1))


def test_check_2():
    rng = np.random.default_rng(0)
    n = 10
    simulated = np.mean([(rng.permutation(n) == np.arange(n)).any() for _ in range(4000)])
    assert nb04.check_2(simulated, n) is True
    with pytest.raises(lesson.ExerciseFailed, match="permutation"):
        nb04.check_2(1 / n, n)  # the chance that one given user keeps their data, not the share
    with pytest.raises(lesson.ExerciseFailed):
        nb04.check_2("often", n)
    assert nb04.check_2(None, n) is None


def test_check_3():
    table = pd.DataFrame({"none": [3.0, 2.0, 4.0], "contextual": [2.5, 2.2, 3.9],
                          "profile": [2.9, 1.9, 4.2], "facts+replies": [2.0, 2.4, 4.1]},
                         index=pd.Index([11, 12, 13], name="user"))
    selected = (2.0 + 1.9 + 3.9) / 3
    assert nb04.check_3((table, selected)) is True
    with pytest.raises(lesson.ExerciseFailed, match="select_per_user"):
        nb04.check_3((table, float(table.mean().min())))  # the best single template, not the selection
    with pytest.raises(lesson.ExerciseFailed):
        nb04.check_3((table.iloc[:, :3], (2.5 + 1.9 + 3.9) / 3))  # only three templates
    with pytest.raises(lesson.ExerciseFailed):
        nb04.check_3((table.assign(profile=[2.9, np.nan, 4.2]), selected))
    with pytest.raises(lesson.ExerciseFailed):
        nb04.check_3(table)  # not a (table, loss) pair
    assert nb04.check_3(None) is None
