"""Readers and `prepare`: labels, splits, every source format, and refusal of bad input."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiment.config import SentimentError
from sentiment.datasets import (
    SCHEMA,
    Columns,
    detect_source_format,
    hashed_split,
    prepare,
    read_prepared,
    split_keys,
)
from sentiment.readers import parse_label, read_amazon, read_dlstudio

PANG_LEE = "pang_lee_polarity.cor"


def pang_lee() -> Path:
    from gensim.test.utils import datapath

    return Path(datapath(PANG_LEE))


def read_dataset(path: Path) -> list[dict]:
    table = pq.read_table(path)
    assert table.schema.equals(SCHEMA)
    return table.to_pylist()


# --- labels and the hashed split --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (1, 1),
        (0, 0),
        (True, 1),
        (False, 0),
        ("1", 1),
        ("0", 0),
        ("pos", 1),
        ("POSITIVE", 1),
        (" neg ", 0),
        ("Negative", 0),
    ],
)
def test_parse_label(value: object, label: int) -> None:
    assert parse_label(value) == label


@pytest.mark.parametrize("value", [2, -1, "2", "yes", "", None, 1.0, "positive!"])
def test_parse_label_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="not one of"):
        parse_label(value)


@pytest.mark.parametrize(
    ("review_id", "split"),
    [
        ("amazon/books/positive/0", "train"),
        ("pang_lee_polarity/1", "train"),
        ("a", "train"),
        ("e", "test"),
        ("f", "test"),
    ],
)
def test_hashed_split_is_pinned(review_id: str, split: str) -> None:
    assert hashed_split(review_id, 0.2) == split


def test_hashed_split_fraction_and_bounds() -> None:
    ids = [f"r/{i}" for i in range(20_000)]
    share = sum(hashed_split(i, 0.2) == "test" for i in ids) / len(ids)
    assert 0.19 < share < 0.21
    assert {hashed_split(i, 0.0) for i in ids[:500]} == {"train"}
    assert {hashed_split(i, 1.0) for i in ids[:500]} == {"test"}


# --- Amazon multi-domain ----------------------------------------------------------------

REVIEWS = [  # (title, text, rating) as a reader should return them
    ("AT&T phone", "Tom & Jerry <3 Barnes&notice", 5.0),
    ("Broke", "after a day", 4.0),
    ("Third", "one", 5.0),
]


def _field(name: str, value: str) -> str:
    return f"<{name}>\n{value}\n</{name}>\n"


def write_review_file(path: Path, original_form: bool) -> Path:
    """The well-formed copy (root, escaped &) or the authors' form (no root, raw &)."""
    blocks = []
    for title, text, rating in REVIEWS:
        if original_form:  # raw "&" where it is not an entity, "&amp;" kept as in the source
            text = text.replace("Tom & Jerry", "Tom &amp; Jerry")
        else:
            title, text = title.replace("&", "&amp;"), text.replace("&", "&amp;")
            text = text.replace("<3", "&lt;3")
        fields = [_field("unique_id", "x:y"), _field("asin", f"B00{rating:.0f}")]
        fields += [_field("rating", str(rating))]
        fields += [_field("title", title), _field("review_text", text)]
        blocks.append("<review>\n" + "".join(fields) + "</review>\n")
    body = "".join(blocks)
    if not original_form:
        body = f'<?xml version="1.0" encoding="UTF-8"?>\n<reviews>\n{body}</reviews>\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize("original_form", [False, True])
def test_amazon_reader_both_forms(tmp_path: Path, original_form: bool) -> None:
    path = write_review_file(tmp_path / "kitchen" / "positive.review", original_form)
    rows = read_amazon(path, test_from=2).to_pylist()
    assert [r["text"] for r in rows] == [f"{t} {x}" for t, x, _ in REVIEWS]
    assert [r["rating"] for r in rows] == [r for *_, r in REVIEWS]
    assert [r["split"] for r in rows] == ["train", "train", "test"]
    assert rows[0]["review_id"] == "amazon/kitchen/positive/0"
    assert {(r["label"], r["category"]) for r in rows} == {(1, "kitchen")}
    assert [r["group_id"] for r in rows] == [f"amazon/kitchen/B00{r:.0f}" for *_, r in REVIEWS]


def test_amazon_sources_root_folder_and_file(tmp_path: Path) -> None:
    root = tmp_path / "amz"
    for category in ("books", "dvd"):
        for name in ("positive", "negative"):
            write_review_file(root / category / f"{name}.review", original_form=True)
    (root / "dvd" / "unlabeled.review").write_text("<review></review>")  # not labelled: ignored
    counts = {}
    for source in (root, root / "dvd", root / "dvd" / "negative.review"):
        out = tmp_path / f"out-{len(counts)}"
        counts[source.name] = prepare([source], out, test_from=2).rows
    assert counts == {"amz": 12, "dvd": 6, "negative.review": 3}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("unlabeled.review", "<review></review>", "positive.review or negative.review"),
        ("positive.review", "<reviews></reviews>", "no <review> elements"),
        ("positive.review", "<review><rating>five</rating></review>", "rating 'five'"),
    ],
)
def test_amazon_bad_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / "books" / name
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(SentimentError, match=message) as err:
        prepare([path], tmp_path / "out")
    assert str(path) in str(err.value)


@pytest.mark.real_data
def test_prepare_real_amazon(amazon_dir: Path, tmp_path: Path) -> None:
    report = prepare([amazon_dir], tmp_path / "ds")
    assert (report.rows, report.split_rows("train"), report.split_rows("test")) == (
        8000,
        6400,
        1600,
    )
    assert report.dropped_empty == 0
    assert {g.category for g in report.groups} == {"books", "dvd", "electronics", "kitchen"}
    for g in report.groups:  # balanced per split and category
        half = 800 if g.split == "train" else 200
        assert (g.n_positive, g.n_negative) == (half, half)
    rows = read_dataset(tmp_path / "ds")
    assert len({r["review_id"] for r in rows}) == 8000
    # group_id is the product: the canonical test split shares few products with train
    products = {s: {r["group_id"] for r in rows if r["split"] == s} for s in ("train", "test")}
    assert len(products["train"]) == 5051 and len(products["test"]) == 1263
    assert len(products["train"] & products["test"]) == 12
    assert report.group_ids == (5051, 1263, 12)
    assert all(r["text"].strip() and r["rating"] in (1.0, 2.0, 4.0, 5.0) for r in rows)
    saved = json.loads((tmp_path / "ds" / "_prepare_report.json").read_text())
    assert saved["rows"] == 8000 and len(saved["groups"]) == 8


# --- DLStudio pickles -------------------------------------------------------------------

POS = {"books": [["a", "café", "great"], ["naïve", "fun"]], "kitchen_&_housewares": [["ok"]]}
NEG = {"books": [["bad"]], "kitchen_&_housewares": [["broke", "après", "one", "day"]]}


def _py2_pickle(obj: object) -> bytes:
    """A protocol-2 pickle as Python 2 writes it: byte strings (SHORT_BINSTRING) in Latin-1."""

    def dump(o: object) -> bytes:
        if isinstance(o, str):
            data = o.encode("latin-1")
            return b"U" + bytes([len(data)]) + data
        if isinstance(o, tuple):
            return b"(" + b"".join(map(dump, o)) + b"t"
        if isinstance(o, list):
            return b"](" + b"".join(map(dump, o)) + b"e"
        if isinstance(o, dict):
            return b"}(" + b"".join(dump(k) + dump(v) for k, v in o.items()) + b"u"
        raise TypeError(o)

    return b"\x80\x02" + dump(obj) + b"."


def write_dlstudio(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload))
    return path


@pytest.mark.parametrize("style", ["py3", "py2"])
def test_dlstudio_round_trip(tmp_path: Path, style: str) -> None:
    data = (POS, NEG, ["a", "café", "bad"])
    payload = pickle.dumps(data, protocol=2) if style == "py3" else _py2_pickle(data)
    assert pickle.loads(payload, encoding="latin1") == data  # the test's own encoder is right
    src = write_dlstudio(tmp_path / "sentiment_dataset_train_3.tar.gz", payload)
    report = prepare([src], tmp_path / "ds")
    rows = {r["review_id"]: r for r in read_dataset(tmp_path / "ds")}
    assert report.rows == len(rows) == 5
    assert rows["dlstudio/train/books/pos/0"]["text"] == "a café great"
    assert rows["dlstudio/train/books/pos/1"]["text"] == "naïve fun"
    neg = rows["dlstudio/train/kitchen_&_housewares/neg/0"]
    assert (neg["label"], neg["category"], neg["split"]) == (0, "kitchen_&_housewares", "train")
    assert neg["text"] == "broke après one day" and neg["rating"] is None
    assert {r["split"] for r in rows.values()} == {"train"}


def test_dlstudio_split_from_name_or_option(tmp_path: Path) -> None:
    payload = pickle.dumps((POS, NEG, []), protocol=2)
    test_file = write_dlstudio(tmp_path / "sentiment_dataset_test_3.tar.gz", payload)
    assert set(read_dlstudio(test_file)["split"].to_pylist()) == {"test"}
    odd = write_dlstudio(tmp_path / "reviews.tar.gz", payload)
    with pytest.raises(SentimentError, match="cannot tell the split"):
        read_dlstudio(odd)
    assert set(read_dlstudio(odd, split="train")["split"].to_pylist()) == {"train"}


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


# Protocol 2 writes Python 3's builtins under their Python 2 name, __builtin__.
REFUSALS = [(_System, "posix.system"), (_Eval, r"(builtins|__builtin__)\.eval")]


@pytest.mark.parametrize(("cls", "refused"), REFUSALS)
def test_malicious_pickle_is_refused_and_never_runs(
    tmp_path: Path, cls: type, refused: str
) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps((POS, {"books": [cls(marker)]}, []), protocol=2)
    src = write_dlstudio(tmp_path / "sentiment_dataset_train_3.tar.gz", payload)
    with pytest.raises(SentimentError, match=refused) as err:
        prepare([src], tmp_path / "ds")
    assert str(src) in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "ds").exists()


GOOD = pickle.dumps((POS, NEG, []), protocol=2)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (gzip.compress(GOOD[: len(GOOD) // 2]), "malformed pickle|truncated"),
        (gzip.compress(GOOD)[:-12], "truncated or corrupt"),
        (gzip.compress(b"not a pickle at all"), "malformed pickle"),
        (gzip.compress(pickle.dumps({"books": []}, protocol=2)), "expected a tuple"),
        (gzip.compress(pickle.dumps((POS, NEG), protocol=2)), "expected a tuple"),
        (
            gzip.compress(pickle.dumps((POS, {"books": [["a", 3]]}, []))),
            r"negative\['books'\]\[0\]",
        ),
        (gzip.compress(pickle.dumps((POS, [], []), protocol=2)), "expected a dict"),
        (gzip.compress(pickle.dumps((POS, NEG, "vocab"), protocol=2)), "vocab"),
        # a forged memo index: the C unpickler would allocate 32 GiB for its memo table
        (gzip.compress(b"\x80\x02]r\xff\xff\xff\x7f."), "expected a tuple"),
        # BYTEARRAY8 claiming a terabyte
        (gzip.compress(b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b"."), "not accepted"),
        (gzip.compress(GOOD)[:-4] + b"\0\0\0\0", "corrupt gzip"),
        (b"PK\x03\x04 a zip file, not gzip", "not a gzip file"),
        (b"", "not a gzip file|truncated"),
    ],
)
def test_malformed_dlstudio_is_refused(tmp_path: Path, raw: bytes, message: str) -> None:
    src = tmp_path / "sentiment_dataset_train_3.tar.gz"
    src.write_bytes(raw)
    with pytest.raises(SentimentError, match=message) as err:
        prepare([src], tmp_path / "ds")
    assert str(src) in str(err.value) and "\n" not in str(err.value)


def test_gzip_bomb_is_refused(tmp_path: Path) -> None:
    # A valid dataset with a megabyte-long word: a kilobyte compressed, large unpacked.
    payload = pickle.dumps((POS, NEG, ["x" * (1 << 20)]), protocol=2)
    bomb = write_dlstudio(tmp_path / "sentiment_dataset_train_3.tar.gz", payload)
    assert bomb.stat().st_size < 4096
    with pytest.raises(SentimentError, match="more than 4,096 bytes"):
        prepare([bomb], tmp_path / "ds", max_pickle_bytes=4096)
    big_string = struct.pack("<I", 1 << 20)  # BINUNICODE claiming a megabyte
    write_dlstudio(bomb, b"\x80\x02X" + big_string + b"x" * (1 << 20) + b".")
    with pytest.raises(SentimentError, match="gzip bomb"):
        read_dlstudio(bomb, max_bytes=10_000)


# --- fastText -----------------------------------------------------------------------------


def test_fasttext_pang_lee(tmp_path: Path) -> None:
    first = prepare([pang_lee()], tmp_path / "a")
    again = prepare([pang_lee()], tmp_path / "b")
    rows = read_dataset(tmp_path / "a")
    assert first.rows == 200 and sum(r["label"] for r in rows) == 100
    assert rows[0]["review_id"] == "pang_lee_polarity/1"
    assert rows[0]["text"] == "simplistic , silly and tedious ."
    assert first.groups == again.groups
    assert [r["split"] for r in rows] == [r["split"] for r in read_dataset(tmp_path / "b")]
    assert 0.1 < first.split_rows("test") / 200 < 0.3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("__label__pos good\n__label__maybe hmm\n", "line 2: label 'maybe'"),
        ("__label__pos good\n\nno label here\n", "line 3: no __label__"),
        ("__label__pos __label__neg both\n", "line 1: several labels"),
    ],
)
def test_fasttext_bad_lines(tmp_path: Path, content: str, message: str) -> None:
    src = tmp_path / "reviews.txt"
    src.write_text(content)
    with pytest.raises(SentimentError, match=message):
        prepare([src], tmp_path / "ds", fmt="fasttext")


# --- Parquet / CSV / JSONL ----------------------------------------------------------------

CUSTOM = Columns(
    text="body", label="sentiment", id="rid", category="cat", split="part", rating="stars"
)
RECORDS = [
    {"rid": "r1", "body": "lovely", "sentiment": "pos", "cat": "toys", "part": "train", "stars": 5},
    {
        "rid": "r2",
        "body": "awful",
        "sentiment": "NEGATIVE",
        "cat": "toys",
        "part": "test",
        "stars": 1,
    },
    {"rid": "r3", "body": "  ", "sentiment": "1", "cat": "tools", "part": "train", "stars": 4},
    {"rid": "r4", "body": "fine", "sentiment": "0", "cat": None, "part": None, "stars": None},
]


def write_table(path: Path, records: list[dict]) -> Path:
    table = pa.Table.from_pylist(records)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_tables_with_custom_columns(tmp_path: Path, suffix: str) -> None:
    src = write_table(tmp_path / f"shop{suffix}", RECORDS)
    report = prepare([src], tmp_path / "ds", columns=CUSTOM)
    rows = {r["review_id"]: r for r in read_dataset(tmp_path / "ds")}
    assert set(rows) == {"r1", "r2", "r4"}  # r3 has blank text
    assert (report.dropped_empty, report.dropped_examples) == (1, ("r3",))
    assert rows["r1"] == {
        "review_id": "r1",
        "text": "lovely",
        "label": 1,
        "category": "toys",
        "split": "train",
        "rating": 5.0,
        "group_id": None,
    }
    assert (rows["r2"]["label"], rows["r2"]["split"]) == (0, "test")
    assert rows["r4"]["category"] == "shop"
    assert rows["r4"]["split"] == hashed_split("r4") and rows["r4"]["rating"] is None


def test_default_columns_parquet_folder(tmp_path: Path) -> None:
    folder = tmp_path / "reviews"
    folder.mkdir()
    write_table(folder / "a.parquet", [{"text": "good", "label": 1}, {"text": "bad", "label": 0}])
    write_table(folder / "b.parquet", [{"text": "meh", "label": True}])
    assert detect_source_format(folder) == "parquet"
    prepare([folder], tmp_path / "ds", split="test")
    rows = read_dataset(tmp_path / "ds")
    assert [r["review_id"] for r in rows] == ["reviews/0", "reviews/1", "reviews/2"]
    assert {(r["category"], r["split"]) for r in rows} == {("reviews", "test")}


def test_group_column_keeps_each_group_on_one_side_of_the_hashed_split(tmp_path: Path) -> None:
    # 40 products with 10 reviews each, and 100 reviews with no product (null or "")
    records = [
        {"text": f"review {i}", "label": i % 2, "product": f"p{i // 10}" if i < 400 else None}
        for i in range(500)
    ]
    records[450]["product"] = ""
    src = write_table(tmp_path / "shop.parquet", records)
    report = prepare([src], tmp_path / "ds", columns=Columns(group="product"), test_fraction=0.3)
    rows = read_dataset(tmp_path / "ds")
    by_product: dict[str, set[str]] = {}
    for r in rows:
        if r["group_id"] is not None:
            by_product.setdefault(r["group_id"], set()).add(r["split"])
    assert len(by_product) == 40 and all(len(s) == 1 for s in by_product.values())
    assert [r["split"] for r in rows] == [
        hashed_split(r["group_id"] or r["review_id"], 0.3) for r in rows
    ]
    sides = {r["split"] for r in rows if r["group_id"] is None}  # 100 reviews of their own
    assert sides == {"train", "test"} and rows[450]["group_id"] is None
    assert {next(iter(s)) for s in by_product.values()} == {"train", "test"}
    assert sum(report.group_ids[:2]) == 40 and report.group_ids[2] == 0


def test_a_dataset_prepared_before_group_id_reads_it_as_nulls(tmp_path: Path) -> None:
    prepare([pang_lee()], tmp_path / "ds")
    old = tmp_path / "old"
    old.mkdir()
    pq.write_table(read_prepared(tmp_path / "ds").drop_columns(["group_id"]), old / "part.parquet")
    table = read_prepared(old)
    assert table.schema.equals(SCHEMA) and table["group_id"].null_count == 200
    some = read_prepared(old, columns=["group_id", "text"], split="test")
    assert some.column_names == ["group_id", "text"] and some.num_rows > 0
    assert split_keys(table) == table["review_id"].to_pylist()  # each review its own group


@pytest.mark.parametrize(
    ("records", "columns", "message"),
    [
        ([{"body": "x", "label": 1}], Columns(), r"no column 'text'; its columns are: body, label"),
        ([{"text": "x", "y": 1}], Columns(), "no column 'label'"),
        ([{"text": "x", "label": 1}, {"text": "y", "label": 7}], Columns(), "row 1: label 7"),
        ([{"text": "x", "label": "maybe"}], Columns(), "row 0: label 'maybe'"),
        ([{"text": "x", "label": 1, "s": "dev"}], Columns(split="s"), "row 0: split 'dev'"),
        ([{"text": "x", "label": 1, "r": "lots"}], Columns(rating="r"), "rating 'lots'"),
        ([{"text": "x", "label": 1, "i": None}], Columns(id="i"), "row 0: id column 'i' is empty"),
        ([{"text": "x", "label": 1}], Columns(group="product"), "no column 'product'"),
    ],
)
def test_bad_tables(tmp_path: Path, records: list[dict], columns: Columns, message: str) -> None:
    src = write_table(tmp_path / "t.jsonl", records)
    with pytest.raises(SentimentError, match=message) as err:
        prepare([src], tmp_path / "ds", columns=columns)
    assert str(src) in str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.parquet", b"PAR1 this is not parquet", "cannot read as parquet"),
        ("empty.csv", b"text,label\n", "no reviews"),
        ("empty.jsonl", b"", "no reviews|cannot read"),
        ("notes.txt", b"just some words\n", "unrecognised format"),
    ],
)
def test_unreadable_sources(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    with pytest.raises(SentimentError, match=message) as err:
        prepare([src], tmp_path / "ds")
    assert str(src) in str(err.value) and "\n" not in str(err.value)


# --- prepare: combining, duplicates, output handling ------------------------------------


def test_combined_sources_and_duplicates(tmp_path: Path) -> None:
    a = write_table(tmp_path / "a.csv", [{"text": "good", "label": 1}])
    b = write_table(tmp_path / "b.csv", [{"text": "bad", "label": 0}])
    report = prepare([a, b, pang_lee()], tmp_path / "ds")
    assert report.rows == 202
    assert {g.category for g in report.groups} == {"a", "b", "pang_lee_polarity"}
    with pytest.raises(SentimentError, match=r"duplicate review_id 'a/0'") as err:
        prepare([a, b, a], tmp_path / "ds2")
    assert f"{a} row 0 and {a} row 0" in str(err.value)


def test_output_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    src = write_table(tmp_path / "a.csv", [{"text": "good", "label": 1}])
    out = tmp_path / "ds"
    prepare([src], out)
    with pytest.raises(SentimentError, match="exists and is not empty; pass --overwrite"):
        prepare([src], out)
    write_table(src, [{"text": "good", "label": 1}, {"text": "new", "label": 0}])
    assert prepare([src], out, overwrite=True).rows == 2
    assert len(read_dataset(out)) == 2
    stranger = tmp_path / "home"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(SentimentError, match="not a prepared dataset"):
        prepare([src], stranger, overwrite=True)
    assert (stranger / "notes.txt").exists()


def test_failed_prepare_leaves_nothing(tmp_path: Path) -> None:
    good = write_table(tmp_path / "a.csv", [{"text": "good", "label": 1}])
    bad = write_table(tmp_path / "b.csv", [{"text": "bad", "label": 5}])
    with pytest.raises(SentimentError, match="row 0: label 5"):
        prepare([good, bad], tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_failed_write_keeps_the_previous_dataset(tmp_path: Path, monkeypatch) -> None:
    import sentiment.datasets as datasets

    src = write_table(
        tmp_path / "a.csv", [{"text": "good", "label": 1}, {"text": "ok", "label": 1}]
    )
    out = tmp_path / "ds"
    prepare([src], out)
    before = sorted(p.name for p in tmp_path.iterdir())
    calls = []
    real_write = pq.write_table

    def failing_write(table: pa.Table, where: Path) -> None:
        calls.append(where)
        if len(calls) == 2:  # the second part file: the disk is full
            raise OSError(28, "No space left on device")
        real_write(table, where)

    monkeypatch.setattr(datasets, "ROWS_PER_FILE", 1)
    monkeypatch.setattr(datasets.pq, "write_table", failing_write)
    with pytest.raises(SentimentError, match=r"cannot write the dataset: .*No space left"):
        prepare([src], out, overwrite=True, split="test")
    monkeypatch.undo()
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial folder left
    assert {r["split"] for r in read_dataset(out)} == {"train"}  # the old dataset, intact


def test_only_empty_text_is_an_error(tmp_path: Path) -> None:
    src = write_table(tmp_path / "a.jsonl", [{"text": " ", "label": 1}, {"text": None, "label": 0}])
    with pytest.raises(SentimentError, match="no review with text"):
        prepare([src], tmp_path / "ds")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("positive.review", "amazon"),
        ("sentiment_dataset_train_40.tar.gz", "dlstudio"),
        ("x.parquet", "parquet"),
        ("x.CSV", "csv"),
        ("x.jsonl", "jsonl"),
        ("x.json", "jsonl"),
        ("x.cor", "fasttext"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, fmt: str) -> None:
    path = tmp_path / name
    path.write_text("__label__pos fine\n")
    assert detect_source_format(path) == fmt


def test_read_prepared(tmp_path: Path) -> None:
    prepare([pang_lee()], tmp_path / "ds")
    full = read_prepared(tmp_path / "ds")
    assert full.schema.equals(SCHEMA) and full.num_rows == 200
    test = read_prepared(str(tmp_path / "ds"), columns=["text", "split"], split="test")
    assert test.column_names == ["text", "split"] and set(test["split"].to_pylist()) == {"test"}
    assert test.num_rows == full["split"].to_pylist().count("test")
    with pytest.raises(SentimentError, match="cannot read the prepared dataset"):
        read_prepared(tmp_path / "nothing")
    write_table(tmp_path / "other.parquet", [{"text": "x"}])
    with pytest.raises(SentimentError, match=r"not a prepared dataset \(no column 'review_id'"):
        read_prepared(tmp_path / "other.parquet")
