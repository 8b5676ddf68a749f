"""Prepare review sources into one canonical Parquet dataset (`sentiment-jobs prepare`).

Sources in any format of `sentiment.readers` are read, checked for duplicate
review ids, given a train/test split where they have none (a hash of the group_id,
else of the review id: the same on every run and machine), cleared of reviews with
empty text, and written with the fixed `SCHEMA` to a dataset directory with a report:
on a local disk atomically (written aside, renamed into place); on an object store
(s3://, which has no rename) in place, the report last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sentiment import archives, download
from sentiment.config import SentimentError
from sentiment.readers import (
    MAX_PICKLE_BYTES,
    SCHEMA,
    SPLITS,
    Columns,
    amazon_files,
    one_line,
    read_amazon,
    read_dlstudio,
    read_fasttext,
    read_tabular,
)
from sentiment.storage import filesystem, storage_error

__all__ = [
    "FORMATS",
    "SCHEMA",
    "Columns",
    "PrepareReport",
    "dataset_fingerprint",
    "detect_source_format",
    "hashed_split",
    "prepare",
    "read_prepared",
    "split_keys",
]

log = logging.getLogger(__name__)

FORMATS = ("amazon", "dlstudio", "fasttext", "parquet", "csv", "jsonl")
REPORT_NAME = "_prepare_report.json"  # "_" prefix: Arrow and Ray skip it when reading the dir
UNLABELED_REPORT = "_unlabeled_report.json"  # marks an unlabeled collection `prepare` wrote
ROWS_PER_FILE = 250_000  # bounds file size and gives Ray Data several files to read at once
_ARCHIVES = {".gz", ".tgz", ".tar"}  # suffixes of an archive of `.review` files
_EXAMPLES = 5  # dropped review ids listed in the report
_ADDED_LATER = {"group_id"}  # columns an older prepared dataset may lack
_SUFFIXES = {
    ".review": "amazon",
    ".gz": "dlstudio",
    ".tgz": "dlstudio",
    ".parquet": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}


def hashed_split(key: str, test_fraction: float = 0.2) -> str:
    """Train or test by a hash of the key alone (group_id, else review_id; `split_keys`),
    so the same on every run and machine.

    About `test_fraction` of all keys fall in test; a given key's split never changes.
    """
    return "test" if hash_fraction(key) < test_fraction else "train"


def hash_fraction(key: str) -> float:
    """A deterministic number in [0, 1) from a string: the same on every machine and run."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def detect_source_format(path: Path) -> str:
    """The source format of `path`, from its suffix, its folder layout, or a `__label__` line."""
    if path.is_dir():
        if any(path.glob("*.review")) or any(path.glob("*/*.review")):
            return "amazon"
        if any(path.rglob("*.parquet")):
            return "parquet"
    elif path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    else:
        with path.open("rb") as f:
            if f.read(4096).lstrip().startswith(b"__label__"):
                return "fasttext"
    raise SentimentError(
        f"{path}: unrecognised format (expected .review files, a DLStudio .tar.gz, .parquet, "
        ".csv, .jsonl or fastText __label__ lines); name it with --format"
    )


@dataclass(frozen=True)
class GroupCounts:
    """Rows of one (split, category) and their label balance."""

    split: str
    category: str
    n: int
    n_positive: int
    n_negative: int


@dataclass(frozen=True)
class PrepareReport:
    """What `prepare` wrote: rows per split and category, and the rows it left out."""

    output: str
    sources: tuple[str, ...]
    rows: int
    groups: tuple[GroupCounts, ...]
    dropped_empty: int  # reviews whose text was empty, blank or null
    dropped_examples: tuple[str, ...]  # the first few of their review_ids
    # distinct group_ids (products) in train, in test, and in both: reviews of one product
    # on both sides make the test split easier than new products would be
    group_ids: tuple[int, int, int] = (0, 0, 0)
    # Reviews without a label (the Multi-Domain archive's unlabeled.review files), written as
    # a Parquet collection with a `text` column beside the dataset: extra text for word2vec.
    unlabeled_output: str = ""
    unlabeled_rows: int = 0
    unlabeled_left_out: int = 0  # no text, or the text of a labelled review

    def split_rows(self, split: str) -> int:
        return sum(g.n for g in self.groups if g.split == split)


def prepare(
    sources: Sequence[str | Path],
    output: str | Path,
    *,
    fmt: str = "auto",
    columns: Columns | None = None,
    split: str | None = None,
    test_fraction: float = 0.2,
    test_from: int = 800,
    overwrite: bool = False,
    max_pickle_bytes: int = MAX_PICKLE_BYTES,
    unlabeled_output: str | Path | None = None,
    progress: download.Progress | None = None,
) -> PrepareReport:
    """Read `sources` and write one canonical dataset directory at `output`; return the report.

    `split` forces every row into that split; `test_from` is the Amazon canonical split (the
    review at position i of a file is test if i >= test_from); other sources without a split
    get `hashed_split(group_id or review_id, test_fraction)`.

    A source may be the Multi-Domain Sentiment Dataset's archive (`domain_sentiment_data.tar.gz`)
    or its URL (`download.dataset_url`), fetched once into the cache with `progress` called as
    it arrives: it is unpacked safely, checked by content and read as the unpacked folder would
    be. Its unlabeled reviews go to `unlabeled_output` (default `<output>.unlabeled`).
    """
    if not sources:
        raise SentimentError("no sources given")
    if fmt != "auto" and fmt not in FORMATS:
        raise SentimentError(f"unknown format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")
    if split is not None and split not in SPLITS:
        raise SentimentError(f"split must be train or test, got {split!r}")
    if not 0.0 <= test_fraction <= 1.0:
        raise SentimentError(f"test fraction must be in [0, 1], got {test_fraction}")
    out = _output(output)
    _check_output(out, overwrite)
    if isinstance(out, str):
        unlabeled_out = _output(unlabeled_output) if unlabeled_output else f"{out}.unlabeled"
    else:
        base = out if out.name not in ("", "..") else out.resolve()  # "." and ".." have none
        unlabeled_out = _output(unlabeled_output or base.with_name(f"{base.name}.unlabeled"))
    if any(download.is_url(s) for s in sources):  # before a download that would be wasted
        _check_output(unlabeled_out, overwrite, UNLABELED_REPORT)
    options = {"columns": columns, "split": split, "test_from": test_from, "max": max_pickle_bytes}
    options["progress"] = progress
    read = [_read_source(s, fmt, options) for s in sources]
    tables = [table for table, _ in read]
    archived = [got for _, got in read if got is not None]
    _check_unique([str(s) for s in sources], tables)
    table = _assign_split(pa.concat_tables(tables), split, test_fraction)
    table, dropped = _drop_empty(table)
    if table.num_rows == 0:
        raise SentimentError("no review with text in any source; nothing to write")
    report = PrepareReport(
        output=str(out),
        sources=tuple(str(s) for s in sources),
        rows=table.num_rows,
        groups=_group_counts(table),
        group_ids=_group_id_counts(table),
        dropped_empty=len(dropped),
        dropped_examples=tuple(dropped[:_EXAMPLES]),
    )
    extra = pa.concat_tables([a.unlabeled for a in archived]) if archived else None
    if extra is not None and extra.num_rows:
        _check_output(unlabeled_out, overwrite, UNLABELED_REPORT)
        report = replace(
            report,
            unlabeled_output=str(unlabeled_out),
            unlabeled_rows=extra.num_rows,
            unlabeled_left_out=sum(a.unlabeled_left_out for a in archived),
        )
    _write(table, out, REPORT_NAME, report)
    if report.unlabeled_rows:
        _write(extra, unlabeled_out, UNLABELED_REPORT, report)
    log.info("wrote %d reviews to %s", table.num_rows, out)
    return report


def read_prepared(
    path: str | Path, columns: Sequence[str] | None = None, split: str | None = None
) -> pa.Table:
    """A dataset written by `prepare` (local path or URI), optionally some columns and one split."""
    try:
        # Discovery skips "_" and "." names: the report and any unfinished sibling stay out.
        dataset = _open_dataset(path)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    wanted = list(columns or SCHEMA.names)
    # Datasets prepared before `group_id` existed read it as nulls: each review its own group.
    added = [c for c in wanted if c in _ADDED_LATER and c not in dataset.schema.names]
    missing = [c for c in wanted if c not in dataset.schema.names and c not in added]
    if missing:
        raise SentimentError(
            f"{path}: not a prepared dataset (no column {missing[0]!r}); run sentiment-jobs prepare"
        )
    where = pc.field("split") == split if split else None
    try:
        table = dataset.to_table(columns=[c for c in wanted if c not in added], filter=where)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    for name in added:
        field = SCHEMA.field(name)
        table = table.add_column(wanted.index(name), field, pa.nulls(table.num_rows, field.type))
    return table


def split_keys(table: pa.Table) -> list[str]:
    """What a split hashes for each row: its group_id, or its review_id where that is null.

    Reviews of one product then fall on one side together, so a held-out part measures
    unseen products, as the Amazon test split does (hardly any of its reviews share a
    product with the train split; a carve hashed by review would share many).
    """
    ids = table["review_id"].to_pylist()
    if "group_id" not in table.column_names:
        return ids
    groups = table["group_id"].to_pylist()
    return [g if g is not None else i for g, i in zip(groups, ids, strict=True)]


def dataset_fingerprint(path: str | Path) -> str:
    """A digest of a prepared dataset's files (names, sizes, modification times): it
    changes when the dataset is prepared again, so derived results can be cached by it."""
    try:
        dataset = _open_dataset(path)
        infos = dataset.filesystem.get_file_info(sorted(dataset.files))
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    digest = hashlib.sha256()
    for info in infos:
        digest.update(f"{info.path}\0{info.size}\0{info.mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_source(
    source: str | Path, fmt: str, options: dict
) -> tuple[pa.Table, archives.AmazonArchive | None]:
    """A source's reviews, and the whole archive's contents where it is the Multi-Domain one."""
    if download.is_url(source):
        if fmt not in ("auto", "amazon"):
            raise SentimentError(f"{source}: a URL must be the Multi-Domain archive, not {fmt}")
        return _read_url(str(source), options)
    path = Path(source)
    if not path.exists():
        raise SentimentError(f"{path}: no such file or directory")
    if (
        fmt in ("auto", "amazon")
        and path.suffix.lower() in _ARCHIVES
        and archives.is_tar_archive(path)
    ):
        got = archives.read_amazon_archive(
            path, download.cache_dir(), test_from=options["test_from"]
        )
        log.info("read %d reviews from the archive %s", got.labelled.num_rows, path)
        return got.labelled, got
    try:
        fmt = detect_source_format(path) if fmt == "auto" else fmt
        if fmt == "amazon":
            parts = [read_amazon(f, options["test_from"]) for f in amazon_files(path)]
            table = pa.concat_tables(parts)
        elif fmt == "dlstudio":
            table = read_dlstudio(path, options["split"], options["max"])
        elif fmt == "fasttext":
            table = read_fasttext(path)
        else:
            table = read_tabular(path, fmt, options["columns"])
    except OSError as exc:
        raise SentimentError(f"{path}: cannot read: {exc.strerror or one_line(exc)}") from None
    if table.num_rows == 0:
        raise SentimentError(f"{path}: no reviews in this {fmt} source")
    log.info("read %d reviews from %s (%s)", table.num_rows, path, fmt)
    return table, None


def _read_url(url: str, options: dict) -> tuple[pa.Table, archives.AmazonArchive]:
    with download.fetched(url, progress=options["progress"]) as archive:
        try:
            got = archives.read_amazon_archive(
                archive, download.cache_dir(), test_from=options["test_from"]
            )
        except SentimentError as exc:  # it names the temporary file: name the URL instead
            raise SentimentError(str(exc).replace(str(archive), url)) from None
    log.info("read %d reviews from %s", got.labelled.num_rows, url)
    return got.labelled, got


def _check_unique(names: list[str], tables: list[pa.Table]) -> None:
    seen: dict[str, tuple[int, int]] = {}  # review_id -> (source index, row)
    for k, table in enumerate(tables):
        for row, review_id in enumerate(table["review_id"].to_pylist()):
            first = seen.setdefault(review_id, (k, row))
            if first != (k, row):
                again = " (one source given twice?)" if first[1] == row else ""
                raise SentimentError(
                    f"duplicate review_id {review_id!r}: {names[first[0]]} row {first[1]} and "
                    f"{names[k]} row {row}{again}"
                )


def _assign_split(table: pa.Table, split: str | None, test_fraction: float) -> pa.Table:
    if split is not None:
        splits = [split] * table.num_rows
    else:
        keys = split_keys(table)
        given = table["split"].to_pylist()
        splits = [s or hashed_split(k, test_fraction) for s, k in zip(given, keys, strict=True)]
    index = SCHEMA.get_field_index("split")
    return table.set_column(index, SCHEMA.field("split"), pa.array(splits, pa.string()))


def _drop_empty(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """Rows with text → kept; ids of rows whose text is null or only whitespace."""
    keep = pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(table["text"]), ""), False)
    dropped = table.filter(pc.invert(keep))["review_id"].to_pylist()
    if dropped:
        log.warning("left out %d reviews with empty text, e.g. %s", len(dropped), dropped[0])
    return table.filter(keep), dropped


def _group_id_counts(table: pa.Table) -> tuple[int, int, int]:
    sides: dict[str, set[str]] = {"train": set(), "test": set()}
    for group, split in zip(table["group_id"].to_pylist(), table["split"].to_pylist(), strict=True):
        if group is not None:
            sides[split].add(group)
    return len(sides["train"]), len(sides["test"]), len(sides["train"] & sides["test"])


def _group_counts(table: pa.Table) -> tuple[GroupCounts, ...]:
    grouped = table.group_by(["split", "category"]).aggregate(
        [("label", "count"), ("label", "sum")]
    )
    rows = grouped.to_pylist()
    rows.sort(key=lambda r: (SPLITS.index(r["split"]), r["category"]))
    return tuple(
        GroupCounts(
            r["split"],
            r["category"],
            r["label_count"],
            r["label_sum"],
            r["label_count"] - r["label_sum"],
        )
        for r in rows
    )


def _open_dataset(path: str | Path) -> ds.Dataset:
    if "://" in str(path):
        filesystem(str(path))  # a missing bucket, an unreachable endpoint: one error naming it
    return ds.dataset(str(path), format="parquet")


def _unreadable(path: str | Path, exc: BaseException) -> SentimentError:
    return storage_error(exc, str(path)) or SentimentError(
        f"{path}: cannot read the prepared dataset: {one_line(exc)}"
    )


def _output(path: str | Path) -> Path | str:
    """A local output as a Path; an object store's (s3://, gs://) as its URI."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return text.rstrip("/")
    return Path(text.removeprefix("file://"))


def _check_output(out: Path | str, overwrite: bool, marker: str = REPORT_NAME) -> None:
    if isinstance(out, str):
        _check_output_uri(out, overwrite, marker)
        return
    if out.exists() and not out.is_dir():
        raise SentimentError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SentimentError(f"{out}: exists and is not empty; pass --overwrite to replace it")
        # --overwrite replaces what prepare wrote, never an arbitrary folder given by mistake.
        if not (out / marker).is_file():
            what = "a prepared dataset" if marker == REPORT_NAME else "prepare's unlabeled reviews"
            raise SentimentError(f"{out}: not {what} (no {marker}); not replacing")


def _check_output_uri(uri: str, overwrite: bool, marker: str) -> None:
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    if fs.get_file_info(root).type == pafs.FileType.File:
        raise SentimentError(f"{uri}: exists and is not a directory")
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))}
    if names and not overwrite:
        raise SentimentError(f"{uri}: exists and is not empty; pass --overwrite to replace it")
    if names and marker not in names:
        what = "a prepared dataset" if marker == REPORT_NAME else "prepare's unlabeled reviews"
        raise SentimentError(f"{uri}: not {what} (no {marker}); not replacing")


def _write(table: pa.Table, out: Path | str, report_name: str, report: PrepareReport) -> None:
    """Write into a hidden sibling folder, then rename it into place: never a half dataset.
    On an object store, which has no rename, see `_write_uri`."""
    if isinstance(out, str):
        _write_uri(table, out, report_name, report)
        return
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        for k, start in enumerate(range(0, table.num_rows, ROWS_PER_FILE)):
            pq.write_table(table.slice(start, ROWS_PER_FILE), tmp / f"part-{k:05d}.parquet")
        (tmp / report_name).write_text(json.dumps(asdict(report), indent=2) + "\n")
        if out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            if old.exists():  # put the previous dataset back
                old.rename(out)
            raise
    except OSError as exc:
        raise SentimentError(f"{out}: cannot write the dataset: {one_line(exc)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _write_uri(table: pa.Table, uri: str, report_name: str, report: PrepareReport) -> None:
    """Write a dataset in place on an object store: the report goes first, the old files
    next, then the new ones, the report last. A dataset with its report is complete; one
    being replaced reads as a mix, so do not replace a dataset that something is reading."""
    fs, root = filesystem(uri)
    try:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(f"{root}/{report_name}")
        fs.delete_dir_contents(root, missing_dir_ok=True)  # the old dataset: no rename on S3
        for k, start in enumerate(range(0, table.num_rows, ROWS_PER_FILE)):
            part = f"{root}/part-{k:05d}.parquet"
            pq.write_table(table.slice(start, ROWS_PER_FILE), part, filesystem=fs)
        with fs.open_output_stream(f"{root}/{report_name}") as f:
            f.write((json.dumps(asdict(report), indent=2) + "\n").encode())
    except OSError as exc:
        raise storage_error(exc, uri) or SentimentError(
            f"{uri}: cannot write the dataset: {one_line(exc)}"
        ) from None
