"""What a scoring run's output holds: which input rows go into which output file, the one
schema every file has, and what an incremental run keeps of the committed output.

    input files ─► units (whole row groups; small files gathered) ─► one output file each
    input schemas ─► one output schema (the inputs' own, plus the columns scoring adds)

A unit is what one read task reads and one scoring actor writes as one file: about
`rows_per_file` rows. A file of at least that many rows is cut into units of whole row
groups; smaller files are gathered, in order, into shared units. The manifest lists, for
each output file, which rows of which input it holds (`inputs`: path, first row, rows),
so a changed input is scored again alone: the shared files it was in are rewritten
without its rows, the other inputs' rows copied as they were.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from sentiment.config import SentimentError
from sentiment.inputs import InputFile
from sentiment.scoring import OUTPUT_SCHEMA

log = logging.getLogger(__name__)
GENERATED_ID = "row_id"


@dataclass(frozen=True)
class Segment:
    """Consecutive row groups of one input file inside a unit."""

    file: InputFile
    groups: tuple[int, ...]
    first_row: int  # position of the segment's first row in its file
    rows: int


@dataclass(frozen=True)
class Unit:
    """What one read task reads and one output file holds: segments of input files."""

    index: int
    segments: tuple[Segment, ...]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    @property
    def source(self) -> str:
        """Where the unit's rows come from, as its blocks carry it to the scoring actor
        (for error messages naming the file and row group of a row)."""
        at, parts = 0, []
        for s in self.segments:
            rows = [s.file.group_rows[g] for g in s.groups]
            parts.append({"uri": s.file.uri, "groups": list(s.groups), "rows": rows, "at": at})
            at += s.rows
        return json.dumps(parts)

    def pieces(self, first: int, rows: int) -> list[dict[str, Any]]:
        """The input rows that the unit's rows [first, first + rows) are, in order:
        [{"path": input, "first": its first row there, "rows": how many}]."""
        out, at = [], 0
        for s in self.segments:
            lo, hi = max(first, at), min(first + rows, at + s.rows)
            if lo < hi:
                out.append({"path": s.file.uri, "first": s.first_row + lo - at, "rows": hi - lo})
            at += s.rows
        return out


def plan_units(files: list[InputFile], rows_per_unit: int) -> list[Unit]:
    """Every input row in exactly one unit. A file of `rows_per_unit` rows or more gets
    units of its own (whole row groups, the last one smaller); smaller files share units
    of at most `rows_per_unit` rows, so many small inputs make few output files."""
    units: list[Unit] = []
    gathered: list[Segment] = []

    def close(segments: list[Segment]) -> None:
        if segments:
            units.append(Unit(len(units), tuple(segments)))

    for f in files:
        if f.rows == 0:
            continue  # nothing to read: listed in the manifest, in no file
        if f.rows < rows_per_unit:
            if gathered and sum(s.rows for s in gathered) + f.rows > rows_per_unit:
                close(gathered)
                gathered = []
            gathered.append(Segment(f, tuple(range(f.row_groups)), 0, f.rows))
            continue
        first, groups, rows = 0, [], 0
        for g, n in enumerate(f.group_rows):
            groups.append(g)
            rows += n
            if rows >= rows_per_unit:
                close([Segment(f, tuple(groups), first, rows)])
                first, groups, rows = first + rows, [], 0
        if rows:
            close([Segment(f, tuple(groups), first, rows)])
    close(gathered)
    return units


# --- one schema ---------------------------------------------------------------------------


def input_schema(files: list[InputFile], union: bool) -> pa.Schema:
    """The one schema of the inputs' columns: the first file's (names, order, types and
    metadata). Every other file must have the same columns and types (any order) unless
    `union`: then the union of all, with types promoted and missing columns as nulls. A
    difference is refused in one line naming two files and the columns that differ."""
    first = files[0]
    if union:
        try:
            merged = pa.unify_schemas([f.schema for f in files], promote_options="permissive")
            _refuse_text_made_binary(merged, files)
            return merged
        except (pa.ArrowException, TypeError):
            for other in files[1:]:
                try:
                    pa.unify_schemas([first.schema, other.schema], promote_options="permissive")
                except (pa.ArrowException, TypeError):
                    raise SentimentError(
                        f"{first.uri} and {other.uri} have conflicting columns: "
                        f"{schema_difference(first.schema, other.schema)}"
                    ) from None
            raise SentimentError(
                "input files have conflicting schemas: "
                f"{', '.join(f.uri for f in files[:3])}{', ...' if len(files) > 3 else ''}"
            ) from None
    for other in files[1:]:
        if difference := schema_difference(first.schema, other.schema):
            raise SentimentError(
                f"{first.uri} and {other.uri} have different schemas ({difference}); score "
                "them apart, or pass --union-schemas to write the union of their columns"
            )
    return first.schema


def _refuse_text_made_binary(merged: pa.Schema, files: list[InputFile]) -> None:
    """A union would type a column binary where some files have it as text: every row of
    those files would then be written as bytes (and the text column scored as such)."""
    for field in merged:
        if not (pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)):
            continue
        texts = [f for f in files if _is_text(f.schema, field.name)]
        has = [f for f in files if field.name in f.schema.names]
        raw = [f for f in has if not _is_text(f.schema, field.name)]
        if texts and raw:
            raise SentimentError(
                f"{texts[0].uri} and {raw[0].uri} have conflicting columns: column "
                f"{field.name!r} is {texts[0].schema.field(field.name).type} in the first and "
                f"{raw[0].schema.field(field.name).type} in the second; a union would make "
                "every row of it bytes: cast it to string in the second first"
            )


def _is_text(schema: pa.Schema, name: str) -> bool:
    if name not in schema.names:
        return False
    t = schema.field(name).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def schema_difference(a: pa.Schema, b: pa.Schema) -> str:
    """What differs between two schemas' columns (names and types; not order or
    metadata), as a phrase; "" when nothing does."""
    types_a = {f.name: f.type for f in a}
    types_b = {f.name: f.type for f in b}
    parts = [
        f"column {name!r} is {types_a[name]} in the first and {types_b[name]} in the second"
        for name in types_a
        if name in types_b and types_a[name] != types_b[name]
    ]
    if only := [n for n in types_a if n not in types_b]:
        parts.append(f"only the first has {', '.join(map(repr, only))}")
    if only := [n for n in types_b if n not in types_a]:
        parts.append(f"only the second has {', '.join(map(repr, only))}")
    return "; ".join(parts)


def output_schema(inputs: pa.Schema, add_id: bool) -> pa.Schema:
    """The inputs' schema (metadata kept), a generated row id if any, the scores."""
    schema = inputs.append(pa.field(GENERATED_ID, pa.string())) if add_id else inputs
    for field in OUTPUT_SCHEMA:
        schema = schema.append(field)
    return schema.with_metadata(inputs.metadata)


def committed_inputs_schema(schema: pa.Schema) -> pa.Schema:
    """The input part of a committed data file's schema (without what scoring added)."""
    added = {GENERATED_ID, *OUTPUT_SCHEMA.names}
    return pa.schema([f for f in schema if f.name not in added], metadata=schema.metadata)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table in the output's column order and types (absent columns as nulls, only
    where a union was asked for), with the output's metadata."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


# --- incremental runs ---------------------------------------------------------------------


@dataclass
class Plan:
    """What a run scores and what it keeps of the committed output."""

    todo: list[InputFile]  # input files to score
    kept_inputs: list[dict[str, Any]]  # manifest entries of inputs whose rows stay
    kept_files: list[dict[str, Any]]  # committed data files kept as they are
    carried: list[tuple[dict[str, Any], list[dict[str, Any]]]]  # (file, pieces it keeps)
    changes: dict[str, list[str]]  # changed_inputs, removed_inputs


def file_pieces(entry: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The input rows a committed data file holds, in order; None for files of the first
    versions, which mixed the rows of a run's inputs without saying where."""
    if "inputs" in entry:
        return entry["inputs"]
    if "input" in entry:  # one input per file, in no recorded order
        return [{"path": entry["input"], "first": None, "rows": entry["rows"]}]
    return None


def incremental_plan(files: list[InputFile], previous: dict[str, Any] | None) -> Plan:
    """Files still to score, what stays of the committed output, and the inputs that
    changed or disappeared since.

    An input changed when its size, modification time or footer digest differs from the
    manifest's: its rows are scored again. A committed file holding only kept inputs'
    rows stays; one holding only gone inputs' rows goes; one holding both is carried: it
    is rewritten with the kept inputs' rows only (not scored again). Files of the first
    versions, which mixed a run's inputs, go with every input of that run, scored again.
    """
    if previous is None:
        return Plan(files, [], [], [], {"changed_inputs": [], "removed_inputs": []})
    current = {f.uri: f for f in files}
    changed = [
        i["path"]
        for i in previous["inputs"]
        if i["path"] in current and _changed(i, current[i["path"]])
    ]
    removed = [i["path"] for i in previous["inputs"] if i["path"] not in current]
    for uri in changed:
        log.warning("%s changed since it was scored: its rows are scored again", uri)
    for uri in removed:
        log.warning("%s is no longer an input: its rows are dropped", uri)
    gone = set(changed + removed)
    runs_of_gone = {i["run_id"] for i in previous["inputs"] if i["path"] in gone}
    mixed_runs = {f["run_id"] for f in previous["files"] if file_pieces(f) is None} & runs_of_gone
    kept_inputs = [
        i for i in previous["inputs"] if i["path"] not in gone and i["run_id"] not in mixed_runs
    ]
    kept_files, carried = [], []
    for entry in previous["files"]:
        pieces = file_pieces(entry)
        if pieces is None:
            if entry["run_id"] not in mixed_runs:
                kept_files.append(entry)
            continue
        stay = [p for p in pieces if p["path"] not in gone]
        if len(stay) == len(pieces):
            kept_files.append(entry)
        elif stay:
            carried.append((entry, stay))
    kept = {i["path"] for i in kept_inputs}
    todo = [f for f in files if f.uri not in kept]
    return Plan(
        todo,
        kept_inputs,
        kept_files,
        carried,
        {"changed_inputs": changed, "removed_inputs": removed},
    )


def _changed(scored: dict[str, Any], now: InputFile) -> bool:
    """Whether an input differs from what was scored (manifests without the modification
    time or digest, from older versions, count as changed: scored again once)."""
    return (
        scored.get("size") != now.size
        or scored.get("mtime_ns") != now.mtime_ns
        or scored.get("fingerprint") != now.fingerprint
    )


def keep_rows(table: pa.Table, pieces: list[dict[str, Any]], stay: list[dict[str, Any]]):
    """The rows of a committed file's `table` that belong to the pieces in `stay`."""
    offsets, at = {}, 0
    for p in pieces:
        offsets[(p["path"], p["first"])] = at
        at += p["rows"]
    if at != table.num_rows:
        raise SentimentError(f"the manifest lists {at} rows for a file of {table.num_rows}")
    parts = [table.slice(offsets[(p["path"], p["first"])], p["rows"]) for p in stay]
    return pa.concat_tables(parts) if parts else table.slice(0, 0)
