"""The lesson frame: one repository URL everywhere, the install cell first in every notebook,
show_source and check."""

import re

import nbformat
import pytest

from p13n_utils import config, lesson, run

NOTEBOOKS = run.available_notebooks()
_LINK = re.compile(r"https://(?:colab\.research\.google\.com/github|mybinder\.org/v2/gh)/([^/\s)]+/[^/\s)]+)/")


def _owner_repo() -> str:
    return lesson.REPO_URL.removeprefix("https://github.com/").rstrip("/")


def _code_cells(name):
    nb = nbformat.read(config.NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    return nb, [c for c in nb.cells if c.cell_type == "code"]


def test_repo_url_is_the_one_in_pyproject():
    import tomllib

    urls = tomllib.loads((config.REPO_ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert lesson.REPO_URL == urls["Repository"]
    assert lesson.REPO_URL.startswith("https://github.com/")
    assert f'"{lesson.REPO_URL}"' in lesson.INSTALL_CELL
    assert lesson.colab_url("05_user_rag") == (f"https://colab.research.google.com/github/"
                                               f"{_owner_repo()}/blob/main/notebooks/05_user_rag.ipynb")


def test_readme_badges_use_the_declared_repository():
    readme = (config.REPO_ROOT / "README.md").read_text()
    repos = set(_LINK.findall(readme))
    assert repos == {_owner_repo()}, f"README badges point at {repos}, pyproject says {_owner_repo()}"
    assert lesson.colab_url("00_overview") in readme


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_cell_carries_this_notebooks_colab_badge(name):
    nb, _ = _code_cells(name)
    title = nb.cells[0].source
    assert lesson.colab_url(name) in title, f"{name}: no Colab badge linking {lesson.colab_url(name)}"
    assert set(_LINK.findall(title)) == {_owner_repo()}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_first_then_parameters(name):
    _, code = _code_cells(name)
    assert code[0].source == lesson.INSTALL_CELL, (
        f"{name}: the first code cell must be p13n_utils.lesson.INSTALL_CELL verbatim")
    assert "parameters" in code[1].metadata.get("tags", []), (
        f"{name}: the code cell after the install cell must be the `parameters` cell")


def test_install_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(lesson.INSTALL_CELL, "install_cell", "exec"), {})
    assert list(tmp_path.iterdir()) == []


def test_show_source_renders_the_package_code():
    shown = lesson.show_source(lesson.colab_url)
    assert shown.data.startswith("**`p13n_utils.lesson.colab_url`**")
    assert "def colab_url(notebook: str) -> str:" in shown.data and shown.data.endswith("```")
    with pytest.raises(TypeError, match="cannot show the source"):
        lesson.show_source(3)


def test_check_says_right_raises_with_hint_or_waits(capsys):
    assert lesson.check("ex 1", True, "hint") is True
    assert lesson.check("ex 1", None, "hint") is None
    out = capsys.readouterr().out
    assert "✓ ex 1: right" in out and "ex 1: not attempted yet" in out
    with pytest.raises(lesson.ExerciseFailed, match="Hint: look at k"):
        lesson.check("ex 1", False, "look at k")
