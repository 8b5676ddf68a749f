"""Finding and checking the Parquet files a scoring run reads, before any work starts.

Ray Data would fill a missing column with nulls and can drop unreadable blocks,
so every file's footer and schema are read first: a missing or mistyped text
column, a corrupt, truncated or empty file fails the run naming the file (or,
with `--on-bad-file skip`, is recorded in the manifest and left out).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentiment.artifacts import filesystem
from sentiment.config import SentimentError

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
    group_rows: tuple[int, ...] = ()  # rows in each row group


def resolve(inputs: list[str], exclude: str | None = None) -> list[tuple[Any, str, str, int]]:
    """(fs, path, uri, size) of every Parquet file named by files, dirs, globs or URIs.

    Directories are walked recursively; names starting with `_` or `.` are skipped
    (staging areas, markers), and so is anything under `exclude` (the output).
    """
    found: dict[str, tuple[Any, str, str, int]] = {}
    for item in inputs:
        fs, path = filesystem(item)
        scheme = item.split("://", 1)[0] + "://" if "://" in item else ""
        matches = _expand(fs, path, bool(scheme))
        if not matches:
            raise SentimentError(f"{item}: no such file, directory or matching Parquet files")
        for p, size in matches:
            uri = f"{scheme}{p}" if scheme and scheme != "file://" else p
            if exclude and (uri == exclude or uri.startswith(exclude.rstrip("/") + "/")):
                continue
            found.setdefault(uri, (fs, p, uri, size))
    return [found[k] for k in sorted(found)]


def _expand(fs, path: str, remote: bool) -> list[tuple[str, int]]:
    if GLOB_CHARS & set(path):
        if not remote:
            return [
                (p, os.path.getsize(p))
                for p in sorted(glob.glob(path, recursive=True))
                if os.path.isfile(p) and not _hidden(os.path.basename(p))
            ]
        parent = path[: path.rfind("/", 0, min(path.find(c) for c in GLOB_CHARS if c in path))]
        selector = pafs.FileSelector(parent, recursive=True, allow_not_found=True)
        return [
            (i.path, i.size)
            for i in fs.get_file_info(selector)
            if i.type == pafs.FileType.File
            and fnmatch.fnmatch(i.path, path)
            and not _hidden(i.base_name)
        ]
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [(info.path, info.size)]
    if info.type == pafs.FileType.Directory:
        selector = pafs.FileSelector(path, recursive=True)
        return sorted(
            (i.path, i.size)
            for i in fs.get_file_info(selector)
            if i.type == pafs.FileType.File
            and i.base_name.endswith(".parquet")
            and not any(_hidden(part) for part in i.path[len(path) :].split("/"))
        )
    return []


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def inspect(fs, path: str, uri: str, size: int) -> InputFile:
    """Read one file's footer; a file that cannot be read raises SentimentError naming it."""
    if size == 0:
        raise SentimentError(f"{uri}: empty file (0 bytes)")
    try:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
            schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise SentimentError(f"{uri}: not a readable Parquet file ({exc})") from None
    groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return InputFile(uri, path, fs, size, meta.num_rows, meta.num_row_groups, schema, groups)


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
    inputs: list[str], text_column: str, id_column: str, on_bad_file: str, exclude: str | None
) -> tuple[list[InputFile], list[dict[str, str]]]:
    """Every file checked: (good files, skipped files with reasons). Raises on the first bad
    file unless `on_bad_file == "skip"`."""
    good: list[InputFile] = []
    skipped: list[dict[str, str]] = []
    for fs, path, uri, size in resolve(inputs, exclude):
        try:
            f = inspect(fs, path, uri, size)
            check_columns(f, text_column, id_column)
        except SentimentError as exc:
            if on_bad_file != "skip":
                raise
            skipped.append({"path": uri, "reason": str(exc).removeprefix(f"{uri}: ")})
            continue
        good.append(f)
    return good, skipped


def unified_schema(files: list[InputFile]) -> pa.Schema:
    """One schema for every file (a column missing from a file reads as nulls there)."""
    try:
        return pa.unify_schemas([f.schema for f in files], promote_options="permissive")
    except (pa.ArrowException, TypeError) as exc:
        raise SentimentError(f"input files have conflicting schemas: {exc}") from None
