"""Embeddings: word2vec training, each pretrained format, save/load and their errors."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sentiment.config import EmbeddingConfig, SentimentError, word2vec_epochs
from sentiment.embeddings import (
    Embeddings,
    build_embeddings,
    coverage,
    detect_vectors_format,
    load_embeddings,
    read_texts,
    save_embeddings,
)
from sentiment.text import SPECIALS, tokenize

datapath = pytest.importorskip("gensim.test.utils").datapath
W2V_BIN = Path(datapath("euclidean_vectors.bin"))
W2V_TEXT = Path(datapath("EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt"))
GLOVE = Path(datapath("test_glove.txt"))
TINY = {"dim": 16, "epochs": 2, "min_count": 2}


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Short sentences over 60 words with a skewed frequency, so the order is testable."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(60)]
    return [" ".join(rng.choices(words, weights=range(60, 0, -1), k=8)) for _ in range(n)]


def write_w2v_text(path: Path, rows: dict[str, list[float]]) -> Path:
    dim = len(next(iter(rows.values())))
    lines = [f"{len(rows)} {dim}"] + [f"{w} {' '.join(map(str, v))}" for w, v in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained() -> tuple[list[str], Embeddings]:
    texts = corpus()
    return texts, build_embeddings(EmbeddingConfig(**TINY), texts)


def test_word2vec_specials_dtype_and_frequency_order(trained) -> None:
    texts, emb = trained
    assert emb.vocab.words[:2] == list(SPECIALS)
    assert emb.matrix.dtype == np.float32 and emb.matrix.shape == (len(emb.vocab), 16)
    assert not emb.matrix[:2].any() and emb.matrix[2:].any(axis=1).all()
    counts = Counter(t for text in texts for t in tokenize(text))
    freqs = [counts[w] for w in emb.vocab.words[2:]]
    assert freqs == sorted(freqs, reverse=True)
    assert set(emb.vocab.words[2:]) == {w for w, c in counts.items() if c >= 2}
    assert emb.meta["deterministic"] is True and emb.meta["coverage"] == 1.0
    assert emb.meta["n_train_tokens"] == sum(counts.values())


@pytest.mark.parametrize(
    ("n_tokens", "epochs"),
    [
        (0, 40),
        (100_000, 40),
        (911_392, 40),  # the 6,400 real training reviews: 40 epochs won on validation
        (1_200_000, 30),
        (4_000_000, 9),
        (7_200_000, 5),
        (500_000_000, 5),
    ],
)
def test_default_word2vec_epochs_scale_with_the_corpus(n_tokens, epochs) -> None:
    assert word2vec_epochs(n_tokens) == epochs


def test_default_word2vec_epochs_are_chosen_and_recorded() -> None:
    texts = corpus(100)
    auto = build_embeddings(EmbeddingConfig(dim=16, min_count=2), texts)
    assert (auto.meta["epochs"], auto.meta["epochs_chosen"]) == (40, "auto")
    given = build_embeddings(EmbeddingConfig(dim=16, min_count=2, epochs=40), texts)
    assert (given.meta["epochs"], given.meta["epochs_chosen"]) == (40, "given")
    np.testing.assert_array_equal(auto.matrix, given.matrix)  # the same training


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"epochs": 0}, "word2vec epochs must be >= 1, got 0"),
        ({"dim": 0}, "word2vec dim must be >= 1, got 0"),
        ({"min_count": -1}, "word2vec min_count must be >= 1, got -1"),
        ({"workers": 0}, "word2vec workers must be >= 1, got 0"),
        ({"limit": 0}, "limit must be >= 1, got 0"),
    ],
)
def test_bad_embedding_settings_are_refused(setting, message) -> None:
    with pytest.raises(SentimentError, match=f"^{re.escape(message)}$"):
        EmbeddingConfig(**setting)


def test_min_count_drops_rare_words() -> None:
    texts = [*corpus(100), "zzrare once only"]
    emb = build_embeddings(EmbeddingConfig(**TINY), texts)
    assert "zzrare" not in emb.vocab.index
    n_tokens, n_known = coverage(emb.vocab, texts)
    counts = Counter(t for text in texts for t in tokenize(text))
    assert n_tokens == emb.meta["n_train_tokens"] == sum(counts.values())
    assert n_known == sum(c for c in counts.values() if c >= 2) < n_tokens
    assert emb.meta["coverage"] == pytest.approx(n_known / n_tokens)


def test_word2vec_reads_texts_as_held_token_lists_would_give(trained) -> None:
    """Tokenizing on each pass (Sentences) trains the same vectors as gensim given lists,
    and the corpus can be passed as a one-shot iterator of texts."""
    from gensim.models import Word2Vec

    texts, emb = trained
    lists = [tokenize(t) for t in texts]
    model = Word2Vec(lists, vector_size=16, min_count=2, epochs=2, seed=0, workers=1, sg=1)
    assert emb.vocab.words[2:] == list(model.wv.index_to_key)
    np.testing.assert_array_equal(emb.matrix[2:], model.wv.vectors)
    again = build_embeddings(EmbeddingConfig(**TINY), iter(texts))
    np.testing.assert_array_equal(again.matrix, emb.matrix)


def test_several_workers_are_marked_not_deterministic() -> None:
    emb = build_embeddings(EmbeddingConfig(**TINY, workers=2), corpus(50))
    assert emb.meta["deterministic"] is False and emb.meta["workers"] == 2


def test_word2vec_is_bitwise_reproducible_across_processes(tmp_path: Path) -> None:
    # Different PYTHONHASHSEEDs: the result must not depend on Python's salted str hash.
    script = textwrap.dedent(f"""
        import random, sys
        from sentiment.config import EmbeddingConfig
        from sentiment.embeddings import build_embeddings, save_embeddings
        rng = random.Random(0)
        words = [f"w{{i}}" for i in range(60)]
        texts = [" ".join(rng.choices(words, weights=range(60, 0, -1), k=8)) for _ in range(300)]
        emb = build_embeddings(EmbeddingConfig(**{TINY!r}, workers=1), texts)
        assert emb.vocab.words[2:4] == ["w0", "w1"]
        save_embeddings(emb, sys.argv[1])
    """)
    root = Path(__file__).resolve().parents[1]
    for run in ("a", "b"):
        env = {**os.environ, "PYTHONHASHSEED": "1" if run == "a" else "2"}
        subprocess.run(
            [sys.executable, "-c", script, tmp_path / run], check=True, cwd=root, env=env
        )
    a, b = (
        (tmp_path / "a" / "vectors.npy").read_bytes(),
        (tmp_path / "b" / "vectors.npy").read_bytes(),
    )
    assert a == b
    assert (tmp_path / "a" / "vocab.txt").read_text() == (tmp_path / "b" / "vocab.txt").read_text()


@pytest.mark.parametrize(
    ("path", "fmt", "dim", "first"),
    [
        (W2V_BIN, "word2vec-binary", 10, "the"),
        (W2V_TEXT, "word2vec-text", 300, "one"),
        (GLOVE, "glove", 50, "the"),
    ],
)
def test_pretrained_formats_detected_and_loaded(path: Path, fmt: str, dim: int, first: str) -> None:
    assert detect_vectors_format(path) == fmt
    emb = build_embeddings(EmbeddingConfig(source=str(path)))
    assert emb.meta["format"] == fmt and emb.dim == dim and emb.vocab.words[2] == first
    assert emb.matrix.dtype == np.float32 and not emb.matrix[:2].any()
    limited = build_embeddings(EmbeddingConfig(source=str(path), format=fmt, limit=5))
    assert len(limited.vocab) <= 7 and limited.vocab.words[2] == first
    assert np.array_equal(limited.matrix[2], emb.matrix[2])


def test_keyedvectors_native_file_needs_explicit_format(tmp_path: Path) -> None:
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(W2V_BIN), binary=True)
    path = tmp_path / "vectors.kv"
    kv.save(str(path))
    with pytest.raises(SentimentError, match="pickle"):
        build_embeddings(EmbeddingConfig(source=str(path)))
    emb = build_embeddings(EmbeddingConfig(source=str(path), format="keyedvectors", limit=10))
    assert emb.vocab.words[2:] == [k.lower() for k in kv.index_to_key[:10]]
    assert np.array_equal(emb.matrix[2], kv.vectors[0])


def test_pretrained_restricted_to_training_words() -> None:
    texts = ["The man and the woman.", "zzunknown words, of one"]
    full = build_embeddings(EmbeddingConfig(source=str(W2V_BIN)))
    emb = build_embeddings(EmbeddingConfig(source=str(W2V_BIN)), texts)
    tokens = [t for text in texts for t in tokenize(text)]
    assert set(emb.vocab.words[2:]) == set(tokens) & set(full.vocab.words)
    assert emb.vocab.words[2:] == [w for w in full.vocab.words if w in set(tokens)]  # file order
    assert "zzunknown" not in emb.vocab.index
    n_tokens, n_known = coverage(emb.vocab, texts)
    assert emb.meta["n_train_tokens"] == n_tokens == len(tokens) == 9
    assert emb.meta["coverage"] == n_known / n_tokens < 1


def test_cased_file_maps_lowercase_to_first_casing(tmp_path: Path) -> None:
    path = write_w2v_text(
        tmp_path / "cased.txt",
        {"Good": [1.0, 1.0], "good": [2.0, 2.0], "GOOD": [3.0, 3.0], "New_York": [4.0, 4.0]},
    )
    emb = build_embeddings(EmbeddingConfig(source=str(path)), ["good new york"])
    assert emb.vocab.words == [*SPECIALS, "good"]
    assert emb.matrix[2].tolist() == [1.0, 1.0]


def test_save_load_round_trip(trained, tmp_path: Path) -> None:
    _, emb = trained
    out = save_embeddings(emb, tmp_path / "emb")
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.json", "vectors.npy", "vocab.txt"]
    back = load_embeddings(out)
    assert back.vocab.words == emb.vocab.words
    assert back.matrix.dtype == np.float32 and np.array_equal(back.matrix, emb.matrix)
    assert back.meta == json.loads(json.dumps(emb.meta))
    again = build_embeddings(EmbeddingConfig(source=str(out)))  # auto-detected as "saved"
    assert np.array_equal(again.matrix, emb.matrix)


def test_load_embeddings_does_not_import_gensim(trained, tmp_path: Path) -> None:
    out = save_embeddings(trained[1], tmp_path / "emb")
    code = (
        "import sys; from sentiment.embeddings import load_embeddings; "
        f"e = load_embeddings({str(out)!r}); assert len(e.vocab) > 2; "
        "assert 'gensim' not in sys.modules, 'gensim imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _corrupt(directory: Path, name: str) -> None:
    bad = {
        "vectors.npy": lambda p: np.save(p, np.zeros((3, 16), dtype=np.float32)),
        "vocab.txt": lambda p: p.write_text("<pad>\n<unk>\nw0\nw0\n"),
        "embeddings.json": lambda p: p.write_text("{not json"),
    }
    bad[name](directory / name)


@pytest.mark.parametrize(
    ("name", "corrupt", "reason"),
    [
        ("vectors.npy", _corrupt, "rows but"),
        ("vectors.npy", lambda d, n: (d / n).write_bytes(b"garbage"), "not a readable"),
        ("vectors.npy", lambda d, n: np.save(d / n, np.zeros(5, np.float32)), "2-D float32"),
        ("vectors.npy", lambda d, n: np.save(d / n, np.zeros((5, 2), np.float64)), "float32"),
        ("vectors.npy", lambda d, n: np.save(d / n, np.array([{}], dtype=object)), "readable"),
        ("vocab.txt", _corrupt, "duplicate"),
        ("embeddings.json", _corrupt, "not JSON"),
        ("embeddings.json", lambda d, n: (d / n).unlink(), "missing"),
    ],
)
def test_corrupt_saved_files_name_the_file(trained, tmp_path, name, corrupt, reason) -> None:
    out = save_embeddings(trained[1], tmp_path / "emb")
    corrupt(out, name)
    with pytest.raises(SentimentError, match=reason) as err:
        load_embeddings(out)
    assert str(out / name) in str(err.value)


def test_non_finite_and_dim_mismatch_refused(trained, tmp_path: Path) -> None:
    _, emb = trained
    bad = emb.matrix.copy()
    bad[3, 0] = np.nan
    out = save_embeddings(Embeddings(emb.vocab, bad, emb.meta), tmp_path / "nan")
    with pytest.raises(SentimentError, match="NaN"):
        load_embeddings(out)
    out = save_embeddings(Embeddings(emb.vocab, emb.matrix, {**emb.meta, "dim": 8}), tmp_path / "d")
    with pytest.raises(SentimentError, match="16 dims but"):
        load_embeddings(out)


@pytest.mark.parametrize(
    ("source", "fmt", "texts", "reason"),
    [
        ("/nonexistent/vectors.bin", "auto", None, "no such file"),
        (str(GLOVE), "fasttext", None, "unknown vectors format"),
        (str(GLOVE), "word2vec-text", None, "cannot read as word2vec-text"),
        (str(W2V_TEXT), "glove", None, "cannot read as glove"),
        (str(W2V_BIN), "word2vec-text", None, "cannot read as word2vec-text"),
        (str(GLOVE), "keyedvectors", None, "cannot read as keyedvectors"),
        (str(GLOVE), "auto", ["zzz qqq"], "none of its 76 words"),
        ("train", "auto", [], "no training texts"),
        ("train", "auto", ["one two three"], "min_count=2"),
    ],
)
def test_build_errors(source, fmt, texts, reason) -> None:
    config = EmbeddingConfig(source=source, format=fmt, dim=8, epochs=1)
    with pytest.raises(SentimentError, match=reason) as err:
        build_embeddings(config, texts)
    assert "\n" not in str(err.value)
    if source != "train" and fmt != "fasttext":
        assert source in str(err.value)


def test_dimension_mismatch_in_text_file(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("2 3\na 1 2 3\nb 1 2\n")
    with pytest.raises(SentimentError, match=re.escape(str(path))):
        build_embeddings(EmbeddingConfig(source=str(path)))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [("v.vec", "3 2\n", "word2vec-text"), ("v.txt", "the 0.1 0.2\n", "glove"), ("v.bin", "", None)],
)
def test_detect_format(tmp_path: Path, name: str, content: str, expected: str | None) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert detect_vectors_format(path) == (expected or "word2vec-binary")


def test_detect_format_refuses_directories_without_embeddings(tmp_path: Path) -> None:
    with pytest.raises(SentimentError, match=r"without vectors\.npy"):
        detect_vectors_format(tmp_path)


def test_read_texts(tmp_path: Path) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {"text": ["good", "bad", None, "meh"], "split": ["train", "test", "train", "train"]}
    )
    pq.write_table(table, tmp_path / "part-0.parquet")
    assert read_texts(tmp_path, "train") == ["good", "meh"]
    assert read_texts(tmp_path, "test") == ["bad"]
    with pytest.raises(SentimentError, match="no rows with split == 'val'"):
        read_texts(tmp_path, "val")
    with pytest.raises(SentimentError, match="no Parquet files"):
        read_texts(tmp_path / "missing")
    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pa.table({"body": ["x"]}), other / "part-0.parquet")
    with pytest.raises(SentimentError, match="columns 'text' and 'split'"):
        read_texts(other)


def test_cli_embeddings_trains_and_saves(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sentiment.cli import app

    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    texts = corpus(200)
    pq.write_table(pa.table({"text": texts, "split": ["train"] * 200}), tmp_path / "p.parquet")
    out = tmp_path / "emb"
    args = ["embeddings", "--data", str(tmp_path), "--output", str(out), "--w2v-dim", "8"]
    result = CliRunner().invoke(app, [*args, "--w2v-epochs", "1"])
    assert result.exit_code == 0, result.output
    assert re.search(r"coverage of training tokens: 9\d\.\d\d% of 1,600\n", result.output)
    assert "deterministic: yes" in result.output
    assert load_embeddings(out).dim == 8
    glove = CliRunner().invoke(app, [*args[:-2], "--source", str(GLOVE), "--limit", "3"])
    assert glove.exit_code == 1 and "none of its 3 words" in glove.output


def test_cli_embeddings_needs_train_rows(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sentiment.cli import app

    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": ["x"], "split": ["test"]}), tmp_path / "p.parquet")
    result = CliRunner().invoke(app, ["embeddings", "--data", str(tmp_path), "--output", "o"])
    assert result.exit_code == 1
    assert "no rows with split == 'train'" in result.output


# --- --corpus: more text for word2vec, never the dataset's held-out reviews -----------------


def _test_and_train_texts(dataset: Path) -> tuple[list[str], list[str]]:
    return read_texts(dataset, "test"), read_texts(dataset, "train")


def test_corpus_adds_text_but_never_a_held_out_review(tiny_dataset: Path, tmp_path: Path) -> None:
    """Corpus rows equal (as tokens) to a test or validation review are left out; so is
    the whole held-out part when the training dataset itself is given as the corpus."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sentiment.config import TrainConfig
    from sentiment.train_job import word2vec_texts

    test, train = _test_and_train_texts(tiny_dataset)
    new = ["an unlabelled review of a kettle", "another one, about a book"]
    rows = [*new, test[0], test[1].upper() + " !", None, "  ", train[0]]
    (tmp_path / "corpus").mkdir()
    pq.write_table(pa.table({"text": rows}), tmp_path / "corpus" / "part-0.parquet")
    cfg = TrainConfig(
        data=str(tiny_dataset), embeddings=EmbeddingConfig(corpus=(str(tmp_path / "corpus"),))
    )
    texts = word2vec_texts(cfg)
    assert texts[: len(train)] == train
    assert texts[len(train) :] == [*new, train[0]]

    # the dataset itself as the corpus, with a validation carve: only its training part again
    carved = TrainConfig(
        data=str(tiny_dataset),
        val_fraction=0.3,
        embeddings=EmbeddingConfig(corpus=(str(tiny_dataset),)),
    )
    texts = word2vec_texts(carved)
    kept = len(word2vec_texts(TrainConfig(data=str(tiny_dataset), val_fraction=0.3)))
    assert kept < len(train)
    held_out = {" ".join(tokenize(t)) for t in test + train} - {
        " ".join(tokenize(t)) for t in texts[:kept]
    }
    assert held_out and not held_out & {" ".join(tokenize(t)) for t in texts}


def test_corpus_errors_name_the_file(tiny_dataset: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sentiment.embeddings import read_corpus

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(SentimentError, match=r"a.parquet: no text column 'text'"):
        read_corpus([str(tmp_path / "a.parquet")])
    with pytest.raises(SentimentError, match=r"missing: no such file"):
        read_corpus([str(tmp_path / "missing")])


def test_cli_embeddings_with_a_corpus_leaves_test_reviews_out(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from sentiment.cli import app

    args = ["embeddings", "--data", str(tiny_dataset), "--output", str(tmp_path / "e")]
    args += [
        "--w2v-dim",
        "8",
        "--w2v-epochs",
        "1",
        "--w2v-min-count",
        "1",
        "--w2v-corpus",
        str(tiny_dataset),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    _, train = _test_and_train_texts(tiny_dataset)
    # every train review twice (the split and the corpus), no test review
    n_tokens = 2 * sum(len(tokenize(t)) for t in train)
    assert f"of {n_tokens:,}\n" in result.output
    meta = json.loads((tmp_path / "e" / "embeddings.json").read_text())
    assert meta["n_train_tokens"] == n_tokens
