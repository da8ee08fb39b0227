"""Generated-text metrics: rougeL and persona similarity (p13n_utils.metrics)."""

import numpy as np
import pytest

from p13n_utils import metrics
from test_personas_text import KeywordEmbedder


def test_rouge_l_known_values():
    scores = metrics.rouge_l(["the cat sat", "dogs bark", "", "The Cats sat"],
                             ["the cat sat on the mat", "dogs bark", "anything", "the cat sat"])
    # LCS 3 of 3 and 6 tokens: P=1, R=0.5 -> F=2/3; identical -> 1; empty -> 0; stemming + case
    np.testing.assert_allclose(scores, [2 / 3, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="references"):
        metrics.rouge_l(["a"], ["a", "b"])


def test_persona_similarity_prefers_the_right_persona():
    embedder = KeywordEmbedder()
    dog_facts, music_facts = ["i have a dog.", "my dog is old."], ["i play music.", "music is life."]
    replies = ["my dog loves walks", "my dog loves walks", "loud music tonight"]
    sims = metrics.persona_similarity(embedder, replies, [dog_facts, music_facts, music_facts])
    assert sims[0] > 0.5 > sims[1] and sims[2] > 0.5
    assert ((sims >= -1) & (sims <= 1)).all()
    # the centroid cosine equals the cosine with the mean vector computed by hand
    e = embedder.encode(replies[:1] + dog_facts)
    centroid = e[1:].mean(axis=0)
    assert sims[0] == pytest.approx(e[0] @ centroid / np.linalg.norm(centroid))
    with pytest.raises(ValueError, match="at least one persona fact"):
        metrics.persona_similarity(embedder, ["x"], [[]])
    with pytest.raises(ValueError, match="personas"):
        metrics.persona_similarity(embedder, ["x", "y"], [dog_facts])
