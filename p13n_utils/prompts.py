"""Every prompt template of the series, the chat format, and the one way a movie becomes text.

* :func:`chat_prompt` — a message (or a conversation) in the model's chat template.
* The two direct tasks (below), the profile-summary requests of notebook 04
  (:func:`pc_summary_prompt`, :func:`ml_summary_prompt`) and the recommendation prompts of
  notebook 08 (:func:`rerank_prompts`, :func:`profile_prompts`).
* :func:`movie_text` / :func:`movie_descriptions` — a movie as text, in the short inline form
  of the prompts (``"Heat (1995; Action, Crime)"``) or the sentence form embedded by the
  content-based recommenders (``"Heat (1995). Genres: Action, Crime. Tags: heist."``).

Every notebook from 02 (global) to 07 builds its prompts here, so that the rungs differ only in
the *context* they put in front of the model, never in the wording around it:

- **PersonaChat** (predict the user's next utterance): a system message that says who is
  speaking (optionally followed by a block of context facts), the last ``n_history`` turns of
  the conversation as chat messages (partner = ``user``, our user = ``assistant``), and the
  partner's new message. The gold reply is scored as the assistant's answer.
- **MovieLens rating** (LaMP-3 style): a system message asking for one digit, then an
  optional context block (a persona description, the user's own ratings, retrieved ratings)
  and the target movie; the assistant's turn is opened with :data:`RATING_ANSWER_PREFIX`
  (``"Rating: "``). The answer is read from the LM's next-token distribution over
  ``"1"``…``"5"`` (:func:`p13n_utils.tasks.predict_ratings`), so no free text is parsed. The
  prefix was chosen on *validation* pairs: with it SmolLM2-135M puts ~97% of its next-token
  probability on the five labels, against ~23% when the answer starts right after the chat
  template (where it mostly starts a sentence instead), so the renormalised distribution
  reflects what the model means to answer.

Context blocks are plain lists of strings; :func:`context_block` renders them under a header.
The headers name the granularity: :data:`HEADERS` ``["user"]`` for the user's own data,
``["persona"]`` for a persona (group) description. ``context=None`` or ``[]`` gives the global,
non-personalized prompt.

Example
-------
>>> from p13n_utils import models, prompts
>>> model, tok = models.load_lm()
>>> print(prompts.personachat_prompt(tok, "do you have pets ?", history=[],
...                                  context=["i have two dogs."], header=prompts.HEADERS["user"]))
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

__all__ = [
    "chat_prompt", "CHAT_SYSTEM", "RATING_SYSTEM", "HEADERS", "RATING_CANDIDATES", "RATING_ANSWER_PREFIX",
    "context_block", "personachat_system", "personachat_messages", "personachat_prompt", "movie_text",
    "movie_descriptions", "rating_line", "rating_message", "rating_prompt", "genre_persona_lines",
    "SUMMARY_SYSTEM", "PC_SUMMARY_REQUEST", "PC_SUMMARY_PREFIX", "ML_SUMMARY_REQUEST", "ML_SUMMARY_PREFIX",
    "pc_summary_prompt", "ml_summary_prompt", "RERANK_SYSTEM", "rerank_prompts", "profile_prompts",
]


def chat_prompt(tokenizer, user_message, system: str | None = None) -> str:
    """Format a message in the model's chat template, ready for the assistant's reply.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    user_message : str or list of dict
        The user's message, or a whole conversation as ``[{"role": "user"|"assistant",
        "content": ...}, ...]`` ending with a user turn.
    system : str, optional
        A system message. Without one, the template's default applies (SmolLM2 inserts
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face").

    Returns
    -------
    str
        The prompt text, ending where the assistant's reply starts (``add_generation_prompt``).
        A tokenizer without a chat template gets a plain ``"User: …\\nAssistant:"`` layout.
    """
    if isinstance(user_message, str):
        messages = [{"role": "user", "content": user_message}]
    else:
        messages = [dict(message) for message in user_message]
        if not messages or any(set(m) != {"role", "content"} for m in messages):
            raise ValueError("user_message must be a string or a non-empty list of {'role', 'content'} dicts")
    if system is not None:
        messages = [{"role": "system", "content": system}] + messages
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


CHAT_SYSTEM = ("You are a person chatting with someone you just met. "
               "Reply with one short, casual sentence.")
"""System message of every PersonaChat prompt (the context block, if any, follows it)."""

RATING_SYSTEM = ("You predict how a viewer rates movies on a scale from 1 (hated it) to 5 "
                 "(loved it). Answer with a single digit.")
"""System message of every rating prompt."""

RATING_CANDIDATES = ["1", "2", "3", "4", "5"]
"""The rating labels, one token each in SmolLM2's vocabulary."""

RATING_ANSWER_PREFIX = "Rating: "
"""Text that opens the assistant's answer of a rating prompt; the label is the next token."""

HEADERS = {
    "user": "About you:",
    "persona": "You are a typical member of a group of people described by:",
    "user_ratings": "Movies this viewer rated before (stars out of 5):",
    "persona_ratings": "This viewer belongs to a group of viewers described as:",
    "user_summary": "About this viewer:",
}
"""Headers of the context block, by kind of context (see :func:`context_block`)."""


def _check_text(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    return value


def context_block(context: Sequence[str] | None, header: str) -> str:
    """Render context lines under ``header`` as a bulleted block ("" when there is none).

    Parameters
    ----------
    context : list of str or None
        Facts, persona descriptions or past ratings, one per line. Blank lines are dropped.
    header : str
        The first line, e.g. ``HEADERS["user"]``.

    Returns
    -------
    str
        ``"header\\n- line 1\\n- line 2"``, or ``""`` if ``context`` is None or empty.
    """
    if context is None:
        return ""
    if isinstance(context, str):
        raise TypeError("context must be a list of strings, not one string; wrap it: [context]")
    lines = [_check_text(line, "each context line").strip() for line in context]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    return header + "\n" + "\n".join(f"- {line}" for line in lines)


# --------------------------------------------------------------------------- PersonaChat
def personachat_system(context: Sequence[str] | None = None, header: str = HEADERS["user"]) -> str:
    """The system message: :data:`CHAT_SYSTEM`, then the context block if there is one."""
    block = context_block(context, header)
    return CHAT_SYSTEM if not block else f"{CHAT_SYSTEM}\n{block}"


def personachat_messages(partner: str, history: Sequence[tuple[str, str]] = (),
                         n_history: int = 2) -> list[dict]:
    """The conversation as chat messages: the last ``n_history`` (partner, self) turns, then
    the partner's new message.

    Parameters
    ----------
    partner : str
        What the other speaker just said (must not be empty).
    history : sequence of (partner, self) tuples
        The earlier turns of this dialogue, oldest first.
    n_history : int, default 2
        How many of the most recent turns to keep (0 keeps none).

    Returns
    -------
    list of dict
        ``[{"role": "user", ...}, {"role": "assistant", ...}, ..., {"role": "user", ...}]``.
    """
    partner = _check_text(partner, "partner").strip()
    if not partner:
        raise ValueError("the partner's message is empty: there is nothing to reply to")
    if int(n_history) != n_history or n_history < 0:
        raise ValueError(f"n_history must be a non-negative integer, got {n_history}")
    turns = list(history)[-n_history:] if n_history else []
    messages = []
    for turn in turns:
        if len(turn) != 2:
            raise ValueError(f"each history turn must be a (partner, self) pair, got {turn!r}")
        messages += [{"role": "user", "content": _check_text(turn[0], "history partner")},
                     {"role": "assistant", "content": _check_text(turn[1], "history reply")}]
    return messages + [{"role": "user", "content": partner}]


def personachat_prompt(tokenizer, partner: str, history: Sequence[tuple[str, str]] = (),
                       context: Sequence[str] | None = None, header: str = HEADERS["user"],
                       n_history: int = 2) -> str:
    """The full PersonaChat prompt, ending where the user's reply starts.

    ``context=None`` is the global (no persona) prompt; a persona description or the user's
    own facts go in ``context`` with the matching ``header`` (:data:`HEADERS`).
    """
    return chat_prompt(tokenizer, personachat_messages(partner, history, n_history),
                       system=personachat_system(context, header))


# --------------------------------------------------------------------------- MovieLens rating
def _known(value) -> bool:
    """False for None, NaN, NA and the empty string."""
    return value is not None and not pd.isna(value) and str(value).strip() != ""


def movie_text(title: str, year=None, genres: str | None = None, tags: Sequence[str] = (),
               style: str = "inline") -> str:
    """A movie as text: the one place where a movie becomes words.

    style "inline" (prompts and context lines): ``"Heat (1995; Action, Crime, Thriller)"``;
    without genres ``"Heat (1995)"``; ``tags`` are not used.
    style "sentences" (texts the recommenders embed): ``"Heat (1995). Genres: Action, Crime."``
    followed by ``" Tags: heist, la."`` when ``tags`` are given.

    ``genres`` is MovieLens's pipe-separated string; ``"(no genres listed)"``, None or NA are
    left out, and so is a missing year.
    """
    title = _check_text(title, "title").strip() or "an unknown movie"
    year = str(int(float(year))) if _known(year) else None
    genres = ", ".join(genres.split("|")) if isinstance(genres, str) and genres and genres != "(no genres listed)" \
        else None
    if style == "inline":
        parts = [p for p in (year, genres) if p]
        return f"{title} ({'; '.join(parts)})" if parts else title
    if style != "sentences":
        raise ValueError(f"style must be 'inline' or 'sentences', got {style!r}")
    text = f"{title} ({year})" if year else title
    text = f"{text}. Genres: {genres}." if genres else f"{text}."
    return text + (" Tags: " + ", ".join(tags) + "." if len(tags) else "")


def movie_descriptions(movies: pd.DataFrame, item_ids: Sequence, genres: bool = True,
                       style: str = "inline", tags: dict | None = None,
                       unknown: str = "movie #{item}") -> list[str]:
    """:func:`movie_text` of each item of a MovieLens ``movies`` table (``item_id, title``,
    optional ``year, genres``).

    genres : False leaves the genres out (``"Heat (1995)"``, shorter, for context lines).
    tags : item -> list of tags, for ``style="sentences"`` (see :func:`p13n_utils.recsys.item_texts`).
    unknown : the text of an item missing from ``movies``, formatted with ``item``.
    """
    info = movies.drop_duplicates("item_id").set_index("item_id")
    tags = tags or {}
    out = []
    for item in list(item_ids):
        if item not in info.index:
            out.append(unknown.format(item=item))
            continue
        row = info.loc[item]
        out.append(movie_text(str(row["title"]), row.get("year"), row.get("genres") if genres else None,
                              tags.get(item, ()), style))
    return out


def rating_line(movie: str, rating: float) -> str:
    """One past rating as a context line: ``"Heat (1995; Action): 4.5"``."""
    return f"{movie}: {float(rating):g}"


def rating_message(movie: str, context: Sequence[str] | None = None,
                   header: str = HEADERS["user_ratings"]) -> str:
    """The user message of a rating prompt: the context block (if any) and the question."""
    movie = _check_text(movie, "movie").strip()
    if not movie:
        raise ValueError("the movie text is empty; build it with prompts.movie_text(title, year, genres)")
    block = context_block(context, header)
    question = f"How many stars (1-5) would this viewer give {movie}?"
    return f"{block}\n\n{question}" if block else question


def rating_prompt(tokenizer, movie: str, context: Sequence[str] | None = None,
                  header: str = HEADERS["user_ratings"]) -> str:
    """The full rating prompt, ending with :data:`RATING_ANSWER_PREFIX` where the digit starts.

    Parameters
    ----------
    tokenizer
    movie : str
        The target movie, e.g. from :func:`movie_text`.
    context : list of str, optional
        Persona description lines or the user's past ratings (:func:`rating_line`); None is the
        zero-shot global prompt.
    header : str
        Header of the context block (:data:`HEADERS`).
    """
    return chat_prompt(tokenizer, rating_message(movie, context, header), system=RATING_SYSTEM) + RATING_ANSWER_PREFIX


def genre_persona_lines(top_genres: Sequence[str], mean_rating: float | None = None,
                        n_users: int | None = None) -> list[str]:
    """Context lines describing a MovieLens genre persona (for ``HEADERS["persona_ratings"]``):
    ``["Favourite genres: Horror, Thriller", "Average rating given: 3.4 stars"]``."""
    lines = []
    if len(top_genres):
        lines.append("Favourite genres: " + ", ".join(str(g) for g in top_genres))
    if mean_rating is not None:
        lines.append(f"Average rating given: {float(mean_rating):.1f} stars")
    if n_users is not None:
        lines.append(f"Group size: {int(n_users)} viewers")
    return lines


# --------------------------------------------------------------------------- profile summaries (04)
SUMMARY_SYSTEM = ("You write short, factual profiles of people. Use only the information you are "
                  "given; never invent names, ages or places.")
"""System message of the profile-summary requests."""
PC_SUMMARY_REQUEST = ("Here is what we know about a person: their profile facts and things they "
                      "said in conversations.\n{data}\n\nDescribe this person in two short sentences, "
                      "in the first person.")
PC_SUMMARY_PREFIX = "I"
"""The summary's first word, written into the assistant turn so the LM continues in the first
person (it is part of the returned summary)."""
ML_SUMMARY_REQUEST = ("A viewer rated these movies (stars out of 5):\n{data}\n\nIn one or two short "
                      "sentences, describe this viewer's taste: the kinds of movies they like and dislike.")
ML_SUMMARY_PREFIX = "This viewer likes"


def pc_summary_prompt(tokenizer, facts: Sequence[str], replies: Sequence[str] = (), n_replies: int = 4) -> str:
    """The request for a PersonaChat profile summary: the user's facts and up to
    ``n_replies`` of their past replies (training turns only), in the chat template, ending
    with :data:`PC_SUMMARY_PREFIX` (pass ``prefix=PC_SUMMARY_PREFIX`` to
    :func:`p13n_utils.user_context.profile_summaries`)."""
    lines = [f"- {f}" for f in facts] + [f'- said: "{r}"' for r in list(replies)[:n_replies]]
    if not lines:
        raise ValueError("nothing to summarise: the user has no facts and no replies (cold start)")
    request = PC_SUMMARY_REQUEST.format(data="\n".join(lines))
    return chat_prompt(tokenizer, request, system=SUMMARY_SYSTEM) + PC_SUMMARY_PREFIX


def ml_summary_prompt(tokenizer, rating_lines: Sequence[str]) -> str:
    """The request for a MovieLens profile summary from the user's rating lines
    (:func:`rating_line`, e.g. :func:`p13n_utils.user_context.ml_summary_lines`); it ends with
    :data:`ML_SUMMARY_PREFIX`."""
    if not len(rating_lines):
        raise ValueError("nothing to summarise: the user has no ratings (cold start)")
    request = ML_SUMMARY_REQUEST.format(data="\n".join(f"- {line}" for line in rating_lines))
    return chat_prompt(tokenizer, request, system=SUMMARY_SYSTEM) + ML_SUMMARY_PREFIX


# --------------------------------------------------------------------------- recommendation (08)
RERANK_SYSTEM = "Answer Yes or No."


def rerank_prompts(tokenizer, liked: Sequence[str], candidates: Sequence[str]) -> list[str]:
    """One chat prompt per candidate: the user's liked titles, then a yes/no question.

    Kept short on purpose: on a CPU the cost of LM reranking is the number of prompt tokens
    (a short system message also replaces the template's longer default one). The prompts of
    one user differ only after the last line break of the profile, which
    :func:`p13n_utils.recsys_llm.llm_rerank` exploits to encode the profile once."""
    profile = "; ".join(liked)
    return [chat_prompt(tokenizer, f"A user liked: {profile}.\n"
                                   f"Would they enjoy this movie: {candidate} Answer Yes or No.",
                        system=RERANK_SYSTEM)
            for candidate in candidates]


def profile_prompts(tokenizer, liked: Sequence[Sequence[str]]) -> list[str]:
    """Chat prompts asking the LM to describe a user's taste from their liked titles."""
    return [chat_prompt(tokenizer, "A user liked these movies: " + "; ".join(titles) + ".\n"
                        "In one sentence, describe the kinds of movies this user enjoys "
                        "(genres, themes, moods).")
            for titles in liked]


# =========================================================================== preference alignment (notebook 07)
# Moved here from alignment.py (issue 16: every template in one module).
__all__ += ["RECOMMEND_SYSTEM", "RECOMMEND_QUESTION", "recommendation_prompt"]

RECOMMEND_SYSTEM = "You recommend movies. Answer with the title of one movie this viewer will enjoy."
"""System message of the MovieLens preference prompts."""
RECOMMEND_QUESTION = "Which movie should this viewer watch next?"
"""The question whose responses are movies (the chosen and rejected titles of a preference pair)."""


def recommendation_prompt(tokenizer, context: Sequence[str] | None = None,
                          header: str = HEADERS["user_ratings"]) -> str:
    """The prompt whose responses are movies: the context block (the user's ratings, a persona
    description, or none for the global prompt) and :data:`RECOMMEND_QUESTION`, in the chat template."""
    block = context_block(context, header)
    question = RECOMMEND_QUESTION
    return chat_prompt(tokenizer, f"{block}\n\n{question}" if block else question, system=RECOMMEND_SYSTEM)
