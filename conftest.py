"""Test-wide settings and markers (a root conftest, so it covers tests/ and every test file
whoever owns it).

Settings: every notebook the tests execute runs in the smoke size and writes its figures to a
temporary folder, never over figures/.

Markers: ``make unit`` runs ``-m "not notebooks and not determinism and not model and not
slow and not colab"``. Test files mark their notebook tests themselves; :func:`pytest_collection_modifyitems`
adds the two markers that depend on what a test does, so that other test files need no edits:

* ``model`` — the test (or a fixture it uses, however indirectly) calls ``load_lm(`` or
  ``load_embedder(``: it loads the real SmolLM2 or MiniLM (seconds each, GBs of compute).
  Found by reading the source, so a test that moves to another file keeps its marker.
* ``slow`` — the few unit tests listed in :data:`SLOW` (by test name, so that a test moved to
  another file keeps its marker; with the reason): they take several seconds without a real
  model.
"""

import inspect
import os
import tempfile

import pytest

os.environ.setdefault("P13N_RUN_SIZE", "smoke")
os.environ.setdefault("P13N_FIGURES_DIR", tempfile.mkdtemp(prefix="p13n-test-figures-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

MODEL_CALLS = ("load_lm(", "load_embedder(")

# test name (a prefix of what follows "::" in the node id) -> why it is slow; measured with
# --durations=25 on the 2-core machine (shared with other jobs, so the seconds are high).
SLOW = {
    "test_runner_": "starts a Jupyter kernel through papermill (10-40 s)",
    "test_dpo_loss_equals_trl_dpo_trainer": "imports trl and builds its DPOTrainer (~30 s)",
    "test_collaborative_filtering_beats_popularity": "trains ALS and BPR to convergence (~8 s)",
    "test_table_and_figure": "draws the taxonomy figure with matplotlib (~7 s)",
    "test_a_round_gives_every_level": "builds notebook 12's tiny world: personas, ALS, a tiny LM (~10 s)",
    "test_round_html_shows_every_level": "builds notebook 12's tiny world when run alone (~10 s)",
    "test_the_form_turns_bad_input": "builds notebook 12's tiny world when run alone (~10 s)",
}


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _uses_a_model(item) -> bool:
    """Whether the test function or any fixture in its closure calls a real-model loader."""
    sources = [_source(getattr(item, "function", None))]
    info = getattr(item, "_fixtureinfo", None)
    for name in (info.names_closure if info else []):
        for fixturedef in info.name2fixturedefs.get(name, ()):
            sources.append(_source(fixturedef.func))
    return any(call in text for text in sources for call in MODEL_CALLS)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _uses_a_model(item):
            item.add_marker(pytest.mark.model)
        if item.nodeid.split("::", 1)[-1].startswith(tuple(SLOW)):
            item.add_marker(pytest.mark.slow)
