"""The Ray Data side of `sentiment-jobs score`: read units, score and write in actors.

    units (about `rows_per_file` rows of whole row groups; see sentiment.layout)
        ─► one read task per unit, one block each (exact row positions, for generated ids)
        ─► map_batches(ScorerActor): score a block, write it as one Parquet file to
           staging (named `*.staged`, so no reader's glob sees it), return a receipt
           (unit, first row, rows, file)
        ─► the driver collects receipts: a unit is done when its receipts tile its rows

Actors write their own output, so no scored block waits in an object store that can die
with its node. Actors are not restarted (Ray would wait forever to restart one whose
node is gone and whose place the survivors hold): a lost node fails the attempt at once,
and the driver runs the pipeline again over the units that have no complete receipts.
A unit's files from an attempt that did not finish are listed by no receipt and are
deleted with the staging area, so no row is lost or written twice.
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sentiment.config import SentimentError
from sentiment.layout import GENERATED_ID, Unit, conform

log = logging.getLogger(__name__)
# Columns a read block carries to its actor, dropped before scoring.
UNIT, POS, SOURCE = "__sentiment_unit", "__sentiment_pos", "__sentiment_source"
STAGED = ".staged"  # a staged data file's suffix
RECEIPT = pa.schema(
    [("unit", pa.int64()), ("first", pa.int64()), ("rows", pa.int64()), ("path", pa.string())]
)


def make_datasource(units: list[Unit], schema: pa.Schema, add_id: bool):
    """A Ray Datasource with one read task per unit, each yielding the unit's rows once as
    one block, in the inputs' one `schema`, with the unit, each row's position in it, and
    where its rows came from."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    data_schema = schema.append(pa.field(GENERATED_ID, pa.string())) if add_id else schema
    out_schema = (
        data_schema.append(pa.field(UNIT, pa.int64()))
        .append(pa.field(POS, pa.int64()))
        .append(pa.field(SOURCE, pa.dictionary(pa.int32(), pa.string())))
    )

    def read(unit: Unit):
        parts = []
        for segment in unit.segments:
            f = segment.file
            with f.fs.open_input_file(f.path) as handle:
                pf = pq.ParquetFile(handle)
                for g in segment.groups:
                    try:
                        part = conform(pf.read_row_group(g), schema)
                    except (OSError, pa.ArrowException) as exc:
                        raise SentimentError(f"{f.uri}: cannot read row group {g}: {exc}") from None
                    if add_id:
                        first = segment.first_row + sum(f.group_rows[segment.groups[0] : g])
                        ids = [f"{f.uri}:{first + i}" for i in range(part.num_rows)]
                        part = part.append_column(GENERATED_ID, pa.array(ids, pa.string()))
                    parts.append(part)
        table = pa.concat_tables(parts)
        n = table.num_rows
        source = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), [unit.source])
        table = table.append_column(UNIT, pa.array([unit.index] * n, pa.int64()))
        table = table.append_column(POS, pa.array(range(n), pa.int64()))
        yield table.append_column(SOURCE, source)

    class ReviewUnits(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return (
                sum(s.file.size * s.rows // max(1, s.file.rows) for u in units for s in u.segments)
                * 3
            )

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [
                ReadTask(
                    lambda u=u: read(u),
                    BlockMetadata(
                        num_rows=u.rows,
                        size_bytes=None,
                        exec_stats=None,
                        input_files=[s.file.uri for s in u.segments],
                    ),
                    out_schema,
                )
                for u in units
            ]

    return ReviewUnits()


class ScorerActor:
    """Scores a block and writes it to staging as one Parquet file in the output's
    `schema`; returns its receipt.

    `model_dir`: the model's directory, or its URI on an object store: nodes share no
    disk, so each actor then fetches its own copy, checked to hold `model_id`. Reports
    once which node and device it got."""

    def __init__(self, *, model_dir, text_column, max_tokens, batch_size, pool_rows, threads,
                 output, staging, schema=None, model_id=None, registry=None):  # fmt: skip
        import os

        import ray

        from sentiment.artifacts import fetch_model, filesystem, is_remote
        from sentiment.scoring import Scorer

        self.scorer = Scorer(
            fetch_model(model_dir, model_id) if is_remote(model_dir) else model_dir,
            text_column=text_column,
            max_tokens=max_tokens,
            batch_size=batch_size,
            threads=threads,
        )
        self.pool_rows, self.staging, self.schema = pool_rows, staging, schema
        self.fs, _ = filesystem(output)
        self.registry = registry
        if registry is not None:
            info = {
                "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id()[:12],
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "device": str(self.scorer.device),
            }
            ray.get(registry.add.remote(info, ray.get_runtime_context().current_actor))

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Score and write each run of consecutive rows of one unit in the batch (a batch
        is one block, or on GPUs, where Ray Data needs a batch size, a few)."""
        receipts = pa.concat_tables(
            [RECEIPT.empty_table(), *(self._write(batch.slice(s, n)) for s, n in _runs(batch))]
        )
        if self.registry is not None:
            # Also with the registry, which outlives the attempt: a block's receipt still
            # on its way to the driver when a node is lost would otherwise be lost with
            # it, and its unit scored again.
            import ray

            ray.get(self.registry.receipt.remote(receipts.to_pylist()))
        return receipts

    def _write(self, block: pa.Table) -> pa.Table:
        unit, first = block[UNIT][0].as_py(), block[POS][0].as_py()
        source = json.loads(block[SOURCE][0].as_py())
        data = block.drop_columns([UNIT, POS, SOURCE])
        # Not `*.parquet` until committed: a reader's glob over the output never sees it.
        path = f"{self.staging}/part-{unit:07d}-{first:010d}-{uuid.uuid4().hex[:8]}{STAGED}"
        try:
            # The driver made the staging area; it is not made again here, so a write
            # finishing after a stopped run discarded it fails instead of leaving a file.
            # Written in place: only a receipt makes a staged file part of the output, so a
            # file cut off mid-write is never committed (it goes with the staging area).
            with self.fs.open_output_stream(path) as stream:
                writer = None
                # Length-sorting pools of `pool_rows` (the Scorer pads within a pool).
                for start in range(0, data.num_rows, self.pool_rows):
                    scored = self._score(data.slice(start, self.pool_rows), source, first + start)
                    if self.schema is not None:
                        scored = conform(scored, self.schema)
                    writer = writer or pq.ParquetWriter(stream, scored.schema)
                    writer.write_table(scored)
                writer.close()
        except (OSError, pa.ArrowException) as exc:
            raise SentimentError(
                f"{source[0]['uri']}: writing scores to {path} failed: {one_line(exc)}"
            ) from None
        return pa.table(
            {"unit": [unit], "first": [first], "rows": [block.num_rows], "path": [path]},
            schema=RECEIPT,
        )

    def _score(self, rows: pa.Table, source: list[dict[str, Any]], first: int) -> pa.Table:
        """The Scorer over `rows`, which start at position `first` of their unit. Any
        error becomes one line naming the input file and the row group of the row that
        caused it (each row group of the rows is scored alone until one fails)."""
        try:
            return self.scorer(rows)
        except Exception as exc:
            where = "; ".join(f"{s['uri']}: row groups {s['groups']}" for s in source[:3])
            for g, a, b in _group_spans(source, first, first + rows.num_rows):
                try:
                    self.scorer(rows.slice(a - first, b - a))
                except Exception:
                    where = g
                    break
            raise SentimentError(f"{where}: scoring failed: {one_line(exc)}") from None


def _group_spans(source: list[dict[str, Any]], lo: int, hi: int):
    """("<file>: row group <g>", start, end) of each row group's rows within the unit's
    rows [lo, hi), in order."""
    for segment in source:
        at = segment["at"]
        for g, n in zip(segment["groups"], segment["rows"], strict=True):
            a, b = max(at, lo), min(at + n, hi)
            if a < b:
                yield f"{segment['uri']}: row group {g}", a, b
            at += n


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:500]


def _runs(batch: pa.Table) -> list[tuple[int, int]]:
    """(start, length) of the stretches of a batch that are consecutive rows of one unit."""
    units, pos = batch[UNIT].to_numpy(), batch[POS].to_numpy()
    breaks = np.flatnonzero((np.diff(units) != 0) | (np.diff(pos) != 1)) + 1
    edges = [0, *breaks.tolist(), batch.num_rows]
    return [(a, b - a) for a, b in itertools.pairwise(edges) if b > a]


class Registry:
    """A tiny actor collecting what each scoring actor ran on (for the manifest), its
    handle (so that an attempt's actors can be ended before the next attempt starts), and
    the receipts of the files it wrote."""

    def __init__(self):
        self.items: list[dict[str, Any]] = []
        self.handles: list[Any] = []
        self.receipts: list[dict[str, Any]] = []

    def add(self, info: dict[str, Any], handle: Any = None) -> None:
        self.items.append(info)
        if handle is not None:
            self.handles.append(handle)

    def get(self) -> list[dict[str, Any]]:
        return self.items

    def actors(self) -> list[Any]:
        return self.handles

    def receipt(self, rows: list[dict[str, Any]]) -> None:
        self.receipts.extend(rows)

    def written(self) -> list[dict[str, Any]]:
        """Every receipt the attempt's actors handed back, the driver's stream aside."""
        return self.receipts


def complete(unit: Unit, receipts: list[tuple[int, int, str]]) -> list[tuple[int, int, str]] | None:
    """The receipts (first, rows, path) that tile the unit's rows exactly, in order, or
    None. A block scored twice (its read ran again after a node loss) is kept once."""
    by_first: dict[int, tuple[int, str]] = {}
    for first, rows, path in receipts:
        by_first.setdefault(first, (rows, path))
    tiles, at = [], 0
    while at < unit.rows:
        if at not in by_first:
            return None
        rows, path = by_first[at]
        tiles.append((at, rows, path))
        at += rows
    return tiles if at == unit.rows else None
