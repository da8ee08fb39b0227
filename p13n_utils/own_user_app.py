"""The page of notebook 12: what a round shows, as HTML (:func:`round_html`, also used headless),
and the ipywidgets form that collects the learner's input (:func:`make_app`). The widgets only
call :func:`p13n_utils.own_user.play_round`; an :class:`p13n_utils.own_user.InputError` (or any
other failure) becomes a message on the page, never a traceback.

Served as a web page with ``voila notebooks/12_your_own_user.ipynb``; the CSS classes
``p13n-*`` are what the browser test (tests/test_voila.py) drives.
"""

from __future__ import annotations

import html

import numpy as np

from . import own_user

__all__ = ["LEVEL_TITLES", "METHOD_TITLES", "round_html", "error_html", "make_app", "star_label"]

LEVEL_TITLES = {"global": "Global (no persona)", "persona": "Persona level", "user": "User level: facts in the prompt",
                "user_rag": "User level: facts retrieved"}
METHOD_TITLES = {"popularity": "Popularity (global)", "persona_popularity": "Persona popularity",
                 "als_fold_in": "ALS, you folded in", "content_embed": "Content embedding",
                 "llm_profile": "LLM-written profile"}
_CARD = "flex:1 1 0;min-width:220px;border:1px solid #ccc;border-radius:6px;padding:8px;margin:4px;font-size:13px"


def _e(text) -> str:
    return html.escape(str(text))


def star_label(stars: float) -> str:
    """``"★★★★½ 4.5"``: the picker's label of a rating."""
    full = int(stars)
    return "★" * full + ("½" if stars - full else "") + f" {stars:.1f}"


def error_html(message: str) -> str:
    """A clear message on the page (the learner's input could not be used)."""
    return (f"<div class='p13n-error' style='color:#a00;border:1px solid #a00;padding:8px;border-radius:6px'>"
            f"<b>Please check your input.</b> {_e(message)}</div>")


def _facts_list(lines, picked=()) -> str:
    if not lines:
        return "<div><i>(none)</i></div>"
    return "<ul style='margin:2px 0 2px 16px;padding:0'>" + "".join(
        f"<li>{'<b>' if i in picked else ''}{_e(line)}{'</b>' if i in picked else ''}</li>"
        for i, line in enumerate(lines)) + "</ul>"


def _replies_html(result) -> str:
    cards = []
    for row in result.replies.itertuples():
        ctx = result.contexts[row.level]
        lp = result.logprobs
        scores = " · ".join(f"{own_user_level_short(p)} {lp.loc[p, row.level]:.1f}" for p in lp.index)
        cards.append(
            f"<div class='p13n-reply' data-level='{row.level}' style='{_CARD}'>"
            f"<b>{_e(LEVEL_TITLES[row.level])}</b><br><small>{_e(ctx['note'])}</small>{_facts_list(ctx['context'])}"
            f"<blockquote class='p13n-reply-text' style='margin:6px 0;padding:4px 8px;background:#f4f4f8'>"
            f"{_e(row.reply)}</blockquote>"
            f"<small class='p13n-change'><b>What changed:</b> {_e(result.changes[row.level])}</small><br>"
            f"<small>log p(this reply) under each prompt, nats: {_e(scores)}</small></div>")
    return "<div style='display:flex;flex-wrap:wrap'>" + "".join(cards) + "</div>"


def own_user_level_short(level: str) -> str:
    return {"global": "global", "persona": "persona", "user": "user", "user_rag": "user-RAG"}[level]


def _lists_html(result) -> str:
    recs = result.recommendations
    cards = []
    for method in own_user.RECOMMENDERS:
        if method not in recs:
            continue
        items = "".join(f"<li>{_e(r.title)} <small style='color:#666'>← {_e(r.because)}</small></li>"
                        for r in recs[method].itertuples())
        cards.append(f"<div class='p13n-list' data-method='{method}' style='{_CARD}'><b>{_e(METHOD_TITLES[method])}</b>"
                     f"<ol style='margin:2px 0 2px 18px;padding:0'>{items}</ol></div>")
    return "<div style='display:flex;flex-wrap:wrap'>" + "".join(cards) + "</div>"


def _explain_html(result) -> str:
    persona = result.contexts["persona"]
    rag = result.contexts["user_rag"]
    recs = result.recommendations
    best = result.ratings.sort_values("rating", ascending=False, kind="stable")
    drivers = recs.get("drivers", {})
    return (
        "<details class='p13n-explain' open><summary><b>Explain</b></summary>"
        f"<p><b>The retriever</b> (dense, for your message) picked, in bold:</p>{_facts_list(result.facts, rag['retrieved'])}"
        f"<p><b>Your persona</b> is number {persona['persona']} of the PersonaChat personas "
        f"({persona['n_users']} users). Facts of its members, most central first:</p>{_facts_list(persona['members'])}"
        f"<p><b>Your ratings</b>, best first: {_e('; '.join(f'{r.label} {r.rating:g}' for r in best.itertuples()))}.</p>"
        f"<p><b>Your genre persona</b>: {_e(recs['persona']['label'])} "
        f"(its top genres: {_e(', '.join(recs['persona']['top_genres']))}).</p>"
        + "".join(f"<p><b>{_e(METHOD_TITLES[m])}</b> drew most on: {_e('; '.join(d[:3]))}.</p>" for m, d in drivers.items())
        + (f"<p><b>The LM's profile of your taste</b>: <i>{_e(recs['profile'])}</i></p>" if recs.get("profile") else "")
        + "</details>")


def round_html(result) -> str:
    """The whole answer of a round: replies side by side, the lists side by side, the explain
    view and the round's time."""
    seconds = result.seconds
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if k != "total")
    return ("<div class='p13n-result'>"
            f"<h3>Replies to: <i>{_e(result.message)}</i></h3>{_replies_html(result)}"
            f"<h3>Recommended for you</h3>{_lists_html(result)}{_explain_html(result)}"
            f"<p class='p13n-time'><small>This round took {seconds['total']:.1f} s ({_e(steps)}).</small></p></div>")


def make_app(world, facts, ratings, message):
    """The form: facts (text area), a searchable movie picker with stars, the ratings (text
    area, one ``Title (year) = stars`` per line), the message, a button, a progress bar and the
    answer. The defaults fill the form."""
    import ipywidgets as w

    lines = facts if isinstance(facts, str) else "\n".join(facts)
    rating_lines = ratings if isinstance(ratings, str) else "\n".join(f"{t} = {r:g}" for t, r in dict(ratings).items())
    facts_box = w.Textarea(value=lines, placeholder="One fact per line, e.g. I love hiking.",
                           layout=w.Layout(width="98%", height="110px"))
    facts_box.add_class("p13n-facts")
    search = w.Combobox(placeholder="Search a movie title…", options=list(world.labels), ensure_option=False,
                        layout=w.Layout(width="55%"))
    search.add_class("p13n-search")
    stars = w.Dropdown(options=[(star_label(s), s) for s in np.arange(10, 0, -1) / 2], value=4.0,
                       layout=w.Layout(width="120px"))
    stars.add_class("p13n-stars")
    add = w.Button(description="Add rating", icon="plus")
    add.add_class("p13n-add")
    ratings_box = w.Textarea(value=rating_lines, placeholder="Title (year) = stars, one per line",
                             layout=w.Layout(width="98%", height="150px"))
    ratings_box.add_class("p13n-ratings")
    message_box = w.Text(value=message, placeholder="Your message to the chatbot", layout=w.Layout(width="98%"))
    message_box.add_class("p13n-message")
    go = w.Button(description="Personalize for me", button_style="primary", layout=w.Layout(width="220px"))
    go.add_class("p13n-go")
    bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="", layout=w.Layout(width="300px"))
    status = w.HTML()
    status.add_class("p13n-status")
    answer = w.HTML()
    answer.add_class("p13n-output")

    def on_add(_):
        title = search.value.strip()
        if title not in set(world.labels):
            close = own_user.search_titles(world.labels, title, n=5)
            status.value = error_html(f"No movie '{title}' in the catalog." +
                                      (f" Did you mean: {'; '.join(close)}?" if close else ""))
            return
        ratings_box.value = (ratings_box.value.rstrip("\n") + "\n" if ratings_box.value.strip() else "") + \
            f"{title} = {stars.value:g}"
        search.value, status.value = "", f"Added {html.escape(title)}."

    def on_progress(step, fraction):
        bar.value, status.value = fraction, f"Working: {html.escape(step)}…"

    def on_go(_):
        go.disabled, answer.value = True, ""
        try:
            result = own_user.play_round(world, facts_box.value, ratings_box.value, message_box.value,
                                         progress=on_progress)
            answer.value, status.value = round_html(result), f"Done in {result.seconds['total']:.1f} s."
        except own_user.InputError as err:
            answer.value, status.value, bar.value = error_html(str(err)), "", 0.0
        except Exception as err:  # a page must never show a traceback
            answer.value, status.value = error_html(f"Something went wrong ({type(err).__name__}: {err})."), ""
        finally:
            go.disabled = False

    add.on_click(on_add)
    go.on_click(on_go)
    label = lambda text: w.HTML(f"<b>{text}</b>")  # noqa: E731
    return w.VBox([label("About you (one fact per line)"), facts_box,
                   label("Movies you rated"), w.HBox([search, stars, add]), ratings_box,
                   label("Your message to the chatbot"), message_box,
                   w.HBox([go, bar]), status, answer])
