"""One reader per review source format, each giving an Arrow table in the canonical schema.

A reader returns the columns of `SCHEMA`, with `split` null where the source has
none (`datasets.prepare` then assigns a hashed split). Every problem with the
input raises `SentimentError` naming the file and, where there is one, the row.
"""

from __future__ import annotations

import gzip
import html
import io
import logging
import pickle
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
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
# A regex rather than an XML parser: the authors' original files have no root element and
# raw "&" in text, so they are not XML; the same regex reads the well-formed copies too.
_REVIEW = re.compile(r"<review>(.*?)</review>", re.DOTALL)
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


def amazon_reviews(path: Path) -> list[dict[str, str]]:
    """The fields of every `<review>` in a `.review` file (either form), unescaped and stripped."""
    blocks = _REVIEW.findall(_read_text(path))
    return [{name: _unescape(value) for name, value in _FIELD.findall(b)} for b in blocks]


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
    reviews = amazon_reviews(path)
    if not reviews:
        raise SentimentError(f"{path}: no <review> elements found")
    ids, texts, ratings, groups = [], [], [], []
    for i, fields in enumerate(reviews):
        ids.append(f"amazon/{category}/{path.stem}/{i}")
        texts.append(amazon_text(fields))
        ratings.append(_rating(fields.get("rating", ""), path, i))
        groups.append(f"amazon/{category}/{asin}" if (asin := fields.get("asin")) else None)
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

MAX_PICKLE_BYTES = 2 * 1024**3
_CHUNK = 1 << 20
# Out-of-band buffers never occur in these files, and BYTEARRAY8 allocates the length it
# claims before reading a byte: a 20-byte pickle could ask for terabytes.
_REFUSED_OPCODES = {pickle.BYTEARRAY8[0], pickle.NEXT_BUFFER[0], pickle.READONLY_BUFFER[0]}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _TooLarge(Exception):
    pass


class _Opcodes(dict):
    def __missing__(self, key: int) -> Any:
        raise pickle.UnpicklingError(f"opcode {bytes([key])!r} is not accepted")


class _DataOnlyUnpickler(pickle._Unpickler):
    """Refuses every global, so no class can be built and no callable (os.system) can run.

    What is left are the objects pickle builds from opcodes alone: dicts, lists, tuples,
    sets, str (Python 2 byte strings become str through encoding="latin1"), bytes, numbers,
    bools and None; `_check_dlstudio` then accepts only the dataset's dicts, lists and str.
    The pure-Python unpickler, not the C one, because its memo is a dict: in the C one a
    forged memo index (LONG_BINPUT 2**31) makes it allocate gigabytes. It is ~3x slower,
    a few seconds for the largest DLStudio file.
    """

    dispatch = _Opcodes(
        (op, load) for op, load in pickle._Unpickler.dispatch.items() if op not in _REFUSED_OPCODES
    )

    def find_class(self, module: str, name: str) -> Any:
        raise _RefusedGlobal(f"{module}.{name}")


def _decompress(path: Path, max_bytes: int) -> bytes:
    """The whole gzip stream, read in chunks and refused past `max_bytes` (a gzip bomb)."""
    chunks, total = [], 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise _TooLarge
            chunks.append(chunk)
    return b"".join(chunks)


def _load_pickle(path: Path, max_bytes: int) -> Any:
    try:
        data = _decompress(path, max_bytes)
        return _DataOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise SentimentError(
            f"{path}: refused: the pickle asks for the global {exc}; only plain data "
            "(dicts, lists, tuples, strings) is loaded"
        ) from None
    except _TooLarge:
        raise SentimentError(
            f"{path}: refused: decompresses to more than {max_bytes:,} bytes (a gzip bomb?)"
        ) from None
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


def _check_dlstudio(obj: Any, path: Path) -> tuple[dict, dict]:
    """(positive_reviews, negative_reviews) after checking the whole structure's types."""

    def bad(what: str) -> SentimentError:
        return SentimentError(f"{path}: not a DLStudio sentiment dataset: {what}")

    if not isinstance(obj, tuple) or len(obj) != 3:
        size = f" of length {len(obj)}" if isinstance(obj, (tuple, list, dict)) else ""
        raise bad(f"expected a tuple (positive, negative, vocab), got a {type(obj).__name__}{size}")
    if not isinstance(obj[2], list):
        raise bad(f"vocab is a {type(obj[2]).__name__}, expected a list")
    for name, reviews in (("positive", obj[0]), ("negative", obj[1])):
        if not isinstance(reviews, dict):
            raise bad(f"{name} reviews are a {type(reviews).__name__}, expected a dict")
        for category, items in reviews.items():
            if not isinstance(category, str) or not isinstance(items, list):
                raise bad(f"{name}[{category!r}] is not a category name → list of reviews")
            for i, words in enumerate(items):
                if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                    raise bad(f"{name}[{category!r}][{i}] is not a list of word strings")
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
    """
    split = split or _split_from_name(path)
    positive, negative = _check_dlstudio(_load_pickle(path, max_bytes), path)
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
