"""PersonaChat personas from fact embeddings (p13n_utils.personas, PersonaChat part), with a
deterministic keyword embedder so that the planted groups are known."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from p13n_utils import personas

TOPICS = ["dog", "music", "soccer"]


class KeywordEmbedder:
    """A stand-in for MiniLM: a text's vector is a one-hot of the topic word it contains plus
    a small pseudo-random part seeded by the text (so distinct facts differ)."""

    def encode(self, texts, normalize_embeddings=True, batch_size=32):
        out = []
        for text in texts:
            topic = np.array([float(t in text) for t in TOPICS])
            seed = int(hashlib.md5(text.encode()).hexdigest()[:8], 16)
            noise = np.random.default_rng(seed).normal(0, 0.25, 8)
            v = np.concatenate([topic, noise])
            out.append(v / np.linalg.norm(v) if normalize_embeddings else v)
        return np.array(out)


def _planted(n_per_topic=6):
    """user -> facts: users 0-5 talk about dogs, 6-11 about music, 12-17 about soccer."""
    facts, truth = {}, {}
    for g, topic in enumerate(TOPICS):
        for j in range(n_per_topic):
            user = g * n_per_topic + j
            facts[user] = [f"i love my {topic} number {user}-{i}." for i in range(4)]
            truth[user] = g
    return facts, pd.Series(truth)


def test_clusters_recover_planted_groups_and_are_numbered_by_size():
    facts, truth = _planted()
    vectors = personas.embed_facts(KeywordEmbedder(), facts)
    assert len(vectors) == 72 and all(np.isclose(np.linalg.norm(v), 1) for v in vectors.values())
    p = personas.personachat_fact_personas(facts, vectors, k=3, seed=0)
    assert adjusted_rand_score(truth[p.assignments.index], p.assignments) == 1.0
    assert p.k == 3 and np.allclose(np.linalg.norm(p.centroids, axis=1), 1)
    table = p.descriptions(n_facts=2)
    assert table["n_users"].tolist() == [6, 6, 6]
    for _, row in table.iterrows():      # each persona is described by facts of its own topic
        topic = TOPICS[truth[p.assignments[p.assignments == row["persona"]].index[0]]]
        assert len(row["central_facts"]) == 2 and all(topic in f for f in row["central_facts"])


def test_context_for_excludes_every_fact_of_the_user():
    facts, truth = _planted()
    p = personas.personachat_fact_personas(facts, personas.embed_facts(KeywordEmbedder(), facts), k=3)
    for user in facts:
        context = p.context_for(user, n_facts=4)
        assert len(context) == 4 and not set(context) & set(facts[user])
        assert all(TOPICS[truth[user]] in f for f in context)
    with pytest.raises(KeyError, match="assign_persona"):
        p.context_for(999)


def test_describe_skips_near_duplicates():
    facts = {0: ["i love my dog.", "i love my dog !"], 1: ["i love my dog ."], 2: ["i play music."]}
    embedder = KeywordEmbedder()
    p = personas.personachat_fact_personas(facts, personas.embed_facts(embedder, facts), k=2)
    dog = int(p.assignments[0])
    assert len(p.describe(dog, n_facts=3, max_similarity=0.5)) == 1     # all three are one fact
    assert len(p.describe(dog, n_facts=3, max_similarity=1.01)) == 3
    with pytest.raises(ValueError, match="persona must be"):
        p.describe(5)


def test_assign_persona_new_user_and_cold_start():
    facts, truth = _planted()
    embedder = KeywordEmbedder()
    p = personas.personachat_fact_personas(facts, personas.embed_facts(embedder, facts), k=3)
    music_persona = p.assignments[6]
    assert personas.assign_persona(p, ["my music is loud.", "i sing music."], embedder) == music_persona
    assert personas.assign_persona(p, facts[12]) == p.assignments[12]      # known facts: no embedder needed
    assert personas.assign_persona(p, []) == -1 and personas.assign_persona(p, ["  "]) == -1
    with pytest.raises(ValueError, match="embedder"):
        personas.assign_persona(p, ["a brand new fact about soccer"])


def test_k_curve_trade_off_and_choice():
    facts, truth = _planted()
    embedder = KeywordEmbedder()
    vectors = personas.embed_facts(embedder, facts)
    # validation texts: each user says something about their topic
    targets = {u: embedder.encode([f"talking about {TOPICS[truth[u]]} again"]) for u in facts}
    curve = personas.persona_k_curve(facts, vectors, [1, 3, 9, 18], targets)
    by_k = curve.set_index("k")
    assert by_k.loc[1, "users_per_persona"] == 18 and by_k.loc[18, "min_users"] == 1
    assert by_k.loc[3, "specificity"] > by_k.loc[1, "specificity"]
    assert by_k.loc[3, "target_lift"] > 0.1 > abs(by_k.loc[1, "target_lift"])
    assert by_k.loc[18, "fallback_users"] == 18 and np.isnan(by_k.loc[18, "target_lift"])
    assert np.isnan(by_k.loc[1, "silhouette"]) and by_k.loc[3, "silhouette"] > 0.5
    assert personas.choose_k_min_users(curve, 6) == 3
    assert personas.choose_k_min_users(curve, 1) == 18
    with pytest.raises(ValueError, match="min_users"):
        personas.choose_k_min_users(curve[curve["k"] > 1], 50)


def test_bad_input():
    with pytest.raises(ValueError, match="no persona facts"):
        personas.embed_facts(KeywordEmbedder(), {0: []})
    facts, _ = _planted(2)
    vectors = personas.embed_facts(KeywordEmbedder(), facts)
    with pytest.raises(ValueError, match="between 1 and the number of users"):
        personas.personachat_fact_personas(facts, vectors, k=7)
    with pytest.raises(KeyError, match="embed_facts"):
        personas.personachat_fact_personas({**facts, 99: ["unseen fact"]}, vectors, k=2)
    # users without facts are left out of the clustering (cold start), not an error
    p = personas.personachat_fact_personas({**facts, 50: []}, vectors, k=2)
    assert 50 not in p.assignments.index
