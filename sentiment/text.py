"""Tokenizer and vocabulary look-up: pure functions shared by training and scoring.

The same `tokenize` runs when word2vec is trained, when the classifier is trained
and when reviews are scored, so a word is always split the same way.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

PAD = 0  # index of the padding vector (all zeros, never read)
UNK = 1  # index of the unknown-word vector
SPECIALS = ("<pad>", "<unk>")


def _combining_marks() -> str:
    """The combining marks (Unicode categories M*) of planes 0-1 and E, as regex ranges."""
    # Python's re has no \p{M} and \w excludes marks, which split "हिन्दी" or Arabic
    # with vowel signs into bare letters. The scan runs once, at import.
    codes = [
        c
        for c in (*range(0x20000), *range(0xE0000, 0xE1000))
        if unicodedata.category(chr(c)).startswith("M")
    ]
    ranges, start = [], codes[0]
    for prev, c in zip(codes, [*codes[1:], -1], strict=True):
        if c != prev + 1:
            ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
            start = c
    return "".join(ranges)


# A word starts with a letter/digit (any script), continues with letters, digits and
# combining marks, and may be joined by inner apostrophes: "don't", "o'neill".
# Underscores are turned into spaces first, so \w can stand for letters and digits.
_PART = rf"\w[\w{_combining_marks()}]*"
_WORD = re.compile(rf"{_PART}(?:'{_PART})*")
# ASCII text has no marks; its own pattern skips the long class, which is slow.
_ASCII_WORD = re.compile(r"\w+(?:'\w+)*")
_APOSTROPHES = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "_": " "}  # and "_" -> space
)


def tokenize(text: str, phrases: Phrases | None = None) -> list[str]:
    """Split a review into lowercase word tokens, then join `phrases` ("not_good").

    Steps: unescape HTML entities (`&amp;`, `&#39;`), Unicode NFKC normalisation
    (full-width letters, ligatures), curly apostrophes to `'`, lowercase, then
    words with inner apostrophes kept (`don't`) and all other punctuation dropped.
    """
    if "&" in text:  # html.unescape is the slowest step; most reviews need none
        text = html.unescape(text)
    ascii_text = text.isascii()
    if not ascii_text and not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    tokens = (_ASCII_WORD if ascii_text else _WORD).findall(text.translate(_APOSTROPHES).lower())
    return tokens if phrases is None else phrases.join(tokens)


class Phrases:
    """Word pairs that become one token, "not" "good" -> "not_good" (learned by gensim's
    `Phrases` when word2vec trains; applied here without gensim, at training and scoring).

    Left to right, a pair joins when it is in the table and its first word was not already
    joined to the word before: what gensim's frozen phrases do without connector words.
    Tokens never hold "_" (the tokenizer splits on it), so a joined token is never a word.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self.pairs = sorted(set(pairs))
        # first word -> the words it joins: one dict look-up per token, no tuples built
        self._next: dict[str, set[str]] = {}
        for first, second in self.pairs:
            self._next.setdefault(first, set()).add(second)

    def __len__(self) -> int:
        return len(self.pairs)

    def join(self, tokens: list[str]) -> list[str]:
        get, out, joined = self._next.get, [], False
        for i, word in enumerate(tokens[:-1]):
            if joined:  # this word is already the second of a pair
                joined = False
                continue
            after = get(word)
            if after is not None and tokens[i + 1] in after:
                out.append(f"{word}_{tokens[i + 1]}")
                joined = True
            else:
                out.append(word)
        if tokens and not joined:
            out.append(tokens[-1])
        return out

    def to_text(self) -> str:
        return "".join(f"{a} {b}\n" for a, b in self.pairs)

    @classmethod
    def from_text(cls, text: str) -> Phrases:
        """Read `to_text`: one pair a line, two words separated by a space."""
        pairs = []
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split(" ")
            if len(words) != 2 or not all(words):
                raise ValueError(f"line {number}: expected two words, got {line!r}")
            pairs.append((words[0], words[1]))
        return cls(pairs)


@dataclass(frozen=True)
class Encoded:
    """Token ids of one review as the model sees them."""

    ids: list[int]  # known tokens only, at most max_tokens
    n_tokens: int  # tokens before look-up
    n_known: int  # tokens found in the vocabulary (before truncation)

    @property
    def truncated(self) -> bool:
        return self.n_known > len(self.ids)


class Vocabulary:
    """Word ↔ index, with 0 = padding and 1 = unknown, as the embedding matrix rows; with
    the phrases its words were made with, so that every encoding joins the same pairs."""

    def __init__(self, words: Sequence[str], phrases: Phrases | None = None):
        if tuple(words[:2]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {tuple(words[:2])}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("vocabulary has duplicate words")
        self.phrases = phrases or None  # an empty table joins nothing

    @classmethod
    def from_words(cls, words: Iterable[str], phrases: Phrases | None = None) -> Vocabulary:
        return cls([*SPECIALS, *(w for w in words if w not in SPECIALS)], phrases)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_tokens: int) -> Encoded:
        """Tokenize and look up; unknown words are dropped, as in the original design."""
        tokens = tokenize(text, self.phrases)
        get = self.index.get
        ids = [i for i in map(get, tokens) if i is not None]
        return Encoded(ids=ids[:max_tokens], n_tokens=len(tokens), n_known=len(ids))

    def to_text(self) -> str:
        return "\n".join(self.words) + "\n"

    @classmethod
    def from_text(cls, text: str, phrases: Phrases | None = None) -> Vocabulary:
        return cls(text.rstrip("\n").split("\n"), phrases)


def pad_batch(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into a (B, T) int64 array and their (B,) lengths.

    Padding sits after each review's last real token, so a recurrence that runs
    left to right never sees it before the position the classifier reads.
    """
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    width = max(1, int(lengths.max(initial=0)))
    out = np.full((len(sequences), width), PAD, dtype=np.int64)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = seq
    return out, lengths
