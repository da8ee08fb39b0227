from pathlib import Path

import pytest

from p13n_utils import config, taxonomy


def test_every_axis_has_entries_and_names_are_unique():
    assert {e.axis for e in taxonomy.TAXONOMY} == set(taxonomy.AXES)
    names = [(e.axis, e.name) for e in taxonomy.TAXONOMY]
    assert len(names) == len(set(names))
    families = {e.family for e in taxonomy.entries("technique")}
    assert {"RAG", "prompting", "representation learning", "RLHF"} <= families
    kinds = {e.name for e in taxonomy.entries("user data")}
    assert kinds == {"static attributes", "user-written text", "interaction history",
                     "pairwise preferences"}
    with pytest.raises(ValueError, match="valid axes"):
        taxonomy.entries("colour")


def test_every_entry_points_somewhere_in_the_series():
    series = {"00_overview", "01_user_data", "02_global_preference", "03_persona_level",
              "04_user_prompting", "05_user_rag", "06_user_finetuning", "07_preference_alignment",
              "08_recommendation", "09_evaluation", "10_open_problems", "11_scaling_out",
              "12_your_own_user"}
    for e in taxonomy.TAXONOMY:
        # an entry the series does not cover says so in its description (and the table says "not covered")
        assert (e.notebook or e.planned) in series or "not covered" in e.description, e


@pytest.mark.parametrize("entry", [e for e in taxonomy.TAXONOMY if e.implemented],
                         ids=lambda e: e.name)
def test_mapped_notebook_exists_and_has_the_section(entry):
    path = config.NOTEBOOKS_DIR / f"{entry.notebook}.ipynb"
    assert path.exists(), f"{entry.name} is mapped to a missing notebook {path.name}"
    headings = taxonomy.notebook_headings(entry.notebook)
    assert any(entry.section in h for h in headings), (entry.section, headings)


def test_an_uncovered_entry_is_listed_as_not_covered():
    rows = taxonomy.table().set_index("name")
    for e in taxonomy.TAXONOMY:
        if e.notebook is None and e.planned is None:
            assert rows.loc[e.name, "where"] == "not covered", e


def test_planned_entries_are_not_in_existing_notebooks_by_mistake():
    """An entry stays 'planned' only while its notebook is not written: once it exists, map
    the entry to its section."""
    for e in taxonomy.TAXONOMY:
        if not e.implemented:
            assert not (config.NOTEBOOKS_DIR / f"{e.planned}.ipynb").exists(), e


def test_table_and_figure(tmp_path):
    df = taxonomy.table()
    assert len(df) == len(taxonomy.TAXONOMY) and df["where"].str.len().min() > 0
    fig = taxonomy.plot_taxonomy()
    fig.savefig(tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 10_000
