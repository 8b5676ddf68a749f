"""`sentiment-jobs score`: Ray Data actors run the Scorer over Parquet files and commit the output.

    checked input files ─► read tasks (row groups, exact row positions)
        ─► map_batches(ScorerActor, ActorPoolStrategy, one GPU each when there are GPUs)
        ─► write_parquet(<output>/_staging/<run>) ─► row counts verified ─► commit

Reading goes through a small Datasource over the already-checked file list
rather than `read_parquet`: it knows each row's file and position (for the
generated id), reads row groups so memory stays flat, and never re-lists paths.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sentiment.artifacts import resolve_model, versions
from sentiment.commit import OutputDir, staged_name
from sentiment.config import ScoreConfig, SentimentError, absolute, store_location, to_dict
from sentiment.inputs import InputFile, check_inputs, check_output_apart, unified_schema
from sentiment.scoring import OUTPUT_COLUMNS, STATUSES, Scorer

log = logging.getLogger(__name__)
GENERATED_ID = "row_id"
ROW_GROUPS_PER_TASK = 4
# Where each row came from, (file index << 32) | row group, so that an error inside a
# scoring actor can name its file and row group; the actor drops it before output.
SOURCE = "__sentiment_source"


@dataclass
class ScoreSummary:
    output: str
    manifest: dict[str, Any]


@dataclass
class _Run:
    """One scoring run: what it decided before starting, and what it wrote."""

    cfg: ScoreConfig
    run_id: str
    started: float
    out: OutputDir
    model_dir: str
    todo: list[InputFile]  # files this run scores
    skipped: list[dict[str, str]]
    previous: dict[str, Any] | None  # the committed manifest an incremental run extends
    kept_inputs: list[dict[str, Any]] = field(default_factory=list)
    kept_files: list[dict[str, Any]] = field(default_factory=list)
    changes: dict[str, list[str]] = field(default_factory=dict)  # changed/removed inputs
    ignored: list[dict[str, str]] = field(default_factory=list)  # see inputs.resolve
    file_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per staged file
    plan: dict[str, float] = field(default_factory=dict)
    staged: list[str] = field(default_factory=list)
    actors: list[dict[str, Any]] = field(default_factory=list)


class ScorerActor:
    """The Scorer as a Ray Data class UDF. Built from the model *path*, so a restarted
    actor reloads it, and it reports which device it got."""

    def __init__(
        self,
        model_dir: str,
        text_column: str,
        max_tokens: int,
        batch_size: int,
        threads: int,
        registry=None,
        sources: list[str] | None = None,
    ):
        import os

        import ray

        self.scorer = Scorer(
            model_dir,
            text_column=text_column,
            max_tokens=max_tokens,
            batch_size=batch_size,
            threads=threads,
        )
        self.sources = sources or []
        if registry is not None:
            info = {
                "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id()[:12],
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "device": str(self.scorer.device),
            }
            ray.get(registry.add.remote(info))

    def __call__(self, batch: pa.Table) -> pa.Table:
        source = batch.column(SOURCE) if SOURCE in batch.column_names else None
        if source is not None:
            batch = batch.drop_columns([SOURCE])
        try:
            return self.scorer(batch)
        except Exception as exc:  # one line naming file and row group, not a worker traceback
            raise SentimentError(self._locate(batch, source, exc)) from None

    def _locate(self, batch: pa.Table, source: pa.ChunkedArray | None, exc: Exception) -> str:
        """The file and row group of a failed batch: each of its row groups is scored
        alone until one fails (a batch may span several)."""
        if source is None:
            return f"scoring failed: {_one_line(exc)}"
        codes = source.to_numpy()
        for code in dict.fromkeys(codes.tolist()):
            rows = batch.filter(pa.array(codes == code))
            try:
                self.scorer(rows)
            except Exception as inner:
                return f"{self._where(code)}: scoring failed: {_one_line(inner)}"
        where = ", ".join(self._where(c) for c in dict.fromkeys(codes.tolist()))
        return f"{where}: scoring failed: {_one_line(exc)}"

    def _where(self, code: int) -> str:
        index, group = code >> 32, code & 0xFFFFFFFF
        name = self.sources[index] if index < len(self.sources) else f"input file #{index}"
        return f"{name}: row group {group}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:500]


class _Registry:
    """A tiny actor collecting what each scoring actor ran on, for the manifest."""

    def __init__(self):
        self.items: list[dict[str, Any]] = []

    def add(self, info: dict[str, Any]) -> None:
        self.items.append(info)

    def get(self) -> list[dict[str, Any]]:
        return self.items


def make_datasource(files: list[InputFile], schema: pa.Schema, add_id: bool):
    """A Ray Datasource yielding every row of `files` once, cast to `schema`."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    out_schema = schema.append(pa.field(GENERATED_ID, pa.string())) if add_id else schema
    out_schema = out_schema.append(pa.field(SOURCE, pa.int64()))

    def read(index: int, f: InputFile, groups: list[int]):
        with f.fs.open_input_file(f.path) as handle:
            pf = pq.ParquetFile(handle)
            offset = sum(pf.metadata.row_group(g).num_rows for g in range(groups[0]))
            for g in groups:
                try:
                    table = _conform(pf.read_row_group(g), schema)
                except (OSError, pa.ArrowException) as exc:
                    raise SentimentError(f"{f.uri}: cannot read row group {g}: {exc}") from None
                if add_id:
                    ids = [f"{f.uri}:{offset + i}" for i in range(table.num_rows)]
                    table = table.append_column(GENERATED_ID, pa.array(ids, pa.string()))
                code = pa.array(np.full(table.num_rows, (index << 32) | g, np.int64))
                table = table.append_column(SOURCE, code)
                offset += table.num_rows
                yield table

    class ReviewFiles(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return sum(f.size for f in files) * 3

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for index, f in enumerate(files):
                for start in range(0, f.row_groups, ROW_GROUPS_PER_TASK):
                    groups = list(range(start, min(start + ROW_GROUPS_PER_TASK, f.row_groups)))
                    meta = BlockMetadata(
                        num_rows=None, size_bytes=None, exec_stats=None, input_files=[f.uri]
                    )
                    tasks.append(ReadTask(partial(read, index, f, groups), meta, out_schema))
            return tasks

    return ReviewFiles()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A file's table in the unified column order and types; absent columns as nulls."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def plan_resources(cfg: ScoreConfig, cluster: dict[str, float]) -> dict[str, float]:
    """Actors, GPUs and CPUs per actor, and torch threads per actor, for this cluster.

    GPU cluster: one actor per GPU. CPU cluster: one single-threaded actor per core,
    each reserving a fraction of a CPU so that the pool never takes every CPU and the
    read and write tasks always get one (a full pool deadlocks them).
    """
    gpus = cfg.gpus_per_actor if cfg.gpus_per_actor >= 0 else (1.0 if cluster["GPU"] >= 1 else 0.0)
    cpus = cluster["CPU"]
    if gpus > 0:
        actors = cfg.actors or max(1, int(cluster["GPU"] // gpus))
        cpus_per_actor = cfg.cpus_per_actor or 1.0
        threads = max(1, int(cpus_per_actor))
    else:
        actors = cfg.actors or max(1, int(cpus))
        cpus_per_actor = cfg.cpus_per_actor or max(0.1, math.floor((cpus - 1) / actors * 10) / 10)
        threads = 1
    if actors * cpus_per_actor > cpus - 1 and cpus > 1 and not cfg.cpus_per_actor:
        cpus_per_actor = max(0.1, (cpus - 1) / actors)
    return {"actors": actors, "gpus": gpus, "cpus": cpus_per_actor, "threads": threads}


def run_scoring(cfg: ScoreConfig) -> ScoreSummary:
    """Score every input row exactly once and commit the output (joins or starts a Ray)."""
    from sentiment.cluster import cluster_resources, init_ray

    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    output = cfg.output or default_output(cfg.inputs[0])
    model_dir = absolute(str(resolve_model(cfg.model, store_location(cfg.store))))
    out = OutputDir(output)
    check_output_apart(out.location, list(cfg.inputs))
    files, skipped, ignored = check_inputs(
        list(cfg.inputs), cfg.text_column, cfg.id_column, cfg.on_bad_file, exclude=out.location
    )
    if not files and not skipped:
        raise SentimentError(f"no Parquet files found in {', '.join(cfg.inputs)}")
    with out.lock(run_id):
        out.prepare()
        previous = out.committed_manifest() if cfg.incremental else None
        todo, kept_inputs, kept_files, changes = _incremental_plan(files, previous)
        run = _Run(
            cfg, run_id, started, out, model_dir, todo, skipped, previous, kept_inputs, kept_files
        )
        run.changes, run.ignored = changes, ignored
        schema = unified_schema(todo) if todo else None
        if schema is not None:
            _check_output_names(schema, todo)
        add_id = bool(schema is not None and not cfg.id_column and "review_id" not in schema.names)
        init_ray()  # after the checks: a bad input fails before any Ray starts
        run.plan = plan_resources(cfg, cluster_resources())
        try:
            if todo:
                _run_pipeline(run, schema, add_id)
            counts, run.file_counts = _verify(run.staged, sum(f.rows for f in todo), out, run_id)
            manifest = _manifest(run, counts)
            out.commit(run_id, run.staged, manifest)
        except BaseException:
            out.discard(run_id)
            raise
    return ScoreSummary(output=output, manifest=manifest)


def default_output(first_input: str) -> str:
    """Next to the input: `reviews.parquet` → `reviews.scored`, `dir/` → `dir.scored`."""
    base = first_input.rstrip("/")
    if any(c in base for c in "*?["):
        base = base[: base.rfind("/")] if "/" in base else "input"
    return (base[: -len(".parquet")] if base.endswith(".parquet") else base) + ".scored"


def _run_pipeline(run: _Run, schema: pa.Schema, add_id: bool) -> None:
    """Read, score and write the run's files to its staging area; sets `run.staged`."""
    import pyarrow.fs as pafs
    import ray
    import ray.data

    from sentiment.cluster import failure_reason

    cfg, plan, out = run.cfg, run.plan, run.out

    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = 0  # an unreadable block fails the run; it is never dropped
    registry = ray.remote(num_cpus=0)(_Registry).remote()
    ds = ray.data.read_datasource(make_datasource(run.todo, schema, add_id))
    ds = ds.map_batches(
        ScorerActor,
        fn_constructor_kwargs={
            "model_dir": run.model_dir,
            "text_column": cfg.text_column,
            "max_tokens": cfg.max_tokens,
            "batch_size": cfg.model_batch_size,
            "threads": plan["threads"],
            "registry": registry,
            "sources": [f.uri for f in run.todo],
        },
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
        num_gpus=plan["gpus"],
        num_cpus=plan["cpus"],
    )
    staging = out.staging(run.run_id)
    try:
        ds.write_parquet(
            staging,
            filesystem=out.fs,
            min_rows_per_file=min(cfg.rows_per_file, 50_000),
            max_rows_per_file=cfg.rows_per_file,
        )
    except Exception as exc:  # Ray Data re-raises a task's error in its own types
        raise SentimentError(f"scoring run {run.run_id} failed: {failure_reason(exc)}") from exc
    run.actors = ray.get(registry.get.remote())
    ray.kill(registry)
    selector = pafs.FileSelector(staging, recursive=True, allow_not_found=True)
    run.staged = sorted(
        i.path
        for i in out.fs.get_file_info(selector)
        if i.type == pafs.FileType.File and i.path.endswith(".parquet")
    )


def _verify(
    staged: list[str], rows_in: int, out: OutputDir, run_id: str
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Rows out must equal rows in; per-status counts from the written files (in all, and
    per file, for the manifest)."""
    counts = dict.fromkeys(STATUSES, 0)
    per_file: dict[str, dict[str, int]] = {}
    rows_out = 0
    for path in staged:
        per_file[path] = _status_counts(out, path)
        rows_out += sum(per_file[path].values())
        for k, v in per_file[path].items():
            counts[k] = counts.get(k, 0) + v
    if rows_out != rows_in:
        raise SentimentError(
            f"run {run_id} wrote {rows_out} rows for {rows_in} input rows; not committed"
        )
    return {"rows_in": rows_in, "rows_out": rows_out, **counts}, per_file


def _status_counts(out: OutputDir, path: str) -> dict[str, int]:
    with out.fs.open_input_file(path) as f:
        column = pq.read_table(f, columns=["score_status"]).column(0)
    return {item["values"]: item["counts"] for item in pc.value_counts(column).to_pylist()}


def _incremental_plan(files: list[InputFile], previous: dict[str, Any] | None):
    """Files still to score, the inputs and data files kept from the committed output, and
    the inputs that changed or disappeared since.

    An input changed when its size, modification time or footer digest differs from
    the manifest's. Its old rows must go, and a run's data files mix the rows of all
    the inputs it scored, so every input scored by the same run as a changed or
    removed one is scored again and that run's files are dropped: the committed
    output stays exactly the scoring of the current inputs, with no row lost or twice.
    """
    if previous is None:
        return files, [], [], {"changed_inputs": [], "removed_inputs": []}
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
    by_path = {i["path"]: i for i in previous["inputs"]}
    dropped_runs = {by_path[u]["run_id"] for u in changed + removed}
    kept_inputs = [i for i in previous["inputs"] if i["run_id"] not in dropped_runs]
    kept_files = [f for f in previous["files"] if f["run_id"] not in dropped_runs]
    kept = {i["path"] for i in kept_inputs}
    todo = [f for f in files if f.uri not in kept]
    return todo, kept_inputs, kept_files, {"changed_inputs": changed, "removed_inputs": removed}


def _changed(scored: dict[str, Any], now: InputFile) -> bool:
    """Whether an input differs from what was scored (manifests without the modification
    time or digest, from older versions, count as changed: scored again once)."""
    return (
        scored.get("size") != now.size
        or scored.get("mtime_ns") != now.mtime_ns
        or scored.get("fingerprint") != now.fingerprint
    )


def _check_output_names(schema: pa.Schema, files: list[InputFile]) -> None:
    clash = [c for c in (*OUTPUT_COLUMNS, GENERATED_ID) if c in schema.names and c != GENERATED_ID]
    if clash:
        raise SentimentError(
            f"input already has column(s) {', '.join(clash)} that scoring adds "
            f"(e.g. {files[0].uri}); rename them or select other columns first"
        )


def _manifest(run: _Run, counts: dict[str, int]) -> dict[str, Any]:
    """The committed state after this run: its own counts and the whole output's."""
    finished = time.time()
    new_files = []
    for i, path in enumerate(run.staged):
        file_counts = run.file_counts[path]
        new_files.append(
            {
                "name": staged_name(run.run_id, i),
                "rows": sum(file_counts.values()),
                "run_id": run.run_id,
                "counts": file_counts,
            }
        )
    inputs = list(run.kept_inputs) + [
        {
            "path": f.uri,
            "size": f.size,
            "mtime_ns": f.mtime_ns,
            "fingerprint": f.fingerprint,
            "rows": f.rows,
            "run_id": run.run_id,
        }
        for f in run.todo
    ]
    # files listed by older manifests carry no counts: their status column is read once
    files = [
        e if "counts" in e else {**e, "counts": _status_counts(run.out, run.out.path(e["name"]))}
        for e in [*run.kept_files, *new_files]
    ]
    totals = dict.fromkeys(("rows_in", "rows_out", *STATUSES), 0)
    for entry in files:
        for k, v in entry["counts"].items():
            totals[k] = totals.get(k, 0) + v
        totals["rows_in"] += entry["rows"]
        totals["rows_out"] += entry["rows"]
    seconds = finished - run.started
    return {
        "run_id": run.run_id,
        "mode": "incremental" if run.cfg.incremental else "full",
        "model_id": _model_id(run.model_dir),
        "model_dir": run.model_dir,
        "started_at": _iso(run.started),
        "finished_at": _iso(finished),
        "seconds": round(seconds, 3),
        "rows_per_s": round(counts["rows_in"] / seconds, 1) if seconds else None,
        "this_run": {**counts, "inputs": [f.uri for f in run.todo], **run.changes},
        "totals": totals,
        "inputs": inputs,
        "skipped": run.skipped,
        "ignored": run.ignored,
        "files": files,
        "actors": run.actors,
        "resources": run.plan,
        "settings": to_dict(run.cfg),
        "versions": versions(),
    }


def _model_id(model_dir: str) -> str:
    import json
    from pathlib import Path

    return json.loads((Path(model_dir) / "config.json").read_text())["model_id"]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
