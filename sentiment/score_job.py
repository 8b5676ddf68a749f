"""`sentiment-jobs score`: score every input row exactly once and commit the output.

    checked input files ─► units ─► Ray Data pipeline (sentiment.pipeline), repeated over
        what is left when a node is lost ─► row counts verified ─► commit

This module decides what to score (incremental runs), how big the actor pool is for the
cluster at hand, and commits what the pipeline staged (sentiment.commit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentiment.artifacts import check_model_dir, fetch_model, is_remote, locate_model, versions
from sentiment.commit import OutputDir, staged_name
from sentiment.config import ScoreConfig, SentimentError, absolute, store_location, to_dict
from sentiment.inputs import InputFile, check_inputs, check_output_apart
from sentiment.layout import (
    committed_inputs_schema,
    conform,
    file_pieces,
    incremental_plan,
    input_schema,
    keep_rows,
    output_schema,
    plan_units,
    schema_difference,
)
from sentiment.pipeline import STAGED, Registry, ScorerActor, complete, make_datasource
from sentiment.progress import Progress
from sentiment.scoring import OUTPUT_COLUMNS, STATUSES

log = logging.getLogger(__name__)


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
    model_dir: str  # the driver's local copy
    model_location: str  # where every node finds it: a local path, or a URI each node fetches
    todo: list[InputFile]  # files this run scores
    skipped: list[dict[str, str]]
    previous: dict[str, Any] | None  # the committed manifest an incremental run extends
    kept_inputs: list[dict[str, Any]] = field(default_factory=list)
    kept_files: list[dict[str, Any]] = field(default_factory=list)
    carried: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)
    schema: pa.Schema | None = None  # of every output file
    changes: dict[str, list[str]] = field(default_factory=dict)  # changed/removed inputs
    ignored: list[dict[str, str]] = field(default_factory=list)  # see inputs.resolve
    file_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per staged file
    plan: dict[str, float] = field(default_factory=dict)
    staged: list[str] = field(default_factory=list)
    staged_pieces: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # input rows
    carried_files: list[str] = field(default_factory=list)  # staged rewrites of kept files
    actors: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, float]] = field(default_factory=list)  # alive at the last attempt
    retries: list[dict[str, Any]] = field(default_factory=list)  # attempts that lost nodes
    model_id: str = ""  # from the model's config.json, checked on the driver
    written: list[dict[str, Any]] = field(default_factory=list)  # an attempt's receipts


IO_CPUS = 0.25  # each read and write task: Arrow I/O, light next to the model


def plan_resources(cfg: ScoreConfig, nodes: list[dict[str, float]]) -> dict[str, float]:
    """The actor pool for the alive `nodes`: size (initial, min, max), GPUs, CPUs and torch
    threads per actor.

    One actor per GPU on GPU nodes, else one single-threaded actor per CPU core. An
    actor's CPU share is what the smallest host leaves per actor after one read or write
    task (IO_CPUS), so that on every node, even a one-CPU worker, I/O tasks still fit
    beside the actors (a pool sized from cluster totals starved them on one-CPU nodes,
    and a full pool deadlocks them). By default the pool is as large as the alive
    nodes hold; it may grow to `max_actors` as an autoscaler adds nodes.
    """
    gpu_total = sum(n.get("GPU", 0.0) for n in nodes)
    gpus = cfg.gpus_per_actor if cfg.gpus_per_actor >= 0 else (1.0 if gpu_total >= 1 else 0.0)
    key, per = ("GPU", gpus) if gpus > 0 else ("CPU", 1.0)
    slots = [int(n.get(key, 0.0) // per) for n in nodes]  # actors each node holds, by key
    hosts = [(n["CPU"], k) for n, k in zip(nodes, slots, strict=True) if k > 0]
    if cfg.cpus_per_actor:
        cpus = cfg.cpus_per_actor
    elif hosts:
        cpus = min(min(1.0, (c - IO_CPUS) / k) for c, k in hosts)
        cpus = max(0.0, math.floor(cpus * 20) / 20)  # a twentieth: tidy in Ray's accounting
    else:
        cpus = 1.0 if gpus == 0 else 0.0  # nothing can host one now: wait for nodes
    capacity = sum(max(0, min(k, int((c - IO_CPUS) // cpus))) if cpus > 0 else k for c, k in hosts)
    if cfg.actors:
        least = most = initial = cfg.actors
    else:
        least = cfg.min_actors or max(1, capacity)
        most = max(least, cfg.max_actors)
        initial = max(least, min(capacity, most))
    threads = max(1, int(cpus))
    return {
        "actors": initial,
        "min_actors": least,
        "max_actors": most,
        "gpus": gpus,
        "cpus": cpus,
        "threads": threads,
        "io_cpus": IO_CPUS,
    }


def run_scoring(cfg: ScoreConfig, address: str = "") -> ScoreSummary:
    """Score every input row exactly once and commit the output. `address`: the cluster
    to join ("" starts a local Ray; see sentiment.cluster)."""
    from sentiment.cluster import alive_nodes, init_ray

    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    output = cfg.output or default_output(cfg.inputs[0])
    store = store_location(cfg.store)
    location, expected_id = locate_model(cfg.model, store)
    # Checked here, before any Ray work; on an object store each scoring actor fetches and
    # checks its own copy (nodes share no disk), pinned to the id found now.
    model_dir = absolute(str(fetch_model(location, expected_id, store)))
    model = check_model_dir(model_dir)
    if not is_remote(location):
        location = model_dir
    out = OutputDir(output)
    check_output_apart(out.location, list(cfg.inputs))
    files, skipped, ignored = check_inputs(
        list(cfg.inputs), cfg.text_column, cfg.id_column, cfg.on_bad_file,
        exclude=out.location, content=cfg.content_digest,
    )  # fmt: skip
    if not files and not skipped:
        raise SentimentError(f"no Parquet files found in {', '.join(cfg.inputs)}")
    with out.lock(run_id):
        out.prepare()
        previous = out.committed_manifest() if cfg.incremental else None
        plan = incremental_plan(files, previous)
        run = _Run(
            cfg, run_id, started, out, model_dir, location, plan.todo, skipped, previous,
            plan.kept_inputs, plan.kept_files, plan.carried,
        )  # fmt: skip
        run.changes, run.ignored = plan.changes, ignored
        run.model_id = model.config.get("model_id", Path(model_dir).name)
        _check_output_names(plan.todo)  # first: an earlier output among the inputs
        schema = _one_schema(run)
        add_id = bool(schema is not None and not cfg.id_column and "review_id" not in schema.names)
        run.schema = output_schema(schema, add_id) if schema is not None else None
        init_ray(address)  # after the checks: a bad input fails before any Ray starts
        run.nodes = alive_nodes()
        run.plan = plan_resources(cfg, run.nodes)
        try:
            if run.todo:
                out.fs.create_dir(out.staging(run_id), recursive=True)
                _run_pipeline(run, schema, add_id)
                _warn_idle_gpus(run.actors)
            counts, run.file_counts = _verify(
                run.staged, sum(f.rows for f in run.todo), out, run_id
            )
            _carry(run)
            manifest = _manifest(run, counts)
            out.commit(run_id, run.staged + run.carried_files, manifest)
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
    """Score the run's files into its staging area; sets `run.staged`.

    Attempts the pipeline until every unit is complete, each attempt over the units the
    last one left (a lost node fails an attempt at once); an error of the data or the
    model (a SentimentError raised inside Ray) ends the run at the first attempt.
    """
    # Units of --rows-per-file rows, or of an equal share per actor where that is less: a
    # collection smaller than actors × --rows-per-file still keeps every actor busy.
    share = math.ceil(sum(f.rows for f in run.todo) / max(1, run.plan["actors"]))
    units = plan_units(run.todo, max(1, min(run.cfg.rows_per_file, share)))
    receipts: dict[int, list[tuple[int, int, str]]] = {u.index: [] for u in units}
    done: dict[int, list[tuple[int, int, str]]] = {}
    with Progress(sum(u.rows for u in units), "rows scored", log) as progress:
        _attempts(run, units, schema, add_id, receipts, done, progress)
    run.staged_pieces = {
        path: units[i].pieces(first, rows)
        for i, tiles in done.items()
        for first, rows, path in tiles
    }
    run.staged = sorted(run.staged_pieces)


def _attempts(run: _Run, units, schema, add_id, receipts, done, progress: Progress) -> None:
    """Attempts until every unit is complete (`done`), or the run fails (see `_run_pipeline`)."""
    from sentiment.cluster import alive_nodes, lost_work

    for attempt in range(1, run.cfg.max_attempts + 1):
        left = [u for u in units if u.index not in done]
        if attempt > 1:
            # After a node loss Ray may still count the dead node for a while: the pool
            # starts with what it can get (one actor at least) rather than wait for it.
            run.nodes = alive_nodes()
            retry = dataclasses.replace(
                run.cfg, actors=0, min_actors=1, max_actors=max(run.cfg.actors, run.cfg.max_actors)
            )
            run.plan = plan_resources(retry, run.nodes)
        try:
            for receipt in _attempt(run, left, schema, add_id):
                receipts[receipt["unit"]].append(
                    (receipt["first"], receipt["rows"], receipt["path"])
                )
                progress.add(receipt["rows"])
            error = None
        except Exception as exc:  # Ray Data re-raises a task's error in its own types
            error = exc
        for receipt in run.written:  # those the stream had not brought when it failed
            receipts[receipt["unit"]].append((receipt["first"], receipt["rows"], receipt["path"]))
        run.written.clear()
        for u in left:
            files = complete(u, receipts[u.index])
            if files is not None:
                done[u.index] = files
        if len(done) == len(units):
            break
        reason = _pipeline_failure(error, run) if error else "some units were not scored"
        if error is not None and not lost_work(error):
            raise SentimentError(f"scoring run {run.run_id} failed: {reason}") from error
        if attempt == run.cfg.max_attempts:
            raise SentimentError(
                f"scoring run {run.run_id} failed after {attempt} attempts: {reason}"
            ) from error
        log.warning(
            "attempt %d of scoring run %s ended (%s) with %d of %d units scored; "
            "scoring the rest again",
            attempt, run.run_id, reason, len(done), len(units),
        )  # fmt: skip
        run.retries.append({"attempt": attempt, "reason": reason, "units_done": len(done)})
        progress.done = sum(u.rows for u in units if u.index in done)


def _attempt(run: _Run, units: list, schema: pa.Schema, add_id: bool):
    """One pass of the Ray Data pipeline over `units`; yields each block's receipt."""
    import ray
    import ray.data

    from sentiment.cluster import quiet_ray

    cfg = run.cfg
    _check_resources(run)
    quiet_ray()  # Ray Data sets its logger up when first imported
    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = 0  # an unreadable block fails the run; it is never dropped
    # Bounded waits: Ray Data would otherwise wait forever for actors no node can host,
    # and 30 minutes for a run that has stopped moving.
    ctx.wait_for_min_actors_s = math.ceil(cfg.resource_timeout_s)
    ctx.execution_no_progress_timeout_s = cfg.resource_timeout_s
    registry = start_registry()
    # One block per unit, so one output file per unit: left to itself Ray Data splits
    # each read task's output to reach its minimum number of blocks (200), which made
    # hundreds of small files.
    ds = ray.data.read_datasource(
        make_datasource(units, schema, add_id), num_cpus=IO_CPUS, override_num_blocks=len(units)
    )
    with warnings.catch_warnings():
        # max_restarts has no named parameter yet; Ray 2.64 drops **ray_remote_args
        # (pyproject pins ray below it until then).
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        ds = _score_blocks(ds, run, registry)
    try:
        # Block by block, each receipt as soon as its block is done (iter_rows gathers
        # rows into batches first: receipts, one row a block, came in bursts).
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            yield from batch.to_pylist()
    finally:
        _end_attempt(run, registry)


def start_registry():
    """The attempt's Registry, on the driver's own node: if it lived on a node that dies,
    the attempt's surviving actors could not be found and ended, and would hold their
    CPUs or GPUs from the next attempt (which then waited for room that never came)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(Registry).options(num_cpus=0, scheduling_strategy=here).remote()


def _end_attempt(run: _Run, registry) -> None:
    """Record the attempt's actors and end those still alive: a failed attempt's
    survivors would hold the CPUs or GPUs the next attempt's actors need until Ray Data
    lets go of them. Never raises: the attempt's own error is the one to report."""
    import ray

    try:
        run.actors.extend(ray.get(registry.get.remote(), timeout=60))
        run.written.extend(ray.get(registry.written.remote(), timeout=60))
        actors = ray.get(registry.actors.remote(), timeout=60)
    except Exception as exc:  # the driver's node is failing too: the run is ending
        log.warning("could not end the scoring actors of run %s: %s", run.run_id, exc)
        actors = []
    for actor in [*actors, registry]:
        with contextlib.suppress(Exception):
            ray.kill(actor)
    # ray.kill returns before the actor is gone: wait (bounded) until each is, so that
    # no write of this attempt lands after the run discards its staging area.
    with contextlib.suppress(Exception):
        ray.wait([a.__ray_ready__.remote() for a in actors], num_returns=len(actors), timeout=30)


def _score_blocks(ds, run: _Run, registry):
    """The dataset with the scoring actors' receipts in place of its rows."""
    import ray.data

    cfg, plan, out = run.cfg, run.plan, run.out
    return ds.map_batches(
        ScorerActor,
        fn_constructor_kwargs={
            "model_dir": run.model_location,
            "model_id": run.model_id,
            "text_column": cfg.text_column,
            "max_tokens": cfg.max_tokens,
            "batch_size": cfg.model_batch_size,
            "pool_rows": cfg.batch_size,
            "threads": plan["threads"],
            "output": out.location,
            "staging": out.staging(run.run_id),
            "schema": run.schema,
            "registry": registry,
        },
        # A whole block (a unit, or a part of one) per call; Ray Data wants a size on GPUs.
        batch_size=cfg.rows_per_file if plan["gpus"] else None,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(
            min_size=plan["min_actors"], max_size=plan["max_actors"], initial_size=plan["actors"]
        ),
        num_gpus=plan["gpus"],
        num_cpus=plan["cpus"],
        max_restarts=0,  # a lost actor fails the attempt; see sentiment.pipeline
    )


def _check_resources(run: _Run) -> None:
    """Fail within the resource timeout, naming what is missing, when the cluster cannot
    host the pool's first actors and a read task (Ray itself would wait forever)."""
    from sentiment.cluster import alive_nodes, can_place, describe

    plan, timeout = run.plan, run.cfg.resource_timeout_s
    actor = {"CPU": plan["cpus"], "GPU": plan["gpus"]}
    if not can_place([actor] * plan["min_actors"] + [{"CPU": IO_CPUS}], timeout):
        raise SentimentError(
            f"scoring run {run.run_id}: no room for {plan['min_actors']} scoring actor(s) "
            f"needing {_needs(plan)} each, plus {IO_CPUS:g} CPU to read, within {timeout:g} s; "
            f"the cluster has {describe(alive_nodes())} (add such nodes, or change "
            "--gpus-per-actor / --cpus-per-actor; --resource-timeout waits longer)"
        )


def _needs(plan: dict[str, float]) -> str:
    cpu = f"{plan['cpus']:g} CPU"
    return f"{plan['gpus']:g} GPU and {cpu}" if plan["gpus"] else cpu


def _pipeline_failure(exc: BaseException, run: _Run) -> str:
    """One line for a failed pipeline; a wait that ran out names the resource it lacked."""
    from sentiment.cluster import alive_nodes, describe, failure_reason

    text = f"{type(exc).__name__}: {exc}"
    timeout = f"{run.cfg.resource_timeout_s:g} s"
    if "Timed out while starting actors" in text:
        return (
            f"no node could start a scoring actor needing {_needs(run.plan)} within "
            f"{timeout}; the cluster has {describe(alive_nodes())}"
        )
    if "ExecutionTimeoutError" in text or "made no progress" in text:
        return (
            f"no progress for {timeout} (scoring actors need {_needs(run.plan)}; the "
            f"cluster now has {describe(alive_nodes())}: were nodes lost?)"
        )
    return failure_reason(exc)


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


def _one_schema(run: _Run) -> pa.Schema | None:
    """The inputs' one schema for the output: the new inputs' (sentiment.layout), which
    must match the committed output's in columns and types, unless --union-schemas: then
    their union, the kept files rewritten to it when it differs from theirs."""
    union = run.cfg.union_schemas
    new = input_schema(run.todo, union) if run.todo else None
    committed_files = [*run.kept_files, *(entry for entry, _ in run.carried)]
    if not committed_files:
        return new
    name = committed_files[0]["name"]
    try:
        with run.out.fs.open_input_file(run.out.path(name)) as f:
            committed = committed_inputs_schema(pq.read_schema(f))
    except (OSError, pa.ArrowException) as exc:
        raise SentimentError(
            f"{run.out.path(name)}: cannot read the committed file ({exc})"
        ) from None
    if new is None or not (difference := schema_difference(committed, new)):
        return committed
    scored = (committed_files[0].get("inputs") or [{"path": name}])[0]["path"]
    if not union:
        raise SentimentError(
            f"{scored} (in the committed output) and {run.todo[0].uri} have different schemas "
            f"({difference}); pass --union-schemas to rewrite the output with the union of "
            "their columns, or score them into another output"
        )
    try:
        merged = pa.unify_schemas([committed, new], promote_options="permissive")
    except (pa.ArrowException, TypeError):
        raise SentimentError(
            f"{scored} (in the committed output) and {run.todo[0].uri} have conflicting "
            f"columns: {difference}"
        ) from None
    log.warning("the output's schema changes (%s): its kept files are rewritten", difference)
    run.carried += [(entry, file_pieces(entry)) for entry in run.kept_files]
    run.kept_files = []
    return merged


def _carry(run: _Run) -> None:
    """Rewrite into staging the committed files that an incremental run keeps in part (a
    changed input's rows dropped from a shared file) or in another schema: their rows are
    copied as they were scored, not scored again."""
    for i, (entry, stay) in enumerate(run.carried):
        pieces = file_pieces(entry)
        src = run.out.path(entry["name"])
        try:
            with run.out.fs.open_input_file(src) as f:
                table = pq.read_table(f)
            if stay != pieces:
                table = keep_rows(table, pieces, stay)
            if run.schema is not None:
                table = conform(table, run.schema)
            path = f"{run.out.staging(run.run_id)}/carried-{i:05d}{STAGED}"
            run.out.fs.create_dir(run.out.staging(run.run_id), recursive=True)
            with run.out.fs.open_output_stream(path) as f:
                pq.write_table(table, f)
        except (OSError, pa.ArrowException) as exc:
            raise SentimentError(f"{src}: cannot rewrite the committed file ({exc})") from None
        counts = pc.value_counts(table.column("score_status")).to_pylist()
        run.file_counts[path] = {c["values"]: c["counts"] for c in counts}
        run.staged_pieces[path] = stay
        run.carried_files.append(path)


def _check_output_names(files: list[InputFile]) -> None:
    """No input may have the columns scoring adds; the error names a file that has them,
    and says so when it is an earlier scoring run's output (`a.scored/` beside `a.parquet`)."""
    culprit = next((f for f in files if set(OUTPUT_COLUMNS) & set(f.schema.names)), None)
    if culprit is None:
        return
    clash = [c for c in OUTPUT_COLUMNS if c in culprit.schema.names]
    parent = culprit.path.rsplit("/", 1)[0]
    scored = culprit.fs.get_file_info(f"{parent}/_manifest.json").type == pafs.FileType.File
    why = (
        f"{culprit.uri} is in {parent}, the output of an earlier scoring run: score the "
        "input files alone, or put outputs elsewhere (--output)"
        if scored
        else f"{culprit.uri}: rename them or select other columns first"
    )
    raise SentimentError(f"input already has column(s) {', '.join(clash)} that scoring adds; {why}")


def _manifest(run: _Run, counts: dict[str, int]) -> dict[str, Any]:
    """The committed state after this run: its own counts and the whole output's."""
    finished = time.time()
    new_files = []
    for i, path in enumerate(run.staged + run.carried_files):
        file_counts = run.file_counts[path]
        new_files.append(
            {
                "name": staged_name(run.run_id, i),
                "rows": sum(file_counts.values()),
                "run_id": run.run_id,
                "inputs": run.staged_pieces[path],  # which rows of which inputs, in order
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
        "model_id": run.model_id,
        "model_dir": run.model_location,
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
        "retries": run.retries,
        "resources": run.plan,
        "settings": to_dict(run.cfg),
        "versions": versions(),
    }


def _warn_idle_gpus(actors: list[dict[str, Any]]) -> None:
    """Say so when actors held GPUs that torch could not use: they scored on CPU."""
    idle = [a for a in actors if a.get("gpu_ids") and not a.get("device", "").startswith("cuda")]
    if idle:
        log.warning(
            "%d scoring actor(s) held GPUs (ids %s) but torch saw no CUDA device there "
            "(a CPU build of torch, or no driver), so they scored on CPU; see the "
            "manifest's actors",
            len(idle), ", ".join(sorted({g for a in idle for g in a["gpu_ids"]})),
        )  # fmt: skip


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
