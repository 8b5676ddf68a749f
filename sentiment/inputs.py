"""Finding and checking the Parquet files a scoring run reads, before any work starts.

Ray Data would fill a missing column with nulls and can drop unreadable blocks,
so every file's footer and schema are read first: a missing or mistyped text
column, a corrupt, truncated or empty file fails the run naming the file (or,
with `--on-bad-file skip`, is recorded in the manifest and left out).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentiment.config import SentimentError
from sentiment.storage import filesystem

GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    """One Parquet file to score, as read from its footer."""

    uri: str  # as it appears in manifests and generated ids (absolute path or URI)
    path: str  # inside its filesystem
    fs: Any  # pyarrow filesystem (picklable, travels to read tasks)
    size: int
    rows: int
    row_groups: int
    schema: pa.Schema
    mtime_ns: int | None = None
    fingerprint: str = ""  # digest of the footer: row groups, offsets, statistics
    group_rows: tuple[int, ...] = ()  # rows in each row group


@dataclass(frozen=True)
class Found:
    """A file named by the inputs, before its footer is read."""

    fs: Any
    path: str
    uri: str
    size: int
    mtime_ns: int | None
    key: Any = None  # what identifies the file itself: (device, inode) on a local disk


def resolve(
    inputs: list[str], exclude: str | None = None
) -> tuple[list[Found], list[dict[str, str]]]:
    """Every Parquet file named by files, dirs, globs or URIs, each once; and what was left
    out on the way (`ignored`: path and reason).

    Directories are walked recursively; names starting with `_` or `.` are skipped
    (staging areas, markers), and so is anything under `exclude` (the output). On a
    local disk links to directories inside a directory input are not followed (a
    link to an ancestor would list the same files without end), and a file reached
    twice (a link, a second name) is read once, under its own path if that is one of them.
    """
    found: dict[str, Found] = {}
    ignored: list[dict[str, str]] = []
    for item in inputs:
        fs, path = filesystem(item)
        scheme = item.split("://", 1)[0] + "://" if "://" in item else ""
        if isinstance(fs, pafs.LocalFileSystem):
            matches = _expand_local(path, ignored)
        else:
            matches = _expand(fs, path)
        if not matches:
            raise SentimentError(f"{item}: no such file, directory or matching Parquet files")
        for p, size, mtime_ns, key in matches:
            uri = f"{scheme}{p}" if scheme and scheme != "file://" else p
            if exclude and (uri == exclude or uri.startswith(exclude.rstrip("/") + "/")):
                continue
            found.setdefault(uri, Found(fs, p, uri, size, mtime_ns, key))
    names: dict[Any, list[str]] = {}
    for uri, f in found.items():
        names.setdefault(f.key if f.key is not None else uri, []).append(uri)
    files: list[Found] = []
    for same in names.values():
        # the file's own path (no link on the way) if it is among the names, else the first
        keep = same[0]
        if len(same) > 1:
            keep = min(same, key=lambda u: (os.path.realpath(found[u].path) != found[u].path, u))
        files.append(found[keep])
        ignored += [
            {"path": u, "reason": f"same file as {keep}"} for u in sorted(same) if u != keep
        ]
    return sorted(files, key=lambda f: f.uri), ignored


def _expand_local(path: str, ignored: list[dict[str, str]]) -> list[tuple]:
    """(path, size, mtime_ns, (dev, inode)) of the local files a path or glob names."""
    if GLOB_CHARS & set(path):
        # pathlib's `**` never descends into linked directories (glob.glob's does, without end)
        cut = path.rfind("/", 0, min(path.find(c) for c in GLOB_CHARS if c in path))
        base, pattern = path[:cut] or "/", path[cut + 1 :]
        try:
            candidates = [
                str(p)
                for p in Path(base).glob(pattern)
                if not any(_hidden(part) for part in p.relative_to(base).parts)
            ]
        except ValueError as exc:  # e.g. `**` inside a name
            raise SentimentError(f"{path}: {exc}") from None
        return [_local_entry(p) for p in sorted(candidates) if os.path.isfile(p)]
    if os.path.isfile(path):
        return [_local_entry(path)]
    if not os.path.isdir(path):
        return []
    out = []
    stack = [path]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise SentimentError(f"{directory}: cannot list directory ({exc.strerror})") from None
        for e in entries:
            if _hidden(e.name):
                continue
            if e.is_symlink() and e.is_dir():
                ignored.append({"path": e.path, "reason": "link to a directory, not followed"})
            elif e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.name.endswith(".parquet"):
                if e.is_file():
                    out.append(_local_entry(e.path))
                elif e.is_symlink():
                    ignored.append({"path": e.path, "reason": "broken link"})
    return sorted(out)


def _local_entry(path: str) -> tuple[str, int, int, tuple[int, int]]:
    st = os.stat(path)  # through file links: the file itself
    return path, st.st_size, st.st_mtime_ns, (st.st_dev, st.st_ino)


def _expand(fs, path: str) -> list[tuple]:
    """(path, size, mtime_ns, None) of the files a path or glob names on an object store."""
    if GLOB_CHARS & set(path):
        parent = path[: path.rfind("/", 0, min(path.find(c) for c in GLOB_CHARS if c in path))]
        selector = pafs.FileSelector(parent, recursive=True, allow_not_found=True)
        return [
            (i.path, i.size, i.mtime_ns, None)
            for i in fs.get_file_info(selector)
            if i.type == pafs.FileType.File
            and fnmatch.fnmatch(i.path, path)
            and not _hidden(i.base_name)
        ]
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [(info.path, info.size, info.mtime_ns, None)]
    if info.type == pafs.FileType.Directory:
        selector = pafs.FileSelector(path, recursive=True)
        return sorted(
            (
                (i.path, i.size, i.mtime_ns, None)
                for i in fs.get_file_info(selector)
                if i.type == pafs.FileType.File
                and i.base_name.endswith(".parquet")
                and not any(_hidden(part) for part in i.path[len(path) :].split("/"))
            ),
            key=lambda m: m[0],
        )
    return []


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def check_output_apart(output: str, inputs: list[str]) -> None:
    """Refuse an output that is an input, lies inside one, or holds one: its own files would
    be read as input by the next run (or the input deleted by a commit)."""
    out = _real(output)
    for item in inputs:
        where = _real(item)
        if GLOB_CHARS & set(item):
            cut = where.rfind("/", 0, min(where.find(c) for c in GLOB_CHARS if c in where))
            base, pattern = where[:cut] or "/", where[cut + 1 :]
            if fnmatch.fnmatch(out, where):
                reason = "is one of the inputs"
            elif out == base:  # a commit deletes the Parquet files it does not list there
                reason = "is the folder of the inputs"
            elif _within(base, out):
                reason = "contains the inputs"
            elif "/" in pattern and _within(out, base):  # the pattern descends into folders
                reason = "lies inside the inputs"
            else:
                continue
        elif out == where:
            reason = "is the input"
        elif _within(out, where):
            reason = "lies inside the input"
        elif _within(where, out):
            reason = "contains the input"
        else:
            continue
        raise SentimentError(f"output {output} {reason} {item}; choose an output elsewhere")


def _real(location: str) -> str:
    """A location compared by where it really is: local paths with links resolved."""
    if "://" in location and not location.startswith("file://"):
        return location.rstrip("/")
    path = location.removeprefix("file://")
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _within(inner: str, outer: str) -> bool:
    return inner.startswith(outer.rstrip("/") + "/")


def inspect(found: Found, content: bool = False) -> InputFile:
    """Read one file's footer; a file that cannot be read raises SentimentError naming it.
    `content`: its fingerprint is a SHA-256 of all its bytes, not of its footer alone."""
    uri, size = found.uri, found.size
    if size == 0:
        raise SentimentError(f"{uri}: empty file (0 bytes)")
    try:
        uri.encode("utf-8")
    except UnicodeEncodeError:  # it could not be named in the output's ids and manifest
        raise SentimentError(f"{uri!r}: file name is not valid UTF-8") from None
    try:
        with found.fs.open_input_file(found.path) as f:
            fingerprint = _footer_digest(f, size)
            if content:
                fingerprint = _content_digest(f)
            meta = pq.ParquetFile(f).metadata
            schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise SentimentError(f"{uri}: not a readable Parquet file ({exc})") from None
    group_rows = _checked_row_counts(uri, meta)
    return InputFile(
        uri,
        found.path,
        found.fs,
        size,
        meta.num_rows,
        meta.num_row_groups,
        schema,
        found.mtime_ns,
        fingerprint,
        group_rows,
    )


def _checked_row_counts(uri: str, meta: pq.FileMetaData) -> tuple[int, ...]:
    """Each row group's row count, held to what its column chunks store: a footer can claim
    10¹² rows in a few bytes, and a reader believing it allocates for them (a 4.8 KB file
    took 19 GB). Every column chunk stores a value (or a null) for each row at least,
    so a row group claiming more rows than a chunk's values is refused."""
    rows = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.num_values < group.num_rows:
                raise SentimentError(
                    f"{uri}: row group {g} claims {group.num_rows:,} rows but its column "
                    f"{chunk.path_in_schema!r} holds {chunk.num_values:,} values; refusing "
                    "a corrupt or hostile footer"
                )
        rows.append(group.num_rows)
    if sum(rows) != meta.num_rows:
        raise SentimentError(
            f"{uri}: the footer claims {meta.num_rows:,} rows but its row groups hold "
            f"{sum(rows):,}; refusing a corrupt or hostile footer"
        )
    return tuple(rows)


def _content_digest(f) -> str:
    """SHA-256 of every byte of a file, read in 1 MiB pieces; the file left at its start."""
    digest = hashlib.sha256()
    while piece := f.read(1 << 20):
        digest.update(piece)
    f.seek(0)
    return "sha256:" + digest.hexdigest()


def _footer_digest(f, size: int) -> str:
    """SHA-256 of a Parquet file's footer: it holds every row group's offsets, sizes and
    statistics, so a rewrite of the same size almost surely changes it (one small read)."""
    if size < 12:
        raise ValueError(f"{size} bytes is too short for Parquet")
    f.seek(size - 8)
    tail = f.read(8)
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or length > size - 12:
        raise ValueError("no Parquet footer at the end of the file")
    f.seek(size - 8 - length)
    footer = f.read(length)
    f.seek(0)
    return hashlib.sha256(footer + tail).hexdigest()[:32]


TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary(), pa.null())


def check_columns(f: InputFile, text_column: str, id_column: str) -> None:
    """The text column exists with a string-like type; a named id column exists."""
    names = f.schema.names
    if text_column not in names:
        raise SentimentError(
            f"{f.uri}: no text column {text_column!r} (columns: {', '.join(names)}); "
            "use --text-column"
        )
    kind = f.schema.field(text_column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (kind in TEXT_TYPES or pa.types.is_string_view(kind)):
        raise SentimentError(f"{f.uri}: text column {text_column!r} has type {kind}, not a string")
    if id_column and id_column not in names:
        raise SentimentError(f"{f.uri}: no id column {id_column!r} (columns: {', '.join(names)})")


def check_inputs(
    inputs: list[str],
    text_column: str,
    id_column: str,
    on_bad_file: str,
    exclude: str | None,
    content: bool = False,
) -> tuple[list[InputFile], list[dict[str, str]], list[dict[str, str]]]:
    """Every file checked: (good files, skipped files with reasons, paths ignored while
    listing, see `resolve`). Raises on the first bad file unless `on_bad_file == "skip"`.
    `content`: fingerprints digest each file's bytes (see `inspect`)."""
    good: list[InputFile] = []
    skipped: list[dict[str, str]] = []
    found, ignored = resolve(inputs, exclude)
    for item in found:
        try:
            f = inspect(item, content)
            check_columns(f, text_column, id_column)
        except SentimentError as exc:
            if on_bad_file != "skip":
                raise
            skipped.append({"path": item.uri, "reason": str(exc).removeprefix(f"{item.uri}: ")})
            continue
        good.append(f)
    return good, skipped, ignored
