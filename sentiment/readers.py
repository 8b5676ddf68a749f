"""One reader per review source format, each giving an Arrow table in the canonical schema.

A reader returns the columns of `SCHEMA`, with `split` null where the source has
none (`datasets.prepare` then assigns a hashed split). Every problem with the
input raises `SentimentError` naming the file and, where there is one, the row.
"""

from __future__ import annotations

import codecs
import gzip
import html
import io
import logging
import pickle
import re
import struct
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.json as pjson

from sentiment.config import SentimentError, setting

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("review_id", pa.string()),
        ("text", pa.string()),
        ("label", pa.int8()),  # 0 negative, 1 positive
        ("category", pa.string()),
        ("split", pa.string()),  # "train" or "test"
        ("rating", pa.float32()),  # stars where the source has them, else null
        # Reviews that must stay on one side of every split (Amazon: the product's asin).
        # Null: the review is a group of its own. Splits hash group_id, else review_id.
        ("group_id", pa.string()),
    ]
)
SPLITS = ("train", "test")
_POSITIVE = {"1", "pos", "positive"}
_NEGATIVE = {"0", "neg", "negative"}


def parse_label(value: object) -> int:
    """1 or 0 from 0/1 (int, bool or string) or pos/positive/neg/negative in any case."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _POSITIVE:
            return 1
        if key in _NEGATIVE:
            return 0
    raise ValueError(f"label {value!r} is not one of 0/1, pos/positive, neg/negative")


def make_table(
    ids: Sequence[str],
    texts: Sequence[str | None],
    labels: Sequence[int],
    categories: Sequence[str],
    splits: Sequence[str | None] | None = None,
    ratings: Sequence[float | None] | None = None,
    groups: Sequence[str | None] | None = None,
) -> pa.Table:
    """Columns as Python sequences → a table with `SCHEMA`; missing splits, ratings and
    groups are null."""
    nulls = [None] * len(ids)
    columns = [ids, texts, labels, categories, splits or nulls, ratings or nulls, groups or nulls]
    return pa.table(
        [pa.array(c, f.type) for c, f in zip(columns, SCHEMA, strict=True)], schema=SCHEMA
    )


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (pyarrow's often span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


_CHUNK = 1 << 20


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Older review dumps are Latin-1/CP-1252; Latin-1 decodes any byte, so no row is lost.
        log.warning("%s is not UTF-8; reading it as Latin-1", path)
        return data.decode("latin-1")


# --- Amazon multi-domain (.review) ------------------------------------------------------

AMAZON_LABELS = {"positive": 1, "negative": 0}
# A review is held whole while it is read; the real ones are under 25,000 characters, so a
# longer one is a tag left open (or no review file at all), refused rather than held.
MAX_REVIEW_CHARS = 1 << 20
# Tags found as text rather than with an XML parser: the authors' original files have no root
# element and raw "&" in text, so they are not XML; the same search reads the well-formed
# copies too.
_OPEN, _CLOSE = "<review>", "</review>"
_FIELD = re.compile(r"<([a-z_]+)>(.*?)</\1>", re.DOTALL)
# Only complete references ("&amp;", "&#39;") are unescaped: html.unescape on the whole text
# would also turn a raw "&not" or "&copy" into a symbol, as HTML5 lets some names omit ";".
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")


def _unescape(value: str) -> str:
    return _ENTITY.sub(lambda m: html.unescape(m.group()), value.strip())


def amazon_files(path: Path) -> list[Path]:
    """The labelled `.review` files under a dataset root, in a category folder, or the file."""
    if path.is_file():
        return [path]

    def labelled(folder: Path) -> list[Path]:
        return [folder / f"{n}.review" for n in AMAZON_LABELS if (folder / f"{n}.review").is_file()]

    files = labelled(path) or [f for d in sorted(path.iterdir()) if d.is_dir() for f in labelled(d)]
    if not files:
        raise SentimentError(f"{path}: no positive.review or negative.review files found")
    return files


def amazon_reviews(path: Path) -> Iterator[dict[str, str]]:
    """The fields of every `<review>` in a `.review` file (either form), unescaped and
    stripped, read a review at a time: memory holds one review, not the file."""
    encoding = _encoding(path)
    for block in _review_blocks(path, encoding):
        yield {name: _unescape(value) for name, value in _FIELD.findall(block)}


def _encoding(path: Path) -> str:
    """The encoding to read it with: UTF-8, or Latin-1 for a file that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as f:
        try:
            while chunk := f.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            # Older review dumps are Latin-1/CP-1252; Latin-1 decodes any byte, so no row is lost.
            log.warning("%s is not UTF-8; reading it as Latin-1", path)
            return "latin-1"
    return "utf-8"


def _review_blocks(path: Path, encoding: str) -> Iterator[str]:
    """What is between each `<review>` and the first `</review>` after it, in order."""
    pending = ""
    # newline="": a review's text keeps its line ends as they are in the file.
    with path.open(encoding=encoding, newline="") as f:
        while chunk := f.read(_CHUNK):
            pending += chunk
            start = 0
            while (begin := pending.find(_OPEN, start)) >= 0:
                end = pending.find(_CLOSE, begin + len(_OPEN))
                if end < 0:
                    break
                yield pending[begin + len(_OPEN) : end]
                start = end + len(_CLOSE)
            if begin < 0:  # keep what may be the start of a tag cut by the chunk's end
                pending = pending[max(start, len(pending) - len(_OPEN) + 1) :]
            else:
                pending = pending[begin:]
                if len(pending) > MAX_REVIEW_CHARS:
                    raise SentimentError(
                        f"{path}: a <review> runs past {MAX_REVIEW_CHARS:,} characters without "
                        "its </review>; not a review file?"
                    )


def amazon_text(fields: dict[str, str]) -> str:
    """A review's text: title + a space + review text."""
    return f"{fields.get('title', '')} {fields.get('review_text', '')}".strip()


def read_amazon(path: Path, test_from: int = 800) -> pa.Table:
    """Reviews of one `positive.review`/`negative.review` file; category = its folder's name.

    Canonical split: the review at 0-based position i in the file is test if i >= test_from.
    """
    label = AMAZON_LABELS.get(path.stem)
    if label is None or path.suffix != ".review":
        raise SentimentError(
            f"{path}: an Amazon review file is named positive.review or negative.review"
        )
    category = path.parent.name
    ids, texts, ratings, groups = [], [], [], []
    for i, fields in enumerate(amazon_reviews(path)):
        ids.append(f"amazon/{category}/{path.stem}/{i}")
        texts.append(amazon_text(fields))
        ratings.append(_rating(fields.get("rating", ""), path, i))
        groups.append(f"amazon/{category}/{asin}" if (asin := fields.get("asin")) else None)
    if not ids:
        raise SentimentError(f"{path}: no <review> elements found")
    splits = ["test" if i >= test_from else "train" for i in range(len(ids))]
    n = len(ids)
    return make_table(ids, texts, [label] * n, [category] * n, splits, ratings, groups)


def _rating(value: str, path: Path, i: int) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise SentimentError(f"{path}: review {i}: rating {value!r} is not a number") from None


# --- DLStudio sentiment pickles (sentiment_dataset_{train,test}_N.tar.gz) ----------------

# One figure bounds what a DLStudio file may cost, so that a small hostile one is refused
# before it costs more: the bytes its gzip stream decompresses to (counted as they come, never
# held whole), the memory of the objects unpickled from them (charged as each is built), and a
# quarter of it for the text its reviews expand to (a list referenced a thousand times counts a
# thousand times). A refused file takes about this much memory at most. The real files
# decompress to a few tens of MB, and their objects are charged about 5 times that.
MAX_PICKLE_BYTES = 512 * 1024**2


def _opcodes(names: str) -> set[int]:
    return {getattr(pickle, name)[0] for name in names.split()}


# Out-of-band buffers never occur in these files, and BYTEARRAY8 allocates the length it
# claims before reading a byte: a 20-byte pickle could ask for terabytes. Sets never occur
# either, and their tables would cost more than `_charged` counts.
_REFUSED_OPCODES = _opcodes("BYTEARRAY8 NEXT_BUFFER READONLY_BUFFER EMPTY_SET ADDITEMS FROZENSET")
# What an opcode adds to memory, charged after it runs: a slot on the stack or in a list for
# every one (which also bounds how many run, so how long loading takes), a container's own
# size for those that make one, an entry for each key and value put in a dict. Strings and
# numbers are charged their size; memo entries are charged by `_Memo`.
_SLOT = 16
_CONTAINER = 72
_DICT_ITEM = 48
_MAKES_CONTAINER = _opcodes("EMPTY_LIST EMPTY_DICT MARK LIST TUPLE TUPLE1 TUPLE2 TUPLE3")
_FILLS_DICT = _opcodes("SETITEM SETITEMS DICT")
_MAKES_VALUE = _opcodes(
    "STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINBYTES "
    "SHORT_BINBYTES BINBYTES8 INT BININT BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT"
)
_MEMO_ENTRY = 128  # a dict entry, its int key and the table's slack


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _TooLarge(Exception):
    """A DLStudio file passes a cap: "bytes" decompressed, "memory" of its objects or
    "text" its reviews expand to."""


class _Opcodes(dict):
    def __missing__(self, key: int) -> Any:
        raise pickle.UnpicklingError(f"opcode {bytes([key])!r} is not accepted")


class _Stream:
    """A gzip file as the unpickler reads it: decompressed a chunk at a time and counted as
    it comes, never held whole. `left` is the memory its objects may still take."""

    def __init__(self, f: gzip.GzipFile, max_bytes: int):
        self.f, self.max_bytes, self.total, self.left = f, max_bytes, 0, max_bytes
        self.buffer = io.BytesIO()

    def _more(self) -> bool:
        chunk = self.f.read(_CHUNK)
        self.total += len(chunk)
        if self.total > self.max_bytes:
            raise _TooLarge("bytes")
        self.buffer = io.BytesIO(chunk)
        return bool(chunk)

    def _fits(self, size: int) -> None:
        # Only a string or frame the pickle says is long spans chunks: it is refused as it is
        # read once its bytes, their joined copy and the string (up to 4 bytes a character)
        # would not fit in what is left, before any of that is allocated.
        if 6 * size > self.left:
            raise _TooLarge("memory")

    def read(self, n: int) -> bytes:
        data = self.buffer.read(n)
        if len(data) == n:
            return data
        parts, got = [data], len(data)
        while got < n and self._more():
            parts.append(self.buffer.read(n - got))
            got += len(parts[-1])
            self._fits(got)
        return b"".join(parts)

    def readline(self) -> bytes:
        line = self.buffer.readline()
        if line.endswith(b"\n"):
            return line
        parts, got = [line], len(line)
        while not parts[-1].endswith(b"\n") and self._more():
            parts.append(self.buffer.readline())
            got += len(parts[-1])
            self._fits(got)
        return b"".join(parts)

    def charge(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise _TooLarge("memory")

    def drain(self) -> None:
        """Read to the end, where gzip checks the length and CRC of what it produced."""
        while self._more():
            pass


class _Memo:
    """The unpickler's memo: a list while indices come in order, as picklers write them; a
    dict, charged per entry, for any other index (a forged one such as 2**31)."""

    def __init__(self, stream: _Stream):
        self.items: list[Any] = []
        self.other: dict[int, Any] = {}
        self.stream = stream

    def __len__(self) -> int:
        return len(self.items) + len(self.other)

    def __getitem__(self, i: int) -> Any:
        if 0 <= i < len(self.items):
            return self.items[i]
        return self.other[i]  # a KeyError, as from the dict the unpickler expects

    def __setitem__(self, i: int, value: Any) -> None:
        if i == len(self.items):
            self.items.append(value)
            self.other.pop(i, None)
        elif 0 <= i < len(self.items):
            self.items[i] = value
        else:
            if i not in self.other:
                self.stream.charge(_MEMO_ENTRY)
            self.other[i] = value


def _charged(op: int, load: Any) -> Any:
    """The unpickler's `load` for `op`, charging what it built to the stream's budget."""
    if op in _MAKES_VALUE:

        def run(self: _DataOnlyUnpickler) -> None:
            load(self)
            self.stream.charge(_SLOT + sys.getsizeof(self.stack[-1]))

    elif op in _FILLS_DICT:
        pair = op == pickle.SETITEM[0]

        def run(self: _DataOnlyUnpickler) -> None:
            # Charged before: the items since the mark become a dict all at once.
            self.stream.charge(_SLOT + _DICT_ITEM * (2 if pair else len(self.stack)))
            load(self)

    else:
        cost = _SLOT + (_CONTAINER if op in _MAKES_CONTAINER else 0)

        def run(self: _DataOnlyUnpickler) -> None:
            load(self)
            self.stream.charge(cost)

    return run


class _DataOnlyUnpickler(pickle._Unpickler):
    """Refuses every global, so no class can be built and no callable (os.system) can run.

    What is left are the objects pickle builds from opcodes alone: dicts, lists, tuples,
    str (Python 2 byte strings become str through encoding="latin1"), bytes, numbers,
    bools and None; `_check_dlstudio` then accepts only the dataset's dicts, lists and str.
    Each opcode is charged what it built to `stream`, which refuses the file once that passes
    its budget. The pure-Python unpickler, not the C one, because its memo can be replaced:
    in the C one a forged memo index (LONG_BINPUT 2**31) makes it allocate gigabytes, and
    nothing can be counted. It is ~3x slower, a few seconds for the largest DLStudio file.
    """

    dispatch = _Opcodes(
        (op, _charged(op, load))
        for op, load in pickle._Unpickler.dispatch.items()
        if op not in _REFUSED_OPCODES
    )

    def __init__(self, stream: _Stream):
        super().__init__(stream, encoding="latin1")
        self.stream = stream
        self.memo = _Memo(stream)

    def find_class(self, module: str, name: str) -> Any:
        raise _RefusedGlobal(f"{module}.{name}")


def _load_pickle(path: Path, max_bytes: int) -> Any:
    try:
        with gzip.open(path, "rb") as f:
            stream = _Stream(f, max_bytes)
            obj = _DataOnlyUnpickler(stream).load()
            stream.drain()
        return obj
    except _RefusedGlobal as exc:
        raise SentimentError(
            f"{path}: refused: the pickle asks for the global {exc}; only plain data "
            "(dicts, lists, tuples, strings) is loaded"
        ) from None
    except _TooLarge as exc:
        raise _too_large(path, str(exc), max_bytes) from None
    except gzip.BadGzipFile as exc:
        what = "not a gzip file" if "Not a gzipped" in str(exc) else f"corrupt gzip ({exc})"
        raise SentimentError(f"{path}: {what}") from None
    except (EOFError, zlib.error) as exc:
        detail = one_line(exc) if str(exc) else "the pickle ends early"
        raise SentimentError(f"{path}: truncated or corrupt ({detail})") from None
    except (pickle.UnpicklingError, struct.error, ValueError, TypeError, LookupError) as exc:
        # The opcode stream itself is broken (bad key, bad length, bad memo reference, ...).
        raise SentimentError(f"{path}: malformed pickle ({one_line(exc)})") from None
    except (AttributeError, ArithmeticError, MemoryError, RecursionError) as exc:
        raise SentimentError(f"{path}: malformed pickle ({type(exc).__name__})") from None


def _too_large(path: Path, what: str, max_bytes: int) -> SentimentError:
    reason = {
        "bytes": f"decompresses to more than {max_bytes:,} bytes (a gzip bomb?)",
        "memory": f"its objects would take more than {max_bytes:,} bytes of memory "
        "(a gzip or pickle bomb?)",
        "text": f"its reviews expand to more than {max_bytes // 4:,} characters of text "
        "(lists or strings referenced over and over?)",
    }[what]
    return SentimentError(f"{path}: refused: {reason}")


# What a review costs beyond its words, in characters: its id and the Python objects of its
# id and text.
_ROW_CHARS = 128


def _check_dlstudio(obj: Any, path: Path, max_bytes: int) -> tuple[dict, dict]:
    """(positive_reviews, negative_reviews) after checking the whole structure's types.

    Also counts the text `read_dlstudio` will make of them, every reference in full, and
    refuses past `max_bytes // 4` characters: a pickle holds a shared list once, however
    often it is referenced, so only this count sees what joining its words would take.
    """

    def bad(what: str) -> SentimentError:
        return SentimentError(f"{path}: not a DLStudio sentiment dataset: {what}")

    if not isinstance(obj, tuple) or len(obj) != 3:
        size = f" of length {len(obj)}" if isinstance(obj, (tuple, list, dict)) else ""
        raise bad(f"expected a tuple (positive, negative, vocab), got a {type(obj).__name__}{size}")
    if not isinstance(obj[2], list):
        raise bad(f"vocab is a {type(obj[2]).__name__}, expected a list")
    chars, max_chars = 0, max_bytes // 4
    for name, reviews in (("positive", obj[0]), ("negative", obj[1])):
        if not isinstance(reviews, dict):
            raise bad(f"{name} reviews are a {type(reviews).__name__}, expected a dict")
        for category, items in reviews.items():
            if not isinstance(category, str) or not isinstance(items, list):
                raise bad(f"{name}[{category!r}] is not a category name → list of reviews")
            row = _ROW_CHARS + 2 * len(category)  # in its id and its category column
            for i, words in enumerate(items):
                # Counted before the words are looked at: a list of millions of words,
                # referenced millions of times, is refused without walking it each time.
                chars += row + (len(words) if isinstance(words, list) else 0)
                if chars > max_chars:
                    raise _too_large(path, "text", max_bytes)
                if not isinstance(words, list) or not all(map(isinstance, words, repeat(str))):
                    raise bad(f"{name}[{category!r}][{i}] is not a list of word strings")
                chars += sum(map(len, words))
                if chars > max_chars:
                    raise _too_large(path, "text", max_bytes)
    return obj[0], obj[1]


def _split_from_name(path: Path) -> str:
    for split in SPLITS:
        if f"_{split}_" in path.name:
            return split
    raise SentimentError(
        f"{path}: cannot tell the split from the name (no _train_ or _test_); give one"
    )


def read_dlstudio(
    path: Path, split: str | None = None, max_bytes: int = MAX_PICKLE_BYTES
) -> pa.Table:
    """Reviews of a DLStudio `sentiment_dataset_*` file: one gzip'd Python-2 pickle, loaded safely.

    Split from the name (`_train_`/`_test_`) unless given; words are joined with spaces.
    `max_bytes` bounds what loading may cost (MAX_PICKLE_BYTES says how).
    """
    split = split or _split_from_name(path)
    positive, negative = _check_dlstudio(_load_pickle(path, max_bytes), path, max_bytes)
    ids, texts, labels, categories = [], [], [], []
    for tag, label, reviews in (("pos", 1, positive), ("neg", 0, negative)):
        for category, items in reviews.items():
            for i, words in enumerate(items):
                ids.append(f"dlstudio/{split}/{category}/{tag}/{i}")
                texts.append(" ".join(words))
                labels.append(label)
                categories.append(category)
    return make_table(ids, texts, labels, categories, [split] * len(ids))


# --- fastText supervised format ---------------------------------------------------------

_FASTTEXT = re.compile(r"\s*__label__(\S*)\s*(.*?)\s*$")


def read_fasttext(path: Path) -> pa.Table:
    """`__label__pos text` lines; blank lines are skipped; ids are `<stem>/<line number>`."""
    ids, texts, labels = [], [], []
    # split("\n"), not splitlines(): the latter also breaks at \x0b, \x1c, … and shifts numbers.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        match = _FASTTEXT.match(line)
        if match is None:
            raise SentimentError(f"{path}: line {number}: no __label__ at the start")
        value, text = match.groups()
        if text.startswith("__label__"):
            raise SentimentError(f"{path}: line {number}: several labels; one is expected")
        try:
            labels.append(parse_label(value))
        except ValueError as exc:
            raise SentimentError(f"{path}: line {number}: {exc}") from None
        ids.append(f"{path.stem}/{number}")
        texts.append(text)
    return make_table(ids, texts, labels, [path.stem] * len(ids))


# --- Parquet / CSV / JSONL tables -------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """Column names in a Parquet/CSV/JSONL source; only text and label must exist."""

    text: str = setting("text", "Table sources: the text column.", option="--text-column")
    label: str = setting(
        "label", "Table sources: the label column (0/1 or neg/pos).", option="--label-column"
    )
    id: str | None = setting(
        None, "Table sources: a unique id column (default: file/row).", option="--id-column"
    )
    category: str | None = setting(
        None,
        "Table sources: a category column (default: the file name).",
        option="--category-column",
    )
    split: str | None = setting(
        None,
        "Table sources: a train/test column (default, and null values: by hash).",
        option="--split-column",
    )
    rating: str | None = setting(
        None, "Table sources: a star-rating column.", option="--rating-column"
    )
    group: str | None = setting(
        None,
        "Table sources: rows that must share a split (e.g. a product id): the hashed test "
        "split and training's validation carve keep each group on one side.",
        option="--group-column",
    )

    def named(self) -> list[str]:
        names = (self.text, self.label, self.id, self.category, self.split, self.rating, self.group)
        return [c for c in names if c]


def _read_arrow(path: Path, fmt: str, columns: Columns) -> pa.Table:
    try:
        if fmt == "parquet":
            dataset = ds.dataset(path, format="parquet")
            _require(path, columns, dataset.schema.names)
            return dataset.to_table(columns=list(dict.fromkeys(columns.named())))
        if fmt == "csv":
            # Text-like columns stay strings: inference would turn an id "007" into 7.
            text_like = (columns.text, columns.id, columns.category, columns.split)
            types = {c: pa.string() for c in text_like if c}
            # Only an empty cell is null (no text, no label); Arrow's default list would also
            # turn a review reading "NA" or "null" into a missing one.
            options = pcsv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True
            )
            return pcsv.read_csv(path, convert_options=options)
        return pjson.read_json(path)
    except (pa.ArrowException, OSError) as exc:
        raise SentimentError(f"{path}: cannot read as {fmt}: {one_line(exc)}") from None


def _require(path: Path, columns: Columns, names: list[str]) -> None:
    for column in columns.named():
        if column not in names:
            have = ", ".join(names) or "none"
            raise SentimentError(f"{path}: no column {column!r}; its columns are: {have}")


def read_tabular(path: Path, fmt: str, columns: Columns | None = None) -> pa.Table:
    """Rows of a Parquet file or folder, a CSV file or a JSON-lines file, by column names."""
    columns = columns or Columns()
    table = _read_arrow(path, fmt, columns)
    _require(path, columns, table.column_names)
    stem = path.stem if path.is_file() else path.name
    n = table.num_rows

    def values(name: str | None) -> list[Any]:
        return table[name].to_pylist() if name else [None] * n

    labels = [_cell(path, i, parse_label, v) for i, v in enumerate(values(columns.label))]
    ids = values(columns.id) if columns.id else [f"{stem}/{i}" for i in range(n)]
    for i, value in enumerate(ids):
        if value is None:
            raise SentimentError(f"{path}: row {i}: id column {columns.id!r} is empty")
    splits = [_cell(path, i, _parse_split, v) for i, v in enumerate(values(columns.split))]
    texts = [None if v is None else str(v) for v in values(columns.text)]
    categories = [stem if v is None else str(v) for v in values(columns.category)]
    ratings = [_cell(path, i, _parse_rating, v) for i, v in enumerate(values(columns.rating))]
    groups = [None if v is None or v == "" else str(v) for v in values(columns.group)]
    return make_table([str(v) for v in ids], texts, labels, categories, splits, ratings, groups)


def _parse_split(value: Any) -> str:
    if str(value).strip().lower() not in SPLITS:
        raise ValueError(f"split {value!r} is not train or test")
    return str(value).strip().lower()


def _parse_rating(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"rating {value!r} is not a number") from None


def _cell(path: Path, row: int, parse: Any, value: Any) -> Any:
    """`parse(value)`, with None passed through (labels excepted) and errors naming the row."""
    if value is None and parse is not parse_label:
        return None
    try:
        return parse(value)
    except (ValueError, TypeError) as exc:
        raise SentimentError(f"{path}: row {row}: {exc}") from None
