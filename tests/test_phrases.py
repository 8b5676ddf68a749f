"""Phrases: word pairs joined into one token the same way at word2vec, training and scoring time."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sentiment.artifacts import load_model_dir, write_model_dir
from sentiment.config import EmbeddingConfig, ModelConfig, SentimentError, TextConfig
from sentiment.embeddings import build_embeddings, learn_phrases, load_embeddings, save_embeddings
from sentiment.models import build_model
from sentiment.scoring import Scorer
from sentiment.text import Phrases, tokenize
from sentiment.training import encode_split

WORDS = ("the", "it", "was", "good", "bad", "very", "movie", "book", "is", "and")


def negation_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Sentences where "not" is nearly always followed by "good", and "new york" is a name."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
        words.insert(rng.randrange(len(words) + 1), "not good")
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words) + 1), "new york")
        texts.append(" ".join(words))
    return texts


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("It is not good", ["it", "is", "not_good"]),
        ("not not good", ["not", "not_good"]),  # left to right, as gensim
        ("good for not good for", ["good_for", "not_good", "for"]),
        ("not", ["not"]),
        ("", []),
        ("not_good", ["not_good"]),  # "_" splits words; the pair joins again
    ],
)
def test_pairs_join_left_to_right(text, tokens):
    phrases = Phrases([("not", "good"), ("good", "for")])
    assert tokenize(text, phrases) == tokens


def test_join_matches_gensim_frozen_phrases():
    from gensim.models.phrases import Phrases as GensimPhrases

    sentences = [tokenize(t) for t in negation_corpus(300)]
    # a low threshold: many overlapping pairs ("bad not", "not good") to resolve alike
    gensim_phrases = GensimPhrases(sentences, threshold=0.03, connector_words=frozenset()).freeze()
    ours = learn_phrases(sentences, 0.03)
    assert len(ours) > 20 and {("not", "good"), ("bad", "not")} <= set(ours.pairs)
    rng = random.Random(1)
    for _ in range(200):
        sentence = [rng.choice([*WORDS, "not", "new", "york"]) for _ in range(rng.randint(0, 15))]
        assert ours.join(sentence) == gensim_phrases[sentence]


def test_phrases_round_trip_as_text_and_refuse_bad_lines():
    phrases = Phrases([("not", "good"), ("new", "york")])
    assert Phrases.from_text(phrases.to_text()).pairs == phrases.pairs
    with pytest.raises(ValueError, match="line 2: expected two words"):
        Phrases.from_text("not good\nnew york city\n")


@pytest.fixture(scope="module")
def phrased(tmp_path_factory):
    """word2vec with phrases on the negation corpus, and a model directory built on it."""
    texts = negation_corpus()
    cfg = EmbeddingConfig(dim=8, epochs=2, min_count=2, phrases=0.1)
    emb = build_embeddings(cfg, texts)
    torch.manual_seed(0)
    model_cfg = ModelConfig(vocab_size=len(emb.vocab), embed_dim=8, hidden_size=4)
    directory = tmp_path_factory.mktemp("phrased") / "model"
    write_model_dir(
        directory,
        build_model(model_cfg, emb.matrix),
        emb.vocab,
        TextConfig(phrases=len(emb.vocab.phrases)),
        {},
    )
    return texts, emb, directory


def test_word2vec_learns_the_joined_tokens(phrased):
    _, emb, _ = phrased
    assert "not_good" in emb.vocab.index and "new_york" in emb.vocab.index
    assert emb.meta["n_phrases"] == len(emb.vocab.phrases) > 0


def test_training_and_scoring_see_the_same_tokens(phrased):
    """The model directory carries phrases.txt: the Scorer's ids equal training's."""
    texts, emb, directory = phrased
    loaded = load_model_dir(directory)
    assert loaded.vocab.phrases.pairs == emb.vocab.phrases.pairs
    split = encode_split(texts[:50], [0] * 50, ["x"] * 50, emb.vocab, 400)
    for text, ids in zip(texts[:50], split.ids, strict=True):
        assert loaded.vocab.encode(text, 400).ids == ids.tolist()
    assert emb.vocab.index["not_good"] in split.ids[0]
    scores = Scorer(directory).score_texts(["it was not good", "not good"])
    assert scores.status == ["ok", "ok"]


def test_saved_embeddings_keep_their_phrases_without_gensim(phrased, tmp_path: Path):
    _, emb, _ = phrased
    save_embeddings(emb, tmp_path / "emb")
    assert (tmp_path / "emb" / "phrases.txt").read_text().count("\n") == len(emb.vocab.phrases)
    loaded = load_embeddings(tmp_path / "emb")
    assert loaded.vocab.encode("not good", 10).ids == [emb.vocab.index["not_good"]]
    np.testing.assert_array_equal(loaded.matrix, emb.matrix)


def test_a_model_directory_missing_its_phrases_is_refused(phrased, tmp_path: Path):
    import shutil

    _, _, directory = phrased
    shutil.copytree(directory, tmp_path / "m")
    (tmp_path / "m" / "phrases.txt").unlink()
    with pytest.raises(SentimentError, match=r"phrases.txt: the model was trained with \d+ word"):
        load_model_dir(tmp_path / "m")
