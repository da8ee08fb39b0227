"""The survey's taxonomy as data, each entry mapped to where the series implements it.

The survey ("Personalization of Large Language Models: A Survey", Zhang, Rossi, Kveton et al.,
TMLR 2025) organises the field along six axes: the *usage* (direct text generation vs indirect,
downstream personalization), the kinds of *user data*, the *granularity* (global, persona,
user), the *techniques* (RAG, prompting, representation learning, RLHF), the *evaluation*
(direct vs indirect) and the *open problems*. Every :class:`Entry` names the notebook and the
markdown heading that shows it, or the notebook where it is planned while that notebook is not
written yet; a test keeps the mapping honest.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import config

SURVEY_URL = "https://arxiv.org/abs/2411.00027"
AXES = ("usage", "user data", "granularity", "technique", "evaluation", "open problem")


@dataclass(frozen=True)
class Entry:
    """One leaf of the taxonomy.

    ``notebook`` and ``section`` say where it is implemented (the notebook exists and has a
    markdown heading containing ``section``); while it is not, ``planned`` names the notebook
    of the series that will show it."""

    axis: str
    family: str
    name: str
    description: str
    notebook: str | None = None
    section: str | None = None
    planned: str | None = None

    @property
    def implemented(self) -> bool:
        return self.notebook is not None


def _e(axis, family, name, description, where=None, section=None):
    """Build an entry; ``where`` is the notebook, implemented iff ``section`` is given."""
    if section is None:
        return Entry(axis, family, name, description, planned=where)
    return Entry(axis, family, name, description, notebook=where, section=section)


TAXONOMY: tuple[Entry, ...] = (
    # usage
    _e("usage", "usage", "direct", "personalized text generation: the text is the product",
       "00_overview", "Direct and indirect personalization"),
    _e("usage", "usage", "indirect", "LLM output or embeddings feed a downstream system",
       "00_overview", "Direct and indirect personalization"),
    # user data
    _e("user data", "user data", "static attributes", "demographics, persona facts", "01_user_data",
       "Static attributes"),
    _e("user data", "user data", "user-written text", "reviews, tags, dialogue turns", "01_user_data",
       "User-written text"),
    _e("user data", "user data", "interaction history", "ratings, clicks, views", "01_user_data",
       "Interaction history"),
    _e("user data", "user data", "pairwise preferences", "A preferred to B", "01_user_data",
       "Pairwise preferences"),
    # granularity
    _e("granularity", "granularity", "global preference", "one model for everyone",
       "02_global_preference", "Global preference"),
    _e("granularity", "granularity", "persona level", "groups of users that share traits",
       "03_persona_level", "Persona level"),
    _e("granularity", "granularity", "user level", "one user's own data", "04_user_prompting",
       "User-level prompting"),
    # techniques: RAG
    _e("technique", "RAG", "sparse retrieval", "BM25 over the user's history", "05_user_rag",
       "Under the hood: the BM25 score"),
    _e("technique", "RAG", "dense retrieval", "embedding similarity (MiniLM + faiss)", "05_user_rag",
       "Under the hood: dense retrieval"),
    _e("technique", "RAG", "retriever selection", "which retriever and how many items", "05_user_rag",
       "Retriever selection per user"),
    # techniques: prompting
    _e("technique", "prompting", "contextual prompting", "the user's raw data in the prompt",
       "04_user_prompting", "Contextual prompting"),
    _e("technique", "prompting", "persona-based prompting", "a persona description in the prompt",
       "03_persona_level", "Persona-based prompting"),
    _e("technique", "prompting", "profile-augmented prompting", "an LM-written summary of the user",
       "04_user_prompting", "Profile-augmented prompting"),
    _e("technique", "prompting", "prompt refinement", "choosing or rewriting the prompt per user",
       "04_user_prompting", "Prompt refinement"),
    # techniques: representation learning
    _e("technique", "representation learning", "full fine-tuning", "all weights, all users",
       "06_user_finetuning", "Full fine-tuning"),
    _e("technique", "representation learning", "PEFT (LoRA)", "low-rank adapters",
       "06_user_finetuning", "LoRA"),
    _e("technique", "representation learning", "one adapter per user", "OPPU",
       "06_user_finetuning", "One adapter per user"),
    _e("technique", "representation learning", "user embeddings", "soft prompts / user vectors",
       "06_user_finetuning", "Soft prompts"),
    _e("technique", "representation learning", "embeddings for recommendation",
       "collaborative filtering and LLM-enhanced recommenders", "08_recommendation",
       "LLM-enhanced recommendation"),
    # techniques: RLHF
    _e("technique", "RLHF", "reward models", "Bradley-Terry on preference pairs",
       "07_preference_alignment", "Reward models"),
    _e("technique", "RLHF", "DPO", "direct preference optimisation", "07_preference_alignment",
       "DPO"),
    _e("technique", "RLHF", "policy optimization (RL)",
       "sample from the policy, score with a reward model, policy gradient with a KL leash (RLOO / GRPO)",
       "07_preference_alignment", "Reinforcement learning from a reward model"),
    _e("technique", "RLHF", "per-persona / per-user alignment", "aligned to a group or a user",
       "07_preference_alignment", "Per-persona and per-user alignment"),
    _e("technique", "RLHF", "adapter merging", "Personalized Soups", "07_preference_alignment",
       "Adapter merging"),
    # evaluation
    _e("evaluation", "evaluation", "direct evaluation",
       "agreement with the user's own text or preferences (perplexity, ROUGE, similarity)",
       "09_evaluation", "Direct vs indirect on the same users"),
    _e("evaluation", "evaluation", "indirect evaluation",
       "task metrics (NDCG/Recall/MAP@K, MAE/RMSE)", "09_evaluation",
       "Direct vs indirect on the same users"),
    # open problems
    _e("open problem", "open problems", "benchmarks", "few shared, realistic benchmarks",
       "09_evaluation", "LaMP itself, when its files are present"),
    _e("open problem", "open problems", "cold start", "users and items with little data",
       "10_open_problems", "Lab 1 · Cold start"),
    _e("open problem", "open problems", "bias", "quality differs across groups", "10_open_problems",
       "Lab 2 · Fairness and bias"),
    _e("open problem", "open problems", "privacy", "user data in prompts and weights",
       "10_open_problems", "Lab 4 · Privacy"),
    _e("open problem", "open problems", "multimodality", "beyond text (not covered: the series is text only)"),
)


def entries(axis: str | None = None) -> list[Entry]:
    """All entries, or those of one axis (one of :data:`AXES`)."""
    if axis is not None and axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; valid axes: {', '.join(AXES)}")
    return [e for e in TAXONOMY if axis is None or e.axis == axis]


def table():
    """The taxonomy as a DataFrame: axis, family, name, description, where (notebook ›
    section, "planned: notebook", or "not covered")."""
    import pandas as pd

    return pd.DataFrame([{
        "axis": e.axis, "family": e.family, "name": e.name, "description": e.description,
        "where": f"{e.notebook} › {e.section}" if e.implemented
        else f"planned: {e.planned}" if e.planned else "not covered",
    } for e in TAXONOMY])


def notebook_headings(notebook: str) -> list[str]:
    """The markdown headings (lines starting with '#') of ``notebooks/<notebook>.ipynb``."""
    import nbformat

    nb = nbformat.read(config.NOTEBOOKS_DIR / f"{notebook}.ipynb", as_version=4)
    return [line.lstrip("#").strip() for cell in nb.cells if cell.cell_type == "markdown"
            for line in cell.source.splitlines() if line.startswith("#")]


def plot_taxonomy(ax=None):
    """Draw the taxonomy map: one column per axis, one box per entry; implemented entries
    are filled and carry their notebook number, planned ones are outlined. Returns the figure."""
    import matplotlib.pyplot as plt

    columns = {axis: entries(axis) for axis in AXES}
    height = max(len(v) for v in columns.values())
    if ax is None:
        _, ax = plt.subplots(figsize=(2.6 * len(AXES), 0.42 * height + 1.2))
    colors = plt.get_cmap("tab10")
    for i, (axis, items) in enumerate(columns.items()):
        ax.text(i, 0.2, axis.upper(), ha="center", va="bottom", fontsize=10, fontweight="bold")
        families = list(dict.fromkeys(e.family for e in items))
        for j, e in enumerate(items):
            where = (e.notebook or e.planned or "")[:2]
            label = f"{e.name}  [{where}]" if where else e.name
            color = colors(families.index(e.family) % 10)
            ax.text(i, -j - 0.5, label, ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.3", linewidth=1, edgecolor=color,
                              facecolor=color if e.implemented else "white",
                              alpha=0.35 if e.implemented else 1.0))
    ax.set_xlim(-0.6, len(AXES) - 0.4)
    ax.set_ylim(-height - 0.3, 0.8)
    ax.axis("off")
    ax.set_title("The survey's taxonomy and where the notebooks show it "
                 "(filled: implemented, outlined: planned; [NN] = notebook)", fontsize=10)
    return ax.figure
