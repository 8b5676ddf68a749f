"""Word vectors for the classifier: word2vec trained with gensim, or pretrained vectors loaded.

The result is a `Vocabulary` and a float32 matrix whose rows match it (row 0 padding,
row 1 unknown, both zeros), saved as plain files. This is the only module that imports
gensim, and only inside the functions that train or read pretrained vectors: loading
saved embeddings on a scoring machine needs numpy alone.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentiment.config import VECTOR_FORMATS, EmbeddingConfig, SentimentError, word2vec_epochs
from sentiment.text import SPECIALS, Phrases, Vocabulary, tokenize

log = logging.getLogger(__name__)

VECTORS, VOCAB, META = "vectors.npy", "vocab.txt", "embeddings.json"
PHRASES = "phrases.txt"  # word pairs joined into one token; absent when none


@dataclass(frozen=True)
class Embeddings:
    """A vocabulary and its float32 (len(vocab), dim) matrix, with how they were made."""

    vocab: Vocabulary
    matrix: np.ndarray  # (V, E) float32; rows 0 and 1 are zeros
    meta: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def build_embeddings(config: EmbeddingConfig, texts: Iterable[str] | None = None) -> Embeddings:
    """Train word2vec on `texts` (config.source == "train") or read pretrained vectors.

    With pretrained vectors and `texts`, only words that occur in the texts are kept.
    Format "keyedvectors" unpickles the file, which can run code: only for trusted files.
    """
    start = time.perf_counter()
    sentences = None if texts is None else Sentences(list(texts))
    if config.source == "train":
        if not sentences:
            raise SentimentError("no training texts to train word2vec on")
        emb = _train(sentences, config)
    else:
        emb = _pretrained(Path(config.source), config.format, sentences, config.limit)
    meta = dict(emb.meta)
    if sentences is not None:
        n_tokens, n_known = _count_known(emb.vocab, sentences)
        meta.update(n_train_tokens=n_tokens, coverage=n_known / n_tokens if n_tokens else 0.0)
    meta["seconds"] = round(time.perf_counter() - start, 3)
    log.info("embeddings: %d words x %d dims in %.1f s", len(emb.vocab), emb.dim, meta["seconds"])
    return Embeddings(emb.vocab, emb.matrix, meta)


class Sentences:
    """Texts as token lists, tokenized again on each pass rather than held as lists.

    word2vec reads its corpus once per epoch plus twice more; Python token lists take
    about 60 bytes a token (64 MiB for the 8,000 real reviews' 1.1 M tokens, against
    6 MiB of text), so a corpus of a hundred million tokens would need gigabytes more.
    Tokenizing again costs 0.19 µs a token, against 6.5 µs a token for a skip-gram epoch,
    and gensim tokenizes in its reader thread while its workers train: measured on the
    6,400 real training reviews (10 epochs), 58.9 s either way, peak memory 58 MiB lower.
    """

    def __init__(self, texts: Sequence[str], phrases: Phrases | None = None):
        self.texts = texts
        self.phrases = phrases

    def __iter__(self) -> Iterator[list[str]]:
        phrases = self.phrases
        return (tokenize(text, phrases) for text in self.texts)

    def __len__(self) -> int:
        return len(self.texts)


def coverage(vocab: Vocabulary, texts: Iterable[str]) -> tuple[int, int]:
    """(tokens in `texts`, tokens found in `vocab`)."""
    return _count_known(vocab, (tokenize(t) for t in texts))


def _count_known(vocab: Vocabulary, sentences: Iterable[list[str]]) -> tuple[int, int]:
    index, n_tokens, n_known = vocab.index, 0, 0
    for tokens in sentences:
        n_tokens += len(tokens)
        n_known += sum(t in index for t in tokens)
    return n_tokens, n_known


def _train(sentences: Sentences, config: EmbeddingConfig) -> Embeddings:
    import gensim
    from gensim.models import Word2Vec

    # gensim 4.4 seeds the initial vectors with numpy's default_rng(seed), not with
    # Python's salted str hash (`hashfxn` only feeds a deprecated method), and the
    # vocabulary is built in corpus order: one worker gives bitwise-identical vectors
    # in any process, whatever PYTHONHASHSEED. Several workers race on shared weights.
    phrases = None
    if config.phrases:
        phrases = learn_phrases(sentences, config.phrases)
        sentences = Sentences(sentences.texts, phrases)
    n_tokens = sum(len(s) for s in sentences)
    epochs = config.epochs or word2vec_epochs(n_tokens)
    log.info("word2vec: %d epochs over %d tokens", epochs, n_tokens)
    model = Word2Vec(
        vector_size=config.dim,
        window=config.window,
        negative=config.negative,
        sample=config.sample,
        min_count=config.min_count,
        sg=int(config.sg),
        seed=config.seed,
        workers=config.workers,
        epochs=epochs,
    )
    model.build_vocab(sentences)
    if len(model.wv) == 0:
        raise SentimentError(
            f"no word occurs at least min_count={config.min_count} times in the training texts"
        )
    model.train(sentences, total_examples=model.corpus_count, epochs=model.epochs)
    # index_to_key is in descending frequency; tokens never contain "<", so no word
    # collides with the specials and row i + 2 of the matrix is word i.
    vocab = Vocabulary.from_words(model.wv.index_to_key, phrases)
    matrix = _with_specials(model.wv.vectors)
    meta = {
        "source": "train",
        "format": "word2vec",
        "dim": config.dim,
        "vocab_size": len(vocab),
        **{k: getattr(config, k) for k in ("min_count", "window", "negative", "sample", "sg")},
        "seed": config.seed,
        "epochs": epochs,
        "epochs_chosen": "auto" if config.epochs is None else "given",
        "phrases": config.phrases,
        "n_phrases": len(phrases or ()),
        "workers": config.workers,
        "deterministic": config.workers == 1,
        "gensim": gensim.__version__,
        "limit": None,
    }
    return Embeddings(vocab, matrix, meta)


def learn_phrases(sentences: Iterable[list[str]], threshold: float) -> Phrases:
    """Word pairs that gensim's `Phrases` (its default score, min_count 5, no connector
    words) finds above `threshold` in `sentences`."""
    from gensim.models.phrases import Phrases as GensimPhrases

    found = GensimPhrases(sentences, threshold=threshold, connector_words=frozenset())
    # tokens never contain "_" (gensim's delimiter), so each key splits back into its pair
    pairs = [tuple(key.split("_")) for key in found.export_phrases()]
    log.info("phrases: %d word pairs above %s", len(pairs), threshold)
    return Phrases(pairs)


def _with_specials(vectors: np.ndarray) -> np.ndarray:
    matrix = np.zeros((len(vectors) + len(SPECIALS), vectors.shape[1]), dtype=np.float32)
    matrix[len(SPECIALS) :] = vectors
    return matrix


def detect_vectors_format(path: Path) -> str:
    """Guess a vectors file's format from its name and first line; pickles are never guessed."""
    if path.is_dir():
        if (path / VECTORS).exists() and (path / VOCAB).exists():
            return "saved"
        raise SentimentError(f"{path}: a directory without {VECTORS} and {VOCAB}")
    name = path.name.lower().removesuffix(".gz").removesuffix(".bz2")
    if name.endswith(".bin"):
        return "word2vec-binary"
    if name.endswith((".kv", ".model", ".pkl", ".pickle")):
        raise SentimentError(
            f"{path}: gensim native files are pickles, which run code when loaded;"
            " if you trust it, say --format keyedvectors"
        )
    opener = (
        gzip.open if path.name.endswith(".gz") else bz2.open if path.name.endswith(".bz2") else open
    )
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            first = f.readline().split()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise SentimentError(f"{path}: cannot read it as text vectors ({exc})") from None
    if len(first) == 2 and all(s.isdigit() for s in first):
        return "word2vec-text"  # header line "count dim"
    if len(first) > 1:
        return "glove"
    raise SentimentError(f"{path}: cannot tell the vectors format; name it with --format")


def _pretrained(path: Path, fmt: str, sentences: Sentences | None, limit: int | None) -> Embeddings:
    if fmt not in VECTOR_FORMATS:
        raise SentimentError(
            f"unknown vectors format {fmt!r}; choose one of {', '.join(VECTOR_FORMATS)}"
        )
    if not path.exists():
        raise SentimentError(f"{path}: no such file or directory")
    if fmt == "auto":
        fmt = detect_vectors_format(path)
    if fmt == "saved":
        emb = load_embeddings(path)
        return Embeddings(emb.vocab, emb.matrix, {**emb.meta, "loaded_from": str(path)})
    import gensim
    from gensim.models import KeyedVectors

    try:
        if fmt == "keyedvectors":  # unpickles: only for files the user named and trusts
            kv = KeyedVectors.load(str(path))
            kv = getattr(kv, "wv", kv)  # a whole Word2Vec model saved with .save()
            if not isinstance(kv, KeyedVectors):
                raise TypeError(f"holds a {type(kv).__name__}, not KeyedVectors")
        else:
            kv = KeyedVectors.load_word2vec_format(
                str(path),
                binary=fmt == "word2vec-binary",
                no_header=fmt == "glove",
                limit=limit,
                unicode_errors="replace",  # a few keys of real files are broken UTF-8
            )
    except Exception as exc:  # gensim reports a bad file with many exception types
        # one short printable line: a binary file read as text puts raw bytes in the message
        reason = "".join(c if c.isprintable() else "?" for c in str(exc).split("\n")[0])[:160]
        reason = reason or type(exc).__name__
        raise SentimentError(f"{path}: cannot read as {fmt} vectors: {reason}") from exc
    keys = kv.index_to_key[:limit] if limit else kv.index_to_key
    vocab, rows = _lowercase_vocab(keys, sentences)
    if len(rows) == 0:
        where = "in the training texts" if sentences is not None else "(an empty file)"
        raise SentimentError(f"{path}: none of its {len(keys)} words occurs {where}")
    matrix = _with_specials(np.asarray(kv.vectors[rows], dtype=np.float32))
    meta = {
        "source": str(path),
        "format": fmt,
        "dim": int(matrix.shape[1]),
        "vocab_size": len(vocab),
        "deterministic": True,
        "gensim": gensim.__version__,
        "limit": limit,
    }
    return Embeddings(vocab, matrix, meta)


def _lowercase_vocab(
    keys: Sequence[str], sentences: Sentences | None
) -> tuple[Vocabulary, list[int]]:
    """Map each file key to the token our tokenizer would produce; the first key wins.

    Files such as Google News are cased and sorted by frequency, so the first of
    "Good"/"good"/"GOOD" is the most frequent casing: its vector serves "good".
    """
    wanted = None if sentences is None else {t for tokens in sentences for t in tokens}
    words: list[str] = []
    rows: list[int] = []
    seen = set(SPECIALS)
    for row, key in enumerate(keys):
        if not key.isascii():  # tokens are NFKC-normalised; keys may be NFD
            key = unicodedata.normalize("NFKC", key)
        word = key.lower()
        if word in seen or (wanted is not None and word not in wanted):
            continue
        seen.add(word)
        words.append(word)
        rows.append(row)
    return Vocabulary.from_words(words), rows


def save_embeddings(emb: Embeddings, directory: str | Path) -> Path:
    """Write `vectors.npy`, `vocab.txt` and `embeddings.json` (last) into `directory`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / VECTORS, np.ascontiguousarray(emb.matrix, dtype=np.float32), allow_pickle=False)
    (out / VOCAB).write_text(emb.vocab.to_text(), encoding="utf-8")
    if emb.vocab.phrases:
        (out / PHRASES).write_text(emb.vocab.phrases.to_text(), encoding="utf-8")
    (out / META).write_text(json.dumps(emb.meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def load_embeddings(directory: str | Path) -> Embeddings:
    """Read what `save_embeddings` wrote, checking that the files agree; needs no gensim."""
    d = Path(directory)
    for name in (VECTORS, VOCAB, META):
        if not (d / name).is_file():
            raise SentimentError(f"{d / name}: missing")
    try:
        matrix = np.load(d / VECTORS, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SentimentError(f"{d / VECTORS}: not a readable numpy array ({exc})") from None
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise SentimentError(f"{d / VECTORS}: expected a 2-D float32 array, got {matrix.dtype}")
    phrases = read_phrases(d)
    try:
        rows = matrix.shape[0]
        more = f"{d / VECTORS}: {rows} rows but {d / VOCAB} has more words"
        vocab = read_vocab_file(d / VOCAB, phrases, rows, more)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SentimentError(f"{d / VOCAB}: not a vocabulary ({exc})") from None
    try:
        meta = json.loads((d / META).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SentimentError(f"{d / META}: not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise SentimentError(f"{d / META}: expected a JSON object")
    if matrix.shape[0] != len(vocab):
        raise SentimentError(
            f"{d / VECTORS}: {matrix.shape[0]} rows but {d / VOCAB} has {len(vocab)} words"
        )
    if meta.get("dim", matrix.shape[1]) != matrix.shape[1]:
        raise SentimentError(f"{d / VECTORS}: {matrix.shape[1]} dims but {META} says {meta['dim']}")
    if not np.isfinite(matrix).all():
        raise SentimentError(f"{d / VECTORS}: contains NaN or infinite values")
    return Embeddings(vocab, matrix, meta)


# A vocabulary line longer than this is no word: a file of one line of a gigabyte is refused
# at its first 64 K characters, not read whole. Real words are far shorter (word2vec's own
# tool cuts its keys at 100 characters; a review is under 25,000).
MAX_WORD_CHARS = 1 << 16


def read_vocab_file(path: Path, phrases: Phrases | None, rows: int, more: str) -> Vocabulary:
    """A `vocab.txt` read a line at a time, as `Vocabulary.from_text` reads the whole text.

    Refused at the first line longer than MAX_WORD_CHARS, or past `rows` words (the rows of
    the matrix the words index; `more` says so), so memory follows the rows and never the
    file's size. Only blank lines, which from_text drops from the end, may follow the last row.
    """
    words: list[str] = []
    with path.open(encoding="utf-8", newline="\n") as f:  # lines end at "\n" alone
        rest = iter(lambda: f.read(1 << 20), "")  # what follows the last row, a chunk at a time
        while line := f.readline(MAX_WORD_CHARS + 2):
            word = line.removesuffix("\n")
            if len(word) > MAX_WORD_CHARS:
                raise SentimentError(
                    f"{path}: line {len(words) + 1}: longer than {MAX_WORD_CHARS:,} "
                    "characters; not a word"
                )
            if len(words) == rows and (word or any(chunk.strip("\n") for chunk in rest)):
                raise SentimentError(f"{more} (line {rows + 1})")
            words.append(word)
    while words and not words[-1]:  # from_text's rstrip("\n")
        words.pop()
    return Vocabulary(words, phrases)


def read_phrases(directory: Path, pairs: int | None = None) -> Phrases | None:
    """The `phrases.txt` of an embeddings or model directory; None where there is none.

    Read a line at a time, refused at a line too long for two words or, where `pairs` says
    how many there are, at the first line past them.
    """
    path = directory / PHRASES
    if not path.is_file():
        return None
    lines: list[str] = []
    limit = 2 * MAX_WORD_CHARS + 1
    try:
        with path.open(encoding="utf-8", newline="\n") as f:
            while line := f.readline(limit + 2):
                if len(line.removesuffix("\n")) > limit:
                    raise ValueError(f"line {len(lines) + 1}: longer than two words")
                if len(lines) == pairs:
                    raise ValueError(f"line {pairs + 1}: more than the {pairs:,} pairs expected")
                lines.append(line)
        return Phrases.from_text("".join(lines))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SentimentError(f"{path}: not a phrase list ({exc})") from None


def read_corpus(paths: Sequence[str], held_out: Iterable[str] = ()) -> tuple[list[str], int]:
    """Unlabelled text for word2vec: the `text` column of Parquet files, directories, globs
    or URIs, less any review whose tokens equal a `held_out` review's (the training
    dataset's test split and validation carve: vectors that had read them would make
    them easier than new reviews). Returns (texts, how many were left out)."""
    import pyarrow.parquet as pq

    from sentiment.inputs import check_inputs

    files, _, _ = check_inputs(list(paths), "text", "", "fail", None)
    if not files:
        raise SentimentError(f"--w2v-corpus {' '.join(paths)}: no Parquet files")
    unseen = {hash(" ".join(tokenize(t))) for t in held_out}
    texts, n_left_out = [], 0
    for f in files:
        try:
            column = pq.read_table(f.path, columns=["text"], filesystem=f.fs).column("text")
        except (OSError, ValueError) as exc:
            raise SentimentError(f"{f.uri}: cannot read its text column ({exc})") from None
        for text in column.to_pylist():
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            if not text or not text.strip():
                continue
            if unseen and hash(" ".join(tokenize(text))) in unseen:
                n_left_out += 1
                continue
            texts.append(text)
    log.info(
        "corpus: %d texts from %d files (%d held-out reviews left out)",
        len(texts),
        len(files),
        n_left_out,
    )
    return texts, n_left_out


def dataset_texts(dataset_dir: str | Path, corpus: Sequence[str] = ()) -> list[str]:
    """What `embeddings` trains word2vec on: the train split's texts, then the `corpus`
    texts that are not one of the dataset's other (test) reviews."""
    texts = read_texts(dataset_dir)
    if corpus:
        texts += read_corpus(corpus, read_texts(dataset_dir, "train", other=True))[0]
    return texts


def read_texts(dataset_dir: str | Path, split: str = "train", other: bool = False) -> list[str]:
    """The `text` of every row whose `split` is `split` (`other`: is not) in a prepared
    Parquet dataset; `other` may find none."""
    import pyarrow.dataset as ds

    root = Path(dataset_dir)
    files = sorted(str(p) for p in root.rglob("*.parquet")) if root.is_dir() else []
    if not files:
        raise SentimentError(f"{root}: no Parquet files (expected a prepared dataset directory)")
    try:
        dataset = ds.dataset(
            files, format="parquet", partitioning="hive", partition_base_dir=str(root)
        )
        if not {"text", "split"} <= set(dataset.schema.names):
            raise SentimentError(f"{root}: the dataset needs columns 'text' and 'split'")
        where = ds.field("split") != split if other else ds.field("split") == split
        table = dataset.to_table(columns=["text"], filter=where)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise SentimentError(f"{root}: cannot read the dataset ({exc})") from None
    texts = [t for t in table.column("text").to_pylist() if t is not None]
    if not texts and not other:
        raise SentimentError(f"{root}: no rows with split == {split!r}")
    return texts
