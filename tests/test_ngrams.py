"""The n-gram head: its TF-IDF features, its fit, and the model that averages it with the GRU."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from sentiment.artifacts import load_model_dir, write_model_dir
from sentiment.config import ModelConfig, SentimentError, TextConfig, TrainConfig
from sentiment.models import build_model
from sentiment.ngrams import NgramHead, fit_ngram_head
from sentiment.text import Vocabulary, pad_batch

V = 12  # ids 0 and 1 are padding and <unk>; words are 2..11


def reference_tfidf(review, pairs, idf):
    """The head's vector of one review, written out plainly: tf · idf over √(Σ tf · idf²)."""
    feats = [int(w) for w in review if w >= 2]
    index = {int(k): j for j, k in enumerate(pairs)}
    feats += [
        V + index[int(a) * V + int(b)]
        for a, b in itertools.pairwise(review)
        if int(a) * V + int(b) in index
    ]
    x = np.zeros(V + len(pairs))
    for f, n in Counter(feats).items():
        x[f] = n * idf[f]
    norm = math.sqrt(sum(n * idf[f] ** 2 for f, n in Counter(feats).items()))
    return x / norm if norm else x


def random_reviews(n, seed=0, max_len=9):
    rng = np.random.default_rng(seed)
    return [rng.integers(2, V, size=rng.integers(1, max_len)).astype(np.int64) for _ in range(n)]


def test_head_logits_equal_the_plain_tfidf_formula_in_any_padded_batch():
    reviews = random_reviews(40)
    rng = np.random.default_rng(1)
    pairs = np.unique(rng.integers(2 * V + 2, V * V, size=30))
    idf = rng.uniform(1, 3, V + len(pairs)).astype(np.float32)
    coef = rng.normal(size=V + len(pairs)).astype(np.float32)
    head = NgramHead(V, len(pairs))
    with torch.no_grad():
        head.pairs.copy_(torch.from_numpy(pairs))
        head.idf.copy_(torch.from_numpy(idf))
        head.coef.copy_(torch.from_numpy(coef))
        head.bias.fill_(0.25)
    ids, lengths = pad_batch(reviews)
    batch = head(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
    for i, review in enumerate(reviews):
        expected = reference_tfidf(review, pairs, idf) @ coef + 0.25
        alone = head(torch.from_numpy(review[None]), torch.tensor([len(review)])).item()
        assert batch[i] == pytest.approx(expected, abs=1e-5)
        assert alone == pytest.approx(expected, abs=1e-5)


def test_fit_separates_sentiment_words_and_keeps_pairs_seen_in_min_df_reviews():
    good, bad, filler = 2, 3, list(range(4, V))
    rng = np.random.default_rng(0)
    reviews, labels = [], []
    for i in range(200):
        label = i % 2
        words = [*rng.choice(filler, size=6), good if label else bad]
        rng.shuffle(words)
        reviews.append(np.array(words, dtype=np.int64))
        labels.append(label)
    reviews.append(np.array([5, 11], dtype=np.int64))  # the pair (5, 11) ...
    labels.append(1)
    fit = fit_ngram_head(reviews, np.array(labels), V, c=10.0, min_df=2)
    assert fit.train_accuracy >= 0.99
    assert fit.coef[good] > 1.0 > -1.0 > fit.coef[bad]
    seen = Counter(k for r in reviews for k in set((r[:-1] * V + r[1:]).tolist()))
    assert sorted(fit.pairs.tolist()) == sorted(k for k, n in seen.items() if n >= 2)
    assert list(fit.pairs) == sorted(fit.pairs)
    assert fit.idf.shape == fit.coef.shape == (V + len(fit.pairs),)


def small_model(weight: float = 0.5, seed: int = 0):
    torch.manual_seed(seed)
    reviews = random_reviews(60, seed=seed)
    labels = np.array([int(r.sum() % 2) for r in reviews])
    fit = fit_ngram_head(reviews, labels, V, c=10.0, min_df=1)
    cfg = ModelConfig(
        vocab_size=V,
        embed_dim=4,
        hidden_size=3,
        ngrams=True,
        ngram_pairs=len(fit.pairs),
        ngram_weight=weight,
    )
    model = build_model(cfg, np.random.default_rng(seed).normal(size=(V, 4)))
    model.ngram.load_fit(fit)
    return model.eval(), reviews


def probabilities(model, ids, lengths):
    """P(positive) of the mixture, of the head alone and of the GRU alone."""
    with torch.no_grad():
        mixed = model(ids, lengths).exp()
        p_head = torch.sigmoid(model.ngram(ids, lengths))
        head, model.ngram = model.ngram, None
        p_gru = model(ids, lengths).exp()[:, 1]
        model.ngram = head
    assert torch.allclose(mixed.sum(1), torch.ones(len(ids)), atol=1e-6)
    return mixed[:, 1], p_head, p_gru


def test_model_mixes_gru_and_head_log_odds_by_the_weight():
    model, reviews = small_model(weight=0.3)
    ids, lengths = (torch.from_numpy(a) for a in pad_batch(reviews))
    mixed, p_head, p_gru = probabilities(model, ids, lengths)
    logit = torch.logit(p_gru.double()) * 0.7 + torch.logit(p_head.double()) * 0.3
    assert torch.allclose(mixed.double(), torch.sigmoid(logit), atol=1e-5)
    # The normalised geometric mean of the two distributions, weighted.
    geometric = p_gru**0.7 * p_head**0.3
    rest = (1 - p_gru) ** 0.7 * (1 - p_head) ** 0.3
    assert torch.allclose(mixed, geometric / (geometric + rest), atol=1e-5)


def test_equal_shares_decide_as_the_average_of_probabilities():
    """At w = 0.5 the log-odds mix picks the class the plain average would: only how sure
    it says it is differs (sharper; the average pulls towards 0.5)."""
    model, reviews = small_model(weight=0.5, seed=3)
    ids, lengths = (torch.from_numpy(a) for a in pad_batch(reviews))
    mixed, p_head, p_gru = probabilities(model, ids, lengths)
    average = (p_gru + p_head) / 2
    assert torch.equal(mixed > 0.5, average > 0.5)
    assert ((mixed - 0.5).abs() >= (average - 0.5).abs() - 1e-6).all()


@pytest.mark.parametrize("weight, alone", [(0.0, "gru"), (1.0, "head")])
def test_a_share_of_zero_or_one_is_the_gru_or_the_head_alone(weight, alone):
    model, reviews = small_model(weight=weight)
    ids, lengths = (torch.from_numpy(a) for a in pad_batch(reviews))
    mixed, p_head, p_gru = probabilities(model, ids, lengths)
    assert torch.allclose(mixed, p_gru if alone == "gru" else p_head, atol=1e-6)


def test_training_mode_reads_the_gru_alone():
    model, reviews = small_model()
    ids, lengths = (torch.from_numpy(a) for a in pad_batch(reviews))
    trained = model.train()(ids, lengths)
    model.ngram = None
    assert torch.equal(trained, model.train()(ids, lengths))


def test_a_read_only_fit_loads_silently_and_is_copied():
    """A Ray worker gets the fit's arrays read-only from the object store."""
    reviews = random_reviews(40, seed=5)
    fit = fit_ngram_head(reviews, np.array([i % 2 for i in range(40)]), V, c=10.0, min_df=1)
    for a in (fit.pairs, fit.idf, fit.coef):
        a.setflags(write=False)
    head = NgramHead(V, len(fit.pairs))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head.load_fit(fit)
    head.coef.add_(1.0)  # the head's own tensors, not views of the fit's arrays
    assert np.allclose(head.coef.numpy() - 1.0, fit.coef, atol=1e-6)


def test_model_directory_round_trip_keeps_the_head(tmp_path):
    model, reviews = small_model()
    vocab = Vocabulary.from_words([f"w{i}" for i in range(V - 2)])
    write_model_dir(tmp_path / "m", model, vocab, TextConfig(), {})
    loaded = load_model_dir(tmp_path / "m")
    ids, lengths = (torch.from_numpy(a) for a in pad_batch(reviews))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids, lengths), model(ids, lengths))
    assert loaded.model.ngram.pairs.dtype == torch.int64


def test_model_directory_with_a_head_of_other_size_or_type_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model, _ = small_model()
    vocab = Vocabulary.from_words([f"w{i}" for i in range(V - 2)])
    write_model_dir(tmp_path / "m", model, vocab, TextConfig(), {})
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model"]["ngram_pairs"] += 1
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SentimentError, match=r"tensor ngram\.coef has shape"):
        load_model_dir(tmp_path / "m")
    config["model"]["ngram_pairs"] -= 1
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    state = load_file(tmp_path / "m" / "model.safetensors")
    state["ngram.pairs"] = state["ngram.pairs"].double()
    save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(SentimentError, match=r"ngram\.pairs has dtype F64, not I64"):
        load_model_dir(tmp_path / "m")


def test_settings_are_checked():
    with pytest.raises(SentimentError, match="ngram_weight"):
        ModelConfig(ngram_weight=1.5)
    with pytest.raises(SentimentError, match="ngram_pairs"):
        ModelConfig(ngrams=True, ngram_pairs=-1)
    with pytest.raises(SentimentError, match="ngram C"):
        TrainConfig(ngram_c=0)
    with_head = ModelConfig(vocab_size=V, ngrams=True, ngram_pairs=5)
    assert with_head.parameters() - ModelConfig(vocab_size=V).parameters() == 2 * (V + 5) + 5 + 1
    assert sum(t.numel() for t in build_model(with_head).state_dict().values()) == (
        with_head.parameters()
    )
