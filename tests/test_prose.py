"""Prose that cannot go stale, helpers that stay in the package.

:func:`p13n_utils.lesson.stale_numbers` finds figures in markdown cells that no output of the
notebook shows; :func:`p13n_utils.lesson.long_functions` finds helpers defined in notebook cells.
Unit tests on synthetic notebooks show each one catches what it should; the tests over the
committed notebooks keep the series clean."""

import nbformat
import pytest

from p13n_utils import lesson, run
from p13n_utils import config

NOTEBOOKS = run.available_notebooks()


def _nb(markdown: str, printed: str, code: str = "print(x)", tags=()) -> dict:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(code)
    cell.metadata["tags"] = list(tags)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), cell]
    return nb


PRINTED = "cost per user: 4.661 s\nmae 0.8312 | 1295.4 h in all\n"


def test_a_number_the_outputs_print_is_not_stale():
    prose = "One user costs 4.66 s, 1,295 h in all; the ratio is 0.83 (83% of the baseline)."
    assert lesson.stale_numbers(_nb(prose, PRINTED)) == []


def test_a_planted_stale_number_is_caught():
    prose = "One user costs 7.2 s; the ratio is 0.83, so 12.5% of the time is saved (~85 days)."
    stale = lesson.stale_numbers(_nb(prose, PRINTED))
    assert [s.split(" in cell")[0] for s in stale] == ["7.2", "12.5%", "85"]
    assert "cell 0" in stale[0] and "costs 7.2 s" in stale[0]


def test_markdown_outputs_count_as_printed():
    nb = _nb("The ratio is 0.91.", "")
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "ratio **0.912**"})]
    assert lesson.stale_numbers(nb) == []
    nb.cells[1].outputs = []
    assert lesson.stale_numbers(nb) != []


def test_constants_names_and_code_are_not_figures():
    prose = ("95% intervals; chance is 0.5; k = 10 of 2,345? no: arXiv 2411.00027 and "
             "[LoRA](https://arxiv.org/abs/2106.09685) (2021); Python 3.11, torch 2.13.0, "
             "Section 4.2; doi:10.1145/2827872; $\\alpha = 0.37$, `lr = 3.3e-4`, $$x = 1.25$$; "
             f"{config.SIZES['data.cold_users_frac'][1]:.0%} of users held out.")
    assert [s.split(" in cell")[0] for s in lesson.stale_numbers(_nb(prose, ""))] == ["2,345"]


def test_long_functions_are_found_and_teaching_cells_allowed():
    helper = "def helper(x):\n    a = x\n    b = a\n    c = b\n    d = c\n    return d\n"
    short = "def f(x):\n    return x + 1\nsquare = lambda x: x * x\n"
    assert lesson.long_functions(_nb("", "", helper)) == ["helper in cell 1: 6 lines"]
    assert lesson.long_functions(_nb("", "", "%time 1\n" + short)) == []
    assert lesson.long_functions(_nb("", "", helper, tags=["teaching"])) == []


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_markdown_figures_are_printed_by_the_notebook(name):
    stale = lesson.stale_numbers(config.NOTEBOOKS_DIR / f"{name}.ipynb")
    assert not stale, (f"{name}: figures in markdown that no output shows (compute them in a "
                       "Markdown cell or print them):\n" + "\n".join(stale))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_define_no_long_helpers(name):
    found = lesson.long_functions(config.NOTEBOOKS_DIR / f"{name}.ipynb")
    assert not found, (f"{name}: move these helpers into p13n_utils (or tag the cell `teaching` "
                       "if it shows an algorithm on purpose): " + "; ".join(found))
