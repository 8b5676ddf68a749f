"""The tokenizer, the vocabulary look-up and batch padding."""

from __future__ import annotations

import numpy as np
import pytest

from sentiment.text import PAD, SPECIALS, UNK, Vocabulary, pad_batch, tokenize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # HTML entities are unescaped before splitting
        ("Fish &amp; chips", ["fish", "chips"]),
        ("it&#39;s fine", ["it's", "fine"]),
        ("&quot;great&quot; product", ["great", "product"]),
        ("caf&eacute; &lt;3", ["café", "3"]),
        # apostrophes: curly ones become "'", inner ones are kept, outer ones dropped
        ("don’t", ["don't"]),
        ("don`t", ["don't"]),
        ("don't", ["don't"]),
        ("O'Neill", ["o'neill"]),
        ("'quoted'", ["quoted"]),
        ("‘quoted’", ["quoted"]),
        ("the dogs' bowls", ["the", "dogs", "bowls"]),
        ("it''s", ["it", "s"]),
        # NFKC: full-width letters and ligatures become plain letters
        ("ＡＢＣ", ["abc"]),
        ("ﬁne", ["fine"]),
        ("x²", ["x2"]),
        # accented letters are kept, composed or not; other scripts keep their marks
        ("Café", ["café"]),
        ("Cafe\u0301", ["café"]),
        ("Tiếng Việt", ["tiếng", "việt"]),
        ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),
        ("مَرْحَبًا", ["مَرْحَبًا"]),
        ("日本語 text", ["日本語", "text"]),
        # digits are words; punctuation is dropped
        ("5 stars", ["5", "stars"]),
        ("3.5/5 for $20", ["3", "5", "5", "for", "20"]),
        ("Wow!!! Great... (really?)", ["wow", "great", "really"]),
        ("I❤it", ["i", "it"]),
        # hyphens and underscores split words
        ("well-made", ["well", "made"]),
        ("e-mail", ["e", "mail"]),
        ("snake_case_word", ["snake", "case", "word"]),
        ("__init__", ["init"]),
        # nothing to find
        ("", []),
        ("   \n\t ", []),
        ("!?... -- ***", []),
        # case
        ("GREAT Product", ["great", "product"]),
    ],
)
def test_tokenize(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_tokenize_is_idempotent_on_its_output() -> None:
    text = "Don’t buy the ＡＢＣ &amp; well-made café's ﬁne हिन्दी"
    tokens = tokenize(text)
    assert tokenize(" ".join(tokens)) == tokens


VOCAB = Vocabulary.from_words(["good", "bad", "movie"])


def test_vocabulary_specials_first() -> None:
    assert VOCAB.words == [*SPECIALS, "good", "bad", "movie"]
    assert VOCAB.index["<pad>"] == PAD == 0 and VOCAB.index["<unk>"] == UNK == 1
    assert len(VOCAB) == 5
    # specials passed in are not duplicated
    assert Vocabulary.from_words(["<unk>", "good", "<pad>"]).words == [*SPECIALS, "good"]


@pytest.mark.parametrize(
    "words", [["good", "<pad>", "<unk>"], ["<pad>"], ["<unk>", "<pad>", "good"], []]
)
def test_vocabulary_must_start_with_specials(words: list[str]) -> None:
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary(words)


def test_vocabulary_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary([*SPECIALS, "good", "bad", "good"])


@pytest.mark.parametrize(
    ("text", "max_tokens", "ids", "n_tokens", "n_known", "truncated"),
    [
        ("Good movie!", 10, [2, 4], 2, 2, False),
        ("a good, BAD movie by anyone", 10, [2, 3, 4], 6, 3, False),  # unknowns dropped
        ("good bad movie good", 2, [2, 3], 4, 4, True),  # truncation keeps the head
        ("good bad", 2, [2, 3], 2, 2, False),  # exactly max_tokens is not truncated
        ("nothing known here", 5, [], 3, 0, False),
        ("", 5, [], 0, 0, False),
    ],
)
def test_encode(text, max_tokens, ids, n_tokens, n_known, truncated) -> None:
    enc = VOCAB.encode(text, max_tokens)
    assert (enc.ids, enc.n_tokens, enc.n_known, enc.truncated) == (
        ids,
        n_tokens,
        n_known,
        truncated,
    )
    assert PAD not in enc.ids and UNK not in enc.ids


def test_vocabulary_text_round_trip() -> None:
    vocab = Vocabulary.from_words(["good", "don't", "café", "हिन्दी", "5"])
    text = vocab.to_text()
    assert text.endswith("\n") and text.count("\n") == len(vocab)
    back = Vocabulary.from_text(text)
    assert back.words == vocab.words and back.index == vocab.index


def test_vocabulary_from_text_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary.from_text("<pad>\n<unk>\ngood\ngood\n")


@pytest.mark.parametrize(
    ("sequences", "expected", "lengths"),
    [
        ([[5, 6, 7], [8], []], [[5, 6, 7], [8, 0, 0], [0, 0, 0]], [3, 1, 0]),
        ([[2, 3]], [[2, 3]], [2]),
        ([[], []], [[0], [0]], [0, 0]),  # at least one column, so shapes stay 2-D
        ([], np.zeros((0, 1)), []),
    ],
)
def test_pad_batch(sequences, expected, lengths) -> None:
    out, lens = pad_batch(sequences)
    assert out.dtype == np.int64 and lens.dtype == np.int64
    assert out.shape == np.asarray(expected).shape
    assert out.tolist() == np.asarray(expected).tolist()
    assert lens.tolist() == lengths
