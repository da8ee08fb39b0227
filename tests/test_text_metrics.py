"""Generated-text metrics: rougeL and persona similarity (p13n_utils.metrics)."""

import numpy as np
import pandas as pd
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


# --------------------------------------------------------------------------- p13n_utils.text_metrics (09)
from p13n_utils import text_metrics as tm  # noqa: E402

PREDS = ["i love my dogs and cats!", "hello, how are you today?", "the the cat sat on a mat", "I am running fast",
         "nothing in common here", "Dogs? Dogs are the best, the BEST."]
REFS = ["my dog loves cats", "hi, how are you?", "the cat sat on the mat the", "she runs fast, i run",
        "totally different words", "the best dogs are dogs"]


def test_minimal_rouge_matches_the_rouge_score_package():
    # tolerance 1e-12: same tokenizer, same counting -> the same floats up to rounding
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    ours = tm.rouge_scores(PREDS, REFS)
    for i, (p, r) in enumerate(zip(PREDS, REFS)):
        ref = scorer.score(r, p)
        for key in ("rouge1", "rouge2", "rougeL"):
            assert ours.loc[i, key] == pytest.approx(ref[key].fmeasure, abs=1e-12), (key, p, r)
    np.testing.assert_allclose(ours["rougeL"], metrics.rouge_l(PREDS, REFS), atol=1e-12)


def test_rouge_by_hand():
    # "the cat sat" vs "the cat sat on the mat": 3 of 3 words, 3 of 6 -> F1 2/3; bigrams 2 of 2, 2 of 5 -> 4/7
    row = tm.rouge_scores(["the cat sat"], ["the cat sat on the mat"]).iloc[0]
    assert row["rouge1"] == pytest.approx(2 / 3) and row["rouge2"] == pytest.approx(4 / 7)
    assert row["rougeL"] == pytest.approx(2 / 3)
    assert tm.rouge_scores(["dogs bark"], ["cats meow"]).iloc[0].tolist() == [0.0, 0.0, 0.0]


def test_bleu_and_chrf_on_known_strings():
    same = tm.bleu_chrf(["the cat sat on the mat"], ["the cat sat on the mat"]).iloc[0]
    assert same["bleu"] == pytest.approx(1.0) and same["chrf"] == pytest.approx(1.0)
    # 1- to 4-gram precisions 3/4, 2/3, 1/2 and 0/1 -> exp smoothing 1/(2*1); same length: no brevity penalty
    bleu = tm.bleu_chrf(["a b c d"], ["a b c e"]).iloc[0]["bleu"]
    assert bleu == pytest.approx((0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25)
    disjoint = tm.bleu_chrf(["xyz"], ["abc"]).iloc[0]
    assert disjoint["bleu"] == 0.0 and disjoint["chrf"] == 0.0
    near, far = tm.bleu_chrf(["the cats sat", "a dog ran"], ["the cat sat", "the cat sat"])["chrf"]
    assert near > far


def test_text_metrics_refuse_empty_or_unpaired_input():
    for fn in (tm.rouge_scores, tm.bleu_chrf):
        with pytest.raises(ValueError, match="empty prediction"):
            fn(["ok", "  "], ["a", "b"])
        with pytest.raises(ValueError, match="empty reference"):
            fn(["ok"], [""])
        with pytest.raises(ValueError, match="references"):
            fn(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty prediction"):
        tm.bertscore(None, [""], ["a"])  # refused before any model is touched


def _tiny_bert(folder):
    """A random 2-layer BERT with a word-piece vocabulary, saved like a local model folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = "the a cat cats dog dogs sat on mat i love my and hello how are you today run runs fast best".split()
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "!", "?", ","]) + "\n")
    tok = BertTokenizer(str(vocab), model_max_length=64)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=64)).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    model = BertModel.from_pretrained(folder).eval()

    class Embedder:  # what bertscore reads of a SentenceTransformer: .tokenizer and [0].auto_model
        tokenizer = tok

        def __getitem__(self, i):
            return type("Module", (), {"auto_model": model})()

    return Embedder()


def test_minimal_bertscore_matches_the_bert_score_package_on_a_tiny_model(tmp_path):
    # tolerance 1e-5: bert-score computes in float32, ours in float64 from the same float32 vectors
    embedder = _tiny_bert(tmp_path)
    preds, refs = ["i love my dogs", "hello how are you", "the cat sat"], ["my dog runs fast", "how are you today",
                                                                            "the cat sat on the mat"]
    ours, package = tm.bertscore(embedder, preds, refs), tm.bertscore_package(embedder, preds, refs)
    np.testing.assert_allclose(ours.to_numpy(), package.to_numpy(), atol=1e-5)
    assert tm.bertscore(embedder, ["the cat sat"], ["the cat sat"])["bertscore_f1"].iloc[0] == pytest.approx(1.0)


@pytest.mark.model
def test_minimal_bertscore_matches_the_bert_score_package_with_minilm():
    from p13n_utils import models

    embedder = models.load_embedder()
    ours, package = tm.bertscore(embedder, PREDS, REFS), tm.bertscore_package(embedder, PREDS, REFS)
    np.testing.assert_allclose(ours.to_numpy(), package.to_numpy(), atol=1e-5)
    sims = tm.embedding_similarity(embedder, PREDS, REFS)
    assert sims[2] > sims[4]  # the paraphrase is closer than the unrelated pair


def test_metric_agreement_and_by_kind():
    rng = np.random.default_rng(0)
    x = rng.random(40)
    scores = pd.DataFrame({"user_id": np.repeat(np.arange(10), 4), "m1": x, "m2": 2 * x + 1, "m3": -x})
    agree = tm.metric_agreement(scores, ["m1", "m2", "m3"], n_resamples=50).set_index(["metric_a", "metric_b"])
    assert agree.loc[("m1", "m2"), ["tau", "lower", "upper"]].tolist() == pytest.approx([1, 1, 1])
    assert agree.loc[("m1", "m3"), "tau"] == pytest.approx(-1)
    assert agree.loc[("m1", "m2"), "n_users"] == 10 and agree.loc[("m1", "m2"), "n_replies"] == 40
    matrix = tm.agreement_matrix(agree.reset_index())
    assert matrix.loc["m3", "m1"] == pytest.approx(-1) and matrix.loc["m2", "m2"] == 1 and (matrix == matrix.T).all().all()
    kinds = pd.DataFrame({"short": x < 0.5})
    table = tm.agreement_by_kind(scores, kinds, [("m1", "m3")])
    assert table["n_replies"].sum() == 40 and (table["m1 vs m3"].dropna() == -1).all()
    with pytest.raises(ValueError, match="no scored replies"):
        tm.metric_agreement(scores.iloc[:0], ["m1", "m2"])
    k = tm.reply_kinds(["why not?", "i have three big dogs at home", "yes i do"], ["why", "cats", "no"])
    assert k["question"].tolist() == [True, False, False]
    assert k["short"].tolist() == [True, False, False]  # 2 words < the median 3; 7 and 3 are not
    assert k["no_shared_word"].tolist() == [False, True, True]
