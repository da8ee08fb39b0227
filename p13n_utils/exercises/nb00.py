"""Checks of the exercises of ``00_overview``: reading the taxonomy map, the run-size table,
and choosing the granularity level of a scenario."""

from __future__ import annotations

from .. import config, lesson, results, taxonomy

__all__ = ["SCENARIOS", "check_1", "check_2", "check_3"]

#: Scenarios of exercise 3: the level each one calls for is a property of the scenario (how
#: much data there is about whom), not of a run.
SCENARIOS = {
    "a": "A hospital chatbot must follow the same safety and politeness norms with every patient; "
         "it knows nothing about individual patients.",
    "b": "A news app has just signed up a reader who said only 'teacher, likes science'; she has no "
         "history yet, but thousands of other teachers have long reading histories.",
    "c": "A writing assistant holds two years of one lawyer's e-mails and should draft her replies "
         "in her own voice.",
}
_LEVELS = {"a": "global", "b": "persona", "c": "user"}
_WHY = {
    "a": "nothing is known about the individual and the goal is a norm shared by everyone",
    "b": "there is no history of her own yet, but a group of similar users has plenty",
    "c": "there is plenty of data from this one person, and the goal is her own style",
}


def _where(leaf: str) -> str:
    """The notebook (implemented or planned) of the taxonomy leaf called ``leaf``."""
    for entry in taxonomy.entries():
        if entry.name == leaf:
            if not (entry.notebook or entry.planned):
                raise KeyError(f"the taxonomy leaf {leaf!r} is not covered by the series; pick another leaf")
            return entry.notebook or entry.planned
    names = ", ".join(e.name for e in taxonomy.entries())
    raise KeyError(f"no taxonomy leaf called {leaf!r}; leaves: {names}")


def check_1(answer, leaf: str = "dense retrieval"):
    """Exercise 1: which notebook shows the taxonomy leaf ``leaf``? ``answer`` is the notebook
    name (``"05_user_rag"``) or its number (``"05"``)."""
    if answer is None:
        return lesson.check("exercise 1", None, "")
    notebook = _where(leaf)
    given = str(answer).strip().removesuffix(".ipynb")
    ok = given in (notebook, notebook[:2])
    return lesson.check("exercise 1", ok,
                        f"look up the row whose name is {leaf!r} in taxonomy.table(): its 'where' column "
                        "names the notebook (answer with its name or its two-digit number)",
                        success=f"{leaf!r} is shown in {notebook}")


def check_2(answer, key: str = "tasks.pc_gen_users", size: str = "default"):
    """Exercise 2: the value of ``config.SIZES[key]`` in the run size ``size``."""
    if answer is None:
        return lesson.check("exercise 2", None, "")
    if key not in config.SIZES:
        raise KeyError(f"{key!r} is not a knob of config.SIZES")
    expected = config.SIZES[key][config.SIZE_NAMES.index(config.validate_size(size))]
    return lesson.check("exercise 2", answer == expected,
                        f"config.SIZES[{key!r}] holds one value per run size, in the order "
                        f"{config.SIZE_NAMES}; or use config.get_sizes({size!r})[{key!r}]",
                        success=f"{key} = {expected!r} in the {size} size")


def check_3(answer: dict | None):
    """Exercise 3: ``answer`` maps each key of :data:`SCENARIOS` to a level
    (``"global"``, ``"persona"`` or ``"user"``)."""
    if answer is None:
        return lesson.check("exercise 3", None, "")
    if not isinstance(answer, dict) or set(answer) != set(SCENARIOS):
        return lesson.check("exercise 3", False,
                            f"answer with a dict with the keys {sorted(SCENARIOS)}, e.g. "
                            "{'a': 'global', 'b': ..., 'c': ...}")
    bad = [key for key in sorted(SCENARIOS) if str(answer[key]).strip().lower() != _LEVELS[key]]
    unknown = [key for key in bad if str(answer[key]).strip().lower() not in results.LEVELS]
    if unknown:
        hint = f"the levels are {', '.join(results.LEVELS)}; scenario {unknown[0]!r} got {answer[unknown[0]]!r}"
    else:
        hint = ("reconsider scenario " + ", ".join(repr(k) for k in bad)
                + ": how much data is there about this very person, and about people like them?")
    return lesson.check("exercise 3", not bad, hint,
                        success="; ".join(f"{k}: {_LEVELS[k]} ({_WHY[k]})" for k in sorted(SCENARIOS)))
