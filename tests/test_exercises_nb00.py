import pytest

from p13n_utils import config, lesson, taxonomy
from p13n_utils.exercises import nb00


def test_check_1_accepts_the_notebook_name_or_number_and_rejects_another():
    entry = next(e for e in taxonomy.entries() if e.name == "DPO")
    assert nb00.check_1(entry.notebook, leaf="DPO") is True
    assert nb00.check_1(entry.notebook[:2], leaf="DPO") is True
    with pytest.raises(lesson.ExerciseFailed, match="Hint: look up the row"):
        nb00.check_1("00_overview", leaf="DPO")


def test_check_1_knows_planned_notebooks_and_rejects_unknown_leaves(monkeypatch):
    planned = taxonomy.Entry("open problem", "open problems", "telekinesis", "a leaf still planned",
                             planned="13_future")
    monkeypatch.setattr(taxonomy, "TAXONOMY", (*taxonomy.TAXONOMY, planned))
    assert nb00.check_1("13_future", leaf="telekinesis") is True
    assert nb00.check_1("13", leaf="telekinesis") is True
    with pytest.raises(KeyError, match="no taxonomy leaf"):
        nb00.check_1("05", leaf="telepathy")
    with pytest.raises(KeyError, match="not covered by the series"):
        nb00.check_1("10", leaf="multimodality")


def test_check_2_reads_the_size_table():
    key = "tasks.ml_users"
    smoke, default, _ = config.SIZES[key]
    assert nb00.check_2(smoke, key=key, size="smoke") is True
    assert nb00.check_2(default, key=key, size="default") is True
    with pytest.raises(lesson.ExerciseFailed, match="one value per run size"):
        nb00.check_2(smoke + 1, key=key, size="smoke")


def test_check_3_right_wrong_and_malformed():
    assert nb00.check_3({"a": "global", "b": "persona", "c": "user"}) is True
    with pytest.raises(lesson.ExerciseFailed, match="reconsider scenario 'b'"):
        nb00.check_3({"a": "global", "b": "user", "c": "user"})
    with pytest.raises(lesson.ExerciseFailed, match="the levels are"):
        nb00.check_3({"a": "everyone", "b": "persona", "c": "user"})
    with pytest.raises(lesson.ExerciseFailed, match="keys"):
        nb00.check_3(["global", "persona", "user"])


@pytest.mark.parametrize("check", [nb00.check_1, nb00.check_2, nb00.check_3])
def test_none_is_not_attempted(check, capsys):
    assert check(None) is None
    assert "not attempted yet" in capsys.readouterr().out
