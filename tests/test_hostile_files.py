"""Small hostile files: each is refused with one `error:` line, fast, in bounded memory.

The files are a few MB at most on disk and claim far more: a pickle whose shared references
expand to 100 GB of text, gzip streams of gigabytes, an archive member of 1 GB, a 1 GiB
vocabulary with no disk blocks. Each is refused in a child process whose address space is
capped (ADDRESS_SPACE), so code that follows the claims fails there rather than take the
machine, and whose peak resident memory must stay under PEAK_MB. The bounds themselves are
tested in this process with small caps.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from sentiment import archives, readers
from sentiment.artifacts import MAX_VOCAB_BYTES, read_vocab, write_model_dir
from sentiment.config import ModelConfig, SentimentError, TextConfig
from sentiment.embeddings import Embeddings, load_embeddings, read_phrases, save_embeddings
from sentiment.models import build_model
from sentiment.text import Vocabulary

ADDRESS_SPACE = 3 * 1024**3
# The child's peak resident memory: importing the CLI takes about 130 MB, the model code
# (torch) about 240 MB; following any of the files' claims takes gigabytes.
PEAK_MB = 1000
TIMEOUT_S = 60
PEAK_MARK = "peak-resident-kib:"
BLOCK = 64 * 1024**2

# The child caps its address space, and reports its own peak resident memory as it exits:
# VmHWM, of its own image. (Its ru_maxrss would count the parent's resident memory too: Linux
# carries the high-water mark of the image a child replaces at exec into it.)
PRELUDE = f"""\
import atexit, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))
def _peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    print(f"{PEAK_MARK} {{kib}}", file=sys.stderr)
atexit.register(_peak)
"""
CLI = PRELUDE + "from sentiment.cli import app\napp(prog_name='sentiment-jobs')\n"


def load(module: str, function: str) -> str:
    """A child that calls `sentiment.<module>.<function>(sys.argv[1])` and prints a
    SentimentError as the CLI does."""
    return PRELUDE + (
        "from sentiment.config import SentimentError\n"
        f"from sentiment.{module} import {function}\n"
        "try:\n"
        f"    {function}(sys.argv[1])\n"
        "except SentimentError as exc:\n"
        "    print(f'error: {exc}', file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )


def run_capped(tmp_path: Path, code: str, *args: str) -> tuple[int, str, float]:
    """Run `code` with `args` in a child: (exit status, stderr, peak resident memory in MB)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SENTIMENT_JOBS_HOME": str(tmp_path / "home")},
        cwd=tmp_path,
        timeout=TIMEOUT_S,
    )
    lines = done.stderr.splitlines()
    peaks = [int(line.split()[1]) for line in lines if line.startswith(PEAK_MARK)]
    assert len(peaks) == 1, done.stderr[-2000:]
    stderr = "\n".join(line for line in lines if not line.startswith(PEAK_MARK))
    return done.returncode, stderr, peaks[0] / 1024


def assert_refused(tmp_path: Path, code: str, *args: str, naming: Path, reason: str) -> None:
    """The child exits 1 with one `error:` line naming `naming` and `reason`, within 30 s
    and PEAK_MB."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("the child's peak memory is read from /proc (Linux)")
    start = time.monotonic()
    status, stderr, peak = run_capped(tmp_path, code, *args)
    seconds = time.monotonic() - start
    print(f"peak {peak:.0f} MB, {seconds:.1f} s: {stderr.strip()[-300:]}")
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 1, stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert str(naming) in errors[0] and reason in errors[0], errors[0]
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"
    assert seconds < 30


def gzip_bomb(head: bytes, n: int, fill: bytes = b"\0") -> bytes:
    """`head`, then n bytes of `fill`, as a gzip stream of about n/1000 bytes: one
    compressed block repeated (gzip members in a row decompress as one stream)."""
    block = gzip.compress(fill * (BLOCK // len(fill)))
    full, rest = divmod(n, BLOCK)
    return gzip.compress(head) + block * full + gzip.compress(fill * (rest // len(fill)))


def prepare(tmp_path: Path, source: Path) -> list[str]:
    return ["prepare", str(source), "-o", str(tmp_path / "ds")]


# --- DLStudio pickles -------------------------------------------------------------------


def shared_references(word_chars: int, words: int, reviews: int) -> bytes:
    """A DLStudio pickle with one word, in one review `words` times, that review `reviews`
    times: each is held once (memo references), joined as text they are the product."""
    review = ["x" * word_chars] * words
    return pickle.dumps(({"books": [review] * reviews}, {"books": [["bad"]]}, []), protocol=2)


def test_a_pickle_whose_shared_references_expand_to_100_gb_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "sentiment_dataset_train_400.tar.gz"
    src.write_bytes(gzip.compress(shared_references(10_000, 1_000, 10_000)))
    assert src.stat().st_size < 1000
    assert_refused(tmp_path, CLI, *prepare(tmp_path, src), naming=src, reason="characters")
    assert not (tmp_path / "ds").exists()


GOOD_PICKLE = pickle.dumps(({"books": [["good"]]}, {"books": [["bad"]]}, []), protocol=2)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        # a dataset, then 2.5 GiB: past every cap there has been
        (lambda: gzip_bomb(GOOD_PICKLE, 5 * 1024**3 // 2), "gzip bomb"),
        # a dataset, then 1.9 GiB: under the old 2 GiB cap, which held it twice
        (lambda: gzip_bomb(GOOD_PICKLE, 1900 * 1024**2), "gzip bomb"),
        # 320 million empty lists: 64 bytes each once built
        (lambda: gzip_bomb(b"\x80\x02(", 320 * 1024**2, b"]"), "memory"),
        # one string of 1.5 GiB
        (lambda: gzip_bomb(b"\x80\x02X" + (3 << 29).to_bytes(4, "little"), 3 << 29), "memory"),
    ],
    ids=["past the cap", "under the old cap", "empty lists", "one long string"],
)
def test_a_gzip_bomb_is_refused_as_it_decompresses(tmp_path: Path, build, reason: str) -> None:
    src = tmp_path / "sentiment_dataset_train_400.tar.gz"
    src.write_bytes(build())
    assert src.stat().st_size < 4 * 1024**2
    assert_refused(tmp_path, CLI, *prepare(tmp_path, src), naming=src, reason=reason)


def dlstudio(tmp_path: Path, payload: bytes) -> Path:
    src = tmp_path / "sentiment_dataset_train_3.tar.gz"
    src.write_bytes(gzip.compress(payload))
    return src


def test_shared_references_count_in_full_against_the_text_cap(tmp_path: Path) -> None:
    # 100 x 1,000 x 100 characters = 10 M characters of text from a pickle of a few hundred
    # bytes; max_bytes // 4 = 2.5 M characters may be made of it
    src = dlstudio(tmp_path, shared_references(1_000, 100, 100))
    with pytest.raises(SentimentError, match=r"more than 2,500,000 characters of text") as err:
        readers.read_dlstudio(src, max_bytes=10_000_000)
    assert str(err.value).startswith(f"{src}: refused: ")
    table = readers.read_dlstudio(dlstudio(tmp_path, shared_references(1_000, 100, 10)))
    assert table.num_rows == 11 and len(table["text"][0].as_py()) == 100 * 1_001 - 1


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x02(" + b"]" * 20_000,  # empty lists, on the stack
        b"\x80\x02(" + b"(" * 20_000,  # marks, each a new list
        b"\x80\x02}(" + b"".join(b"J" + i.to_bytes(4, "little") + b"N" for i in range(20_000)),
        b"\x80\x02N" + b"".join(b"r" + (1 << 30 | i).to_bytes(4, "little") for i in range(9_000)),
        b"\x80\x02(" + b"\x8c\x04abcd" * 20_000,  # strings
        b"\x80\x02" + b"N0" * 70_000,  # nothing kept, but each opcode counts
    ],
    ids=["lists", "marks", "dict", "forged memo", "strings", "none"],
)
def test_what_a_pickle_builds_is_charged_as_it_is_built(tmp_path: Path, payload: bytes) -> None:
    src = dlstudio(tmp_path, payload)
    with pytest.raises(SentimentError, match=r"objects would take more than 1,000,000 bytes"):
        readers.read_dlstudio(src, max_bytes=1_000_000)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_reads_through_the_stream(tmp_path: Path, protocol: int) -> None:
    # more than one chunk of the stream, and (protocol 4+) many frames
    reviews = [[f"w{i}", f"w{i + 1}", "é"] for i in range(60_000)]
    payload = pickle.dumps(({"books": reviews}, {"dvd": [["bad"]]}, ["w0"]), protocol=protocol)
    assert len(payload) > readers._CHUNK
    table = readers.read_dlstudio(dlstudio(tmp_path, payload))
    assert table.num_rows == 60_001
    assert table["text"][7].as_py() == "w7 w8 é" and table["text"][-1].as_py() == "bad"


# --- the Multi-Domain archive --------------------------------------------------------------


def test_an_archive_member_of_1_gb_is_refused_at_its_header(tmp_path: Path) -> None:
    size = 15 * BLOCK  # 1,006,632,960 bytes: under the 1 GiB the whole archive may unpack to
    info = tarfile.TarInfo("sorted_data_acl/books/positive.review")
    info.size = size
    archive = tmp_path / "domain_sentiment_data.tar.gz"
    # the header, the member's zeros, the two empty blocks that end a tar
    archive.write_bytes(gzip_bomb(info.tobuf(), size + 1024))
    assert archive.stat().st_size < 2 * 1024**2
    assert_refused(
        tmp_path,
        CLI,
        *prepare(tmp_path, archive),
        naming=archive,
        reason="the entry 'sorted_data_acl/books/positive.review' is 1,006,632,960 bytes",
    )
    assert not any((tmp_path / "home").rglob("*.review"))  # nothing of it was unpacked


def tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_only_review_files_are_unpacked_within_their_caps(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(archives, "MAX_LABELLED_BYTES", 100)
    monkeypatch.setattr(archives, "MAX_REVIEW_BYTES", 1000)
    files = {
        "d/books/positive.review": b"p" * 100,
        "d/books/unlabeled.review": b"u" * 800,  # over the labelled cap, under the total
        "d/books/big.bin": bytes(5000),  # never read, so never unpacked
    }
    archive = tar_gz(tmp_path / "a.tar.gz", files)
    target = tmp_path / "t1"
    target.mkdir()
    archives.safe_extract(archive, target, select=archives._ReviewFiles(archive))
    unpacked = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert unpacked == ["d/books/positive.review", "d/books/unlabeled.review"]

    for extra, message in [
        ({"d/dvd/negative.review": b"n" * 101}, "'d/dvd/negative.review' is 101 bytes"),
        ({"d/dvd/unlabeled.review": b"u" * 101}, "review files come to more than 1,000 bytes"),
    ]:
        tar_gz(archive, {**files, **extra})
        with pytest.raises(SentimentError, match=message) as err:
            archives.read_amazon_archive(archive, tmp_path / "work")
        assert str(err.value).startswith(f"{archive}: refused: ")
    assert not any((tmp_path / "work").iterdir())  # the unpacking folder is gone


def test_a_review_left_open_is_refused_not_held(tmp_path: Path) -> None:
    path = tmp_path / "books" / "positive.review"
    path.parent.mkdir()
    path.write_text("<review><title>ok</title></review>\n<review>" + "x" * (1 << 20))
    with pytest.raises(SentimentError, match=r"a <review> runs past 1,048,576 characters"):
        readers.read_amazon(path)


def test_reviews_read_a_chunk_at_a_time_are_the_whole_file_s(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "books" / "negative.review"
    path.parent.mkdir()
    text = "".join(
        f"<review>\r\n<title>\nt{i} &amp; é\n</title><review_text>r{i}</review_text></review>"
        for i in range(50)
    )
    path.write_text(text + "<review><title>left open</title>", encoding="latin-1", newline="")
    whole = readers.read_amazon(path).to_pylist()
    monkeypatch.setattr(readers, "_CHUNK", 7)  # tags and characters cut between chunks
    assert readers.read_amazon(path).to_pylist() == whole
    assert len(whole) == 50 and whole[3]["text"] == "t3 & é r3"


# --- vocabularies ---------------------------------------------------------------------------


def sparse(path: Path, head: str, size: int) -> Path:
    """`head`, then zero bytes up to `size`: a file of `size` bytes with no disk blocks."""
    with path.open("wb") as f:
        f.write(head.encode())
        f.truncate(size)
    return path


def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    model = build_model(ModelConfig(vocab_size=4, embed_dim=2, hidden_size=2))
    write_model_dir(directory, model, Vocabulary.from_words(["good", "bad"]), TextConfig(), {})
    return directory


def embeddings_dir(tmp_path: Path, rows: int) -> Path:
    words = Vocabulary.from_words(f"w{i}" for i in range(rows - 2))
    emb = Embeddings(words, np.zeros((rows, 2), np.float32), {"dim": 2})
    return save_embeddings(emb, tmp_path / "emb")


def test_a_1_gib_vocabulary_line_is_refused_without_reading_it(tmp_path: Path) -> None:
    directory = model_dir(tmp_path)
    vocab = sparse(directory / "vocab.txt", "<pad>\n<unk>\ngood\nbad", MAX_VOCAB_BYTES - 1)
    code = load("artifacts", "load_model_dir")
    assert_refused(tmp_path, code, str(directory), naming=vocab, reason="line 4: longer than")


def test_a_1_gib_embeddings_vocabulary_is_refused_without_reading_it(tmp_path: Path) -> None:
    directory = embeddings_dir(tmp_path, 4)
    vocab = sparse(directory / "vocab.txt", "<pad>\n<unk>\nw0\n", 1024**3)
    code = load("embeddings", "load_embeddings")
    assert_refused(tmp_path, code, str(directory), naming=vocab, reason="line 4: longer than")


def test_words_past_the_rows_are_refused_at_the_first_one(tmp_path: Path) -> None:
    directory = embeddings_dir(tmp_path, 4)
    vocab = directory / "vocab.txt"
    vocab.write_text("<pad>\n<unk>\nw0\nw1\n\n\n")  # blank lines at the end: as from_text
    assert load_embeddings(directory).vocab.words == ["<pad>", "<unk>", "w0", "w1"]
    vocab.write_text("<pad>\n<unk>\nw0\nw1\n\nw2\n" + "w\n" * 1000)
    with pytest.raises(SentimentError, match=r"4 rows but .*vocab.txt has more words \(line 5\)"):
        load_embeddings(directory)

    model = model_dir(tmp_path)
    assert read_vocab(model, TextConfig(), rows=4).words == ["<pad>", "<unk>", "good", "bad"]
    with pytest.raises(SentimentError, match=r"more words than the model's 3 rows \(line 4\)"):
        read_vocab(model, TextConfig(), rows=3)


def test_phrases_past_the_pairs_expected_are_refused(tmp_path: Path) -> None:
    (tmp_path / "phrases.txt").write_text("not good\nnew york\n")
    assert len(read_phrases(tmp_path, 2)) == 2
    with pytest.raises(SentimentError, match=r"line 2: more than the 1 pairs expected"):
        read_phrases(tmp_path, 1)
    sparse(tmp_path / "phrases.txt", "not good\n", 1024**3)
    with pytest.raises(SentimentError, match=r"phrases.txt: not a phrase list \(line 2: longer"):
        read_phrases(tmp_path)
