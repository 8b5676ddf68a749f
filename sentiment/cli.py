"""The `sentiment-jobs` command line (the only typer importer).

Each command turns its options into a config dataclass, calls one library
function, and prints a summary. A `SentimentError` becomes one line on stderr
and exit status 1, so a scheduler sees the failure and the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from sentiment import datasets, download
from sentiment.cluster import Stopped
from sentiment.config import (
    EmbeddingConfig,
    ScoreConfig,
    SentimentError,
    TrainConfig,
)

app = typer.Typer(
    help="Train GRU sentiment classifiers and score Parquet collections of reviews on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sentiment-jobs {version('sentiment-jobs')}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", metavar="", help="Log debug detail (Ray's own lines too)."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", metavar="", help="Log warnings and errors only."
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        metavar="",
        help="Print the version and exit.",
    ),
) -> None:
    """Global flags (-v, -q) go before or after the command (see `main`)."""
    if verbose and quiet:
        raise typer.BadParameter("give one of them", param_hint="--verbose / --quiet")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        logging.getLogger("gensim").setLevel(logging.WARNING)  # a line per word2vec step


def main(argv: Sequence[str] | None = None) -> None:
    """The `sentiment-jobs` command. -v/-q are global flags, accepted after the command
    too (as uv, ruff and gh take theirs): Click knows options only at their own level, so
    they are moved to the front (up to a `--`, after which words are arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a in GLOBAL_FLAGS]
    rest = [a for a in args[:end] if a not in GLOBAL_FLAGS]
    app(args=[*flags, *rest, *args[end:]], prog_name="sentiment-jobs")


RUN_OPTIONS = ("address", "wait", "python")  # where a run goes, not what it does


def choices(name: str, values: Sequence[str]) -> type[Enum]:
    """A Typer choice type from the library's own tuple of names."""
    return Enum(name, {v: v for v in values}, type=str)


def _nested(f: dataclasses.Field) -> type | None:
    factory = f.default_factory
    return factory if callable(factory) and dataclasses.is_dataclass(factory) else None


# Help panels: a setting's panel by its dotted path, or by its nested settings' name.
PANELS = {
    "model.*": "Model", "text.*": "Model", "embeddings.*": "Word embeddings",
    **dict.fromkeys(("data", "store", "storage_path", "name"), "Data and model store"),
    **dict.fromkeys(("ngrams", "ngram_c", "ngram_min_df"), "N-gram head"),
    **dict.fromkeys(
        ("epochs", "lr", "batch_size", "lr_schedule", "grad_clip", "weight_decay",
         "label_smoothing", "embedding_lr", "val_fraction", "calibrate", "ensemble", "seed"),
        "Training",
    ),
    **dict.fromkeys(
        ("workers", "min_workers", "use_gpu", "cpus_per_worker", "gpus_per_worker",
         "threads_per_worker", "max_failures", "resource_timeout_s", "actors", "min_actors",
         "max_actors", "gpus_per_actor", "cpus_per_actor", "max_attempts"),
        "Ray resources",
    ),
    **dict.fromkeys(
        ("output", "text_column", "id_column", "on_bad_file", "rows_per_file",
         "union_schemas", "incremental", "content_digest"),
        "Input and output",
    ),
    **dict.fromkeys(("model_batch_size", "max_tokens"), "Scoring"),
}  # fmt: skip
RUN_PANEL = "Where it runs"


def _panel(dotted: str, cls: type) -> str:
    top = dotted.split(".", 1)[0]
    if "." in dotted:
        return PANELS.get(f"{top}.*", "Options")
    if cls.__name__ == "ScoreConfig" and top in ("model", "store", "batch_size"):
        return "Input and output" if top != "batch_size" else "Scoring"
    return PANELS.get(top, "Options")


def options(
    cls: type,
    prefix: str = "--",
    groups: dict[str, str] | None = None,
    spell: dict[str, str] | None = None,
    skip: Sequence[str] = (),
    root: str = "",
) -> list[inspect.Parameter]:
    """A Typer option for every `config.setting` of a config dataclass, nested ones too.

    Each is named after its field's path (`model__hidden_size`, as `from_options` reads
    it) and spelled `prefix` + field name (`groups[field]` in a nested dataclass), unless
    the field (or `spell`, by dotted path) says otherwise; default, help and choices are
    the field's own. `root` names the dataclass itself (`root__field`), when its field
    names would clash with the command's own.
    """
    found: list[inspect.Parameter] = []
    outer = cls

    def walk(cls: type, path: str, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            dotted = path + f.name
            if _nested(f):
                walk(_nested(f), dotted + ".", (groups or {}).get(f.name, prefix))
                continue
            if "help" not in f.metadata or dotted in skip:
                continue
            extra = dict(f.metadata)
            decl = (spell or {}).get(dotted) or extra.pop("option", None)
            decl = decl or prefix + f.name.replace("_", "-")
            extra.pop("option", None)
            kind, default = hints[f.name], f.default
            if "choices" in extra:
                kind = choices(f"{cls.__name__}.{f.name}", extra.pop("choices"))
            elif typing.get_origin(kind) is tuple:
                kind, default = list[str] | None, None
            decls = decl if isinstance(decl, tuple) else (decl,)
            if kind is bool and "/" not in decls[0]:
                decls = (f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:])
            extra.setdefault("rich_help_panel", _panel(dotted.removeprefix(f"{root}."), outer))
            if kind is bool:
                extra.setdefault("metavar", "")  # a flag takes no value
            option = typer.Option(*decls, **extra)
            found.append(
                inspect.Parameter(
                    dotted.replace(".", "__"),
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=Annotated[kind, option],
                )
            )

    walk(cls, f"{root}." if root else "", prefix)
    return found


def with_options(cls: type, run: bool = False, **how: Any) -> Callable[[Callable], Callable]:
    """Give a command the options of `cls` (see `options`) beside its own: its required
    options and arguments first, the settings, its other options, then with `run` where
    the run goes (RUN_OPTIONS) and --config. The command reads them from `ctx.params`."""

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name], kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(command).parameters.values()
            if p.kind != inspect.Parameter.VAR_KEYWORD
        ]

        def first(p: inspect.Parameter) -> bool:
            info = typing.get_args(p.annotation)[1:]
            return p.default is p.empty or any(
                isinstance(i, typer.models.ArgumentInfo) for i in info
            )

        params = [p for p in own if first(p)]
        params += options(cls, **how) + [p for p in own if not first(p)]
        if run:
            params += [
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
                for name, a, d in (
                    ("address", AddressOption, ""),
                    ("wait", WaitOption, True),
                    ("python", PythonOption, ""),
                    ("config", ConfigOption, ""),
                )
            ]
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def from_options(cls: type, params: dict[str, Any], path: str = "") -> Any:
    """A config dataclass from a command's parameters (see `options`); fields without a
    parameter keep their defaults."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = path + f.name
        if _nested(f):
            kwargs[f.name] = from_options(_nested(f), params, name + "__")
        elif name in params:
            value = params[name]
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, list):
                value = tuple(value)
            elif value is None and isinstance(f.default, tuple):
                value = f.default
            kwargs[f.name] = value
    return cls(**kwargs)


def settings_from(config: str, cls: type, ctx: typer.Context, allowed: tuple[str, ...]):
    """A config dataclass from `--config` JSON (inline or a file); every other setting
    must then be left at its default."""
    from sentiment.config import from_dict

    # By name: Typer (0.2x) brings a click of its own, whose ParameterSource is not click's.
    given = [
        name
        for name in ctx.params
        if name not in ("config", *allowed)
        and getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
    ]
    if given:
        option = next(p.opts[0] for p in ctx.command.params if p.name == given[0])
        raise SentimentError(f"--config holds every setting: drop {option}")
    text = config.strip()
    if not text.startswith(("{", "[")):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise SentimentError(f"--config {config}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SentimentError(f"--config: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SentimentError("--config: expected a JSON object of settings")
    try:
        return from_dict(cls, data)
    except (TypeError, ValueError) as exc:
        raise SentimentError(f"--config: {exc}") from None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a known user error into one line and a non-zero exit.

    Object-store errors count: wrong or missing credentials, no permission, a missing
    bucket, an unreachable endpoint reach here as pyarrow's OSErrors (or Ray's errors
    wrapping them) from wherever a command touched the store, and become one line
    naming the URI and the reason (`storage.storage_error`). Other OSErrors are bugs
    or surprises and keep their traceback.
    """
    from sentiment.storage import storage_error

    try:
        yield
    except SentimentError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    except Stopped as exc:  # SIGTERM or SIGINT: the work's own cleanup has run
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=128 + exc.signum) from None
    except OSError as exc:
        error = storage_error(exc)
        if error is None:
            raise
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None


# Options shared by `train`, `score` and `jobs ...` (defined in the Ray jobs section below).
AddressOption = Annotated[
    str,
    typer.Option(
        envvar="RAY_ADDRESS",
        help="http://<head>:8265: submit as a Ray job there. <head>:<port> or 'auto': run "
        "here as a driver of that cluster. Empty or 'local': a Ray started in-process. "
        "Paths must be reachable from the cluster.",
        rich_help_panel=RUN_PANEL,
    ),
]
JobsAddressOption = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="RAY_ADDRESS",
        help="The cluster's dashboard, http://<head>:8265, where the jobs were submitted.",
        show_default=False,
    ),
]
WaitOption = Annotated[
    bool,
    typer.Option(
        help="With --address: follow the job's logs and exit with its outcome.",
        rich_help_panel=RUN_PANEL,
    ),
]
ConfigOption = Annotated[
    str,
    typer.Option(
        "--config",
        rich_help_panel=RUN_PANEL,
        help="All settings as JSON, inline or in a file (as a model's config.json 'training' or a manifest's 'settings' hold them); no other setting may be given with it. How a submitted Ray job gets its settings.",
    ),
]
StoreOption = Annotated[
    str,
    typer.Option(
        envvar="SENTIMENT_STORE",
        help="Model store (dir or URI; default $SENTIMENT_JOBS_HOME/models): where `train` "
        "publishes, and where 'latest' and model ids are found.",
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        metavar="",
        help="Print a machine-readable summary (one JSON document) on stdout instead of "
        "the text one; logs and errors stay on stderr.",
        rich_help_panel="Output format",
    ),
]
PythonOption = Annotated[
    str,
    typer.Option(
        envvar="SENTIMENT_JOBS_PYTHON",
        help="With --address: the cluster's Python (default: the one it runs Ray with).",
        rich_help_panel=RUN_PANEL,
    ),
]


# --- commands are added below, one section each -------------------------------------


# --- prepare ---------------------------------------------------------------------------


SourceFormat = choices("SourceFormat", ("auto", *datasets.FORMATS))
SplitName = choices("SplitName", ("train", "test"))
DownloadName = choices("DownloadName", tuple(download.DATASETS))


@app.command()
@with_options(datasets.Columns, root="columns")
def prepare(
    ctx: typer.Context,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Dataset directory to write (a path, or a URI: s3://bucket/dataset).",
            show_default=False,
        ),
    ],
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="Review sources: an Amazon dataset root, category folder or .review file, or "
            "the Multi-Domain archive (domain_sentiment_data.tar.gz, a path or its https URL); a "
            "DLStudio sentiment_dataset_*.tar.gz; a fastText file; Parquet (file or folder), "
            "CSV or JSONL.",
            show_default=False,
        ),
    ] = None,
    download_name: Annotated[
        DownloadName | None,
        typer.Option(
            "--download",
            help="Fetch this dataset's archive once (https, into $SENTIMENT_JOBS_HOME/cache; "
            "SENTIMENT_JOBS_AMAZON_URL names a mirror), check it and prepare it with its canonical "
            "split.",
        ),
    ] = None,
    unlabeled_output: Annotated[
        str | None,
        typer.Option(
            help="Where an archive's unlabeled reviews go (Parquet, a `text` column: extra text "
            "for word2vec). [default: <output>.unlabeled]",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        SourceFormat, typer.Option("--format", help="Source format; auto: from each path.")
    ] = "auto",
    split: Annotated[
        SplitName | None,
        typer.Option(help="Put every row in this split (e.g. a DLStudio file named neither way)."),
    ] = None,
    test_fraction: Annotated[
        float,
        typer.Option(help="Share of test rows for sources without a split (by group or id hash)."),
    ] = 0.2,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing dataset at --output.")
    ] = False,
    **columns: Any,
) -> None:
    """Read review sources into one canonical Parquet dataset with a train/test split."""
    sources = list(sources or [])
    with user_errors():
        if download_name is not None:
            sources.append(download.dataset_url(download_name.value))
        urls = [s for s in sources if download.is_url(s)]
        progress = _DownloadBar(urls[0] if urls else "")
        try:
            report = datasets.prepare(
                sources,
                output,
                fmt=fmt.value,
                columns=from_options(datasets.Columns, ctx.params, "columns__"),
                split=split.value if split else None,
                test_fraction=test_fraction,
                overwrite=overwrite,
                unlabeled_output=unlabeled_output,
                progress=progress,
            )
        finally:
            progress.close()
    _echo_prepare_report(report)


class _DownloadBar:
    """A progress callback for `datasets.prepare`: a bar on stderr while a download runs."""

    def __init__(self, url: str):
        self.name = url.rstrip("/").rsplit("/", 1)[-1]
        self.bar = None
        self.done = 0

    def __call__(self, done: int, total: int | None) -> None:
        if total is None:  # no size announced: a line every 10 MB
            if done // 10_000_000 > self.done // 10_000_000 or not self.done:
                typer.echo(f"downloading {self.name}: {done / 1e6:.0f} MB so far", err=True)
        elif self.bar is None and not self.done:
            label = f"downloading {self.name} ({total / 1e6:.1f} MB)"
            self.bar = typer.progressbar(length=total, label=label, file=sys.stderr)
            self.bar.__enter__()
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        """End the bar's line (also when the download broke off)."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _echo_prepare_report(report: datasets.PrepareReport) -> None:
    width = max(len("category"), *(len(g.category) for g in report.groups))

    def row(split: str, category: str, *counts: int | str) -> None:
        cells = "".join(f"  {c:>8,}" if isinstance(c, int) else f"  {c:>8}" for c in counts)
        typer.echo(f"{split:<5}  {category:<{width}}{cells}")

    row("split", "category", "rows", "positive", "negative")
    for g in report.groups:
        row(g.split, g.category, g.n, g.n_positive, g.n_negative)
    for split in ("train", "test"):
        groups = [g for g in report.groups if g.split == split]
        pos, neg = sum(g.n_positive for g in groups), sum(g.n_negative for g in groups)
        row(split, "(all)", pos + neg, pos, neg)
    train_ids, test_ids, both = report.group_ids
    if train_ids or test_ids:
        typer.echo(
            f"group_id: {train_ids:,} groups in train, {test_ids:,} in test, {both:,} in both"
        )
    if report.dropped_empty:
        examples = ", ".join(report.dropped_examples)
        typer.echo(f"left out {report.dropped_empty:,} reviews with empty text ({examples}, ...)")
    if report.unlabeled_rows:
        left_out = report.unlabeled_left_out
        typer.echo(
            f"wrote {report.unlabeled_rows:,} unlabeled reviews (text for word2vec) to "
            f"{report.unlabeled_output}"
            + (f"; left out {left_out:,} empty or also labelled" if left_out else "")
        )
    typer.echo(f"wrote {report.rows:,} reviews to {report.output}")


# --- embeddings ------------------------------------------------------------------------

# word2vec's options are --w2v-* here and in `train`; the vectors' own (source, format,
# limit) are --source, --format and --limit here, --embeddings* in `train`.
W2V = "--w2v-"


@app.command()
@with_options(EmbeddingConfig, prefix=W2V)
def embeddings(
    ctx: typer.Context,
    data: Annotated[
        Path,
        typer.Option(
            help="Prepared dataset: a directory of Parquet files (text, split).", show_default=False
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Directory for vectors.npy, vocab.txt and embeddings.json.",
            show_default=False,
        ),
    ],
    **settings: Any,
) -> None:
    """Train word2vec on a dataset's train split, or load pretrained vectors; save them."""
    from sentiment.embeddings import build_embeddings, dataset_texts, save_embeddings

    with user_errors():
        config = from_options(EmbeddingConfig, ctx.params)
        emb = build_embeddings(config, dataset_texts(data, config.corpus))
        out = save_embeddings(emb, output)
    meta = emb.meta
    typer.echo(f"vocabulary: {len(emb.vocab):,} words (incl. <pad>, <unk>), dim {emb.dim}")
    typer.echo(f"coverage of training tokens: {meta['coverage']:.2%} of {meta['n_train_tokens']:,}")
    if "epochs_chosen" in meta:
        typer.echo(f"word2vec epochs: {meta['epochs']} ({meta['epochs_chosen']})")
    if meta.get("n_phrases"):
        typer.echo(f"phrases: {meta['n_phrases']:,} word pairs joined")
    typer.echo(f"deterministic: {'yes' if meta['deterministic'] else 'no'}")
    typer.echo(f"seconds: {meta['seconds']:.1f}")
    typer.echo(f"output: {out}")


# --- train -----------------------------------------------------------------------------


@app.command()
@with_options(
    TrainConfig,
    run=True,
    groups={"embeddings": W2V},
    spell={
        "embeddings.source": "--embeddings",
        "embeddings.format": "--embeddings-format",
        "embeddings.limit": "--embeddings-limit",
    },
    skip=("embeddings.seed",),  # word2vec takes the run's --seed
)
def train(ctx: typer.Context, as_json: JsonOption = False, **settings: Any) -> None:
    """Train a GRU classifier with Ray Train and publish it to the model store."""
    from sentiment.evaluation import category_table, results_table
    from sentiment.train_job import run_training

    def build() -> TrainConfig:
        if not settings["data"]:  # required, unless --config holds it
            raise typer.BadParameter(
                "missing: give a dataset prepared by `sentiment-jobs prepare`",
                ctx=ctx,
                param_hint="'--data'",
            )
        return from_options(TrainConfig, {**ctx.params, "embeddings__seed": settings["seed"]})

    cfg = _settings_or_submit(ctx, "train", TrainConfig, build)
    if cfg is None:
        return
    with user_errors():
        result = run_training(cfg, address=_driver_address(settings["address"]))
    m = result.metrics
    if as_json:
        _echo_json(model_id=result.model_id, model_dir=str(result.model_dir), metrics=m)
        return
    typer.echo("\n" + results_table([m]))
    if m.get("test"):
        typer.echo("\ntest accuracy per category:\n" + category_table(m["test"]))
    typer.echo(f"\nmodel {result.model_id} -> {result.model_dir}")


# --- evaluate --------------------------------------------------------------------------


@app.command()
def evaluate(
    model: Annotated[
        list[str],
        typer.Option(help="Model directory (repeat for several), 'latest', or a model id."),
    ],
    data: Annotated[str, typer.Option(help="Prepared dataset to evaluate on.")],
    split: Annotated[list[str], typer.Option(help="Splits to evaluate (repeatable).")] = [
        "train",
        "test",
    ],
    store: StoreOption = "",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the metrics (JSON) and confusion PNGs here."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute accuracy, cross-entropy, confusion and per-category accuracy of trained models."""
    from sentiment.evaluation import category_table, results_table
    from sentiment.training import evaluate_models

    with user_errors():
        rows = evaluate_models(model, data, split, store=store, output=output)
    if as_json:
        _echo_json(models=rows)
        return
    typer.echo(results_table(rows))
    typer.echo("\ncalibration: expected calibration error over 10 bins of p_positive")
    for row in rows:
        for name in split:
            temperature = row.get("temperature", 1.0)
            note = f" (temperature {temperature:g})" if temperature != 1.0 else ""
            typer.echo(f"{row['model']:<24} {name:<8} ECE {100 * row[name]['ece']:5.2f} %{note}")
    for row in rows:
        for name in split:
            if row.get(name, {}).get("per_category"):
                typer.echo(
                    f"\n{row['model']} {name} accuracy per category:\n" + category_table(row[name])
                )


# --- ensemble --------------------------------------------------------------------------


@app.command()
def ensemble(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Model directories, model ids in the store, or 'latest' (two or more)."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the ensemble here instead of publishing it to the store."
        ),
    ] = None,
    store: StoreOption = "",
) -> None:
    """Join trained models into one ensemble model directory (probabilities averaged)."""
    from sentiment.ensemble import build_ensemble

    with user_errors():
        model_id, directory = build_ensemble(models, store=store, output=output)
    typer.echo(f"model {model_id} -> {directory}")


# --- score -----------------------------------------------------------------------------


@app.command()
@with_options(ScoreConfig, run=True)
def score(
    ctx: typer.Context,
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Required: Parquet files, directories, globs or URIs.", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
    **settings: Any,
) -> None:
    """Score Parquet reviews with Ray Data and commit predictions to Parquet (safe to re-run)."""
    from sentiment.score_job import run_scoring

    def build() -> ScoreConfig:
        if not inputs:  # required, unless --config holds them
            raise typer.BadParameter(
                "missing: give the Parquet files, directories, globs or URIs to score",
                ctx=ctx,
                param_hint="'INPUTS...'",
            )
        return from_options(ScoreConfig, ctx.params)

    cfg = _settings_or_submit(ctx, "score", ScoreConfig, build)
    if cfg is None:
        return
    with user_errors():
        summary = run_scoring(cfg, address=_driver_address(settings["address"]))
    if as_json:
        _echo_json(output=summary.output, **summary.manifest)
        return
    _echo_score_summary(summary.output, summary.manifest)


def _echo_json(**summary: Any) -> None:
    typer.echo(json.dumps(summary, indent=2, default=str))


def _echo_score_summary(output: str, manifest: dict) -> None:
    run = manifest["this_run"]
    typer.echo(f"run {manifest['run_id']} ({manifest['mode']}) model {manifest['model_id']}")
    typer.echo(
        f"rows in {run['rows_in']}  rows out {run['rows_out']}  in {manifest['seconds']:.1f} s "
        f"({manifest['rows_per_s'] or 0:.0f} rows/s)"
    )
    statuses = "  ".join(
        f"{k} {v}"
        for k, v in run.items()
        if k not in ("rows_in", "rows_out") and isinstance(v, int) and v
    )
    typer.echo(f"status: {statuses or 'no rows'}")
    for s in manifest["skipped"]:
        typer.echo(f"skipped {s['path']}: {s['reason']}")
    for uri in run.get("changed_inputs", []):
        typer.echo(f"changed since scored, scored again: {uri}")
    for uri in run.get("removed_inputs", []):
        typer.echo(f"no longer an input, its rows dropped: {uri}")
    ignored = manifest.get("ignored", [])
    if ignored:
        links = sum("link" in i["reason"] for i in ignored)
        typer.echo(
            f"ignored {len(ignored)} paths ({len(ignored) - links} seen twice, {links} links "
            "not followed or broken; listed in _manifest.json)"
        )
    typer.echo(
        f"output {output} ({len(manifest['files'])} files, {manifest['totals'].get('rows_out', 0)} rows)"
    )


# --- Ray jobs: train/score --address, and `jobs list|status|logs|stop` --------------------


def _settings_or_submit(ctx: typer.Context, kind: str, cls: type, build: Callable[[], Any]):
    """The run's settings (from --config, else `build()` from the options); None once
    submitted as a Ray job instead of run here."""
    address, wait, python = (ctx.params[name] for name in RUN_OPTIONS)
    with user_errors():
        config = ctx.params["config"]
        cfg = settings_from(config, cls, ctx, (*RUN_OPTIONS, "as_json")) if config else build()
        submitting = _submitting(address)
    if not submitting:
        return cfg
    _submit_job(kind, cfg, address, wait, python, ctx.params.get("as_json", False))
    return None


def _submitting(address: str) -> bool:
    """Submit a Ray job? Only to a dashboard (http://), and not from inside a Ray job
    (RAY_ADDRESS is set there for the driver: the command runs on that job's cluster)."""
    from sentiment.cluster import SUBMIT, address_kind
    from sentiment.submit import inside_ray_job

    if address_kind(address) != SUBMIT:
        return False
    if inside_ray_job():
        logging.getLogger(__name__).info("inside a Ray job: running here, not submitting")
        return False
    return True


def _driver_address(address: str) -> str:
    """The cluster to join as a driver (host:port or auto), or "" for a local Ray."""
    from sentiment.cluster import DRIVER, address_kind

    return address if address_kind(address) == DRIVER else ""


def _submit_job(
    kind: str, cfg: object, address: str, wait: bool, python: str, as_json: bool = False
) -> None:
    """Submit the run as a Ray job; with `wait` follow its logs (on stderr with `as_json`,
    whose summary is the job's id, status and cluster) and exit with its outcome."""
    from sentiment import submit

    with user_errors():
        cluster = submit.connect(address)
        job_id = submit.submit(cluster, kind, cfg, python)
    typer.echo(f"submitted {job_id} to {cluster.address}", err=True)
    if not wait:
        if as_json:
            _echo_json(job_id=job_id, status="PENDING", address=cluster.address)
        else:
            typer.echo(job_id)
        return
    try:
        with user_errors():
            state = submit.follow(
                cluster, job_id, lambda text: typer.echo(text, nl=False, err=as_json)
            )
            failed = state.status != "SUCCEEDED"
            reason = submit.job_failure_reason(cluster, state) if failed else ""
    except KeyboardInterrupt:
        typer.echo(f"\n{job_id} still runs; stop it: sentiment-jobs jobs stop {job_id}", err=True)
        raise typer.Exit(code=130) from None
    if failed:
        typer.secho(f"error: job {job_id} {state.status.lower()}: {reason}", err=True, fg="red")
        raise typer.Exit(code=1)
    typer.echo(f"job {job_id} succeeded", err=True)
    if as_json:
        _echo_json(job_id=job_id, status=state.status, address=cluster.address)


jobs_app = typer.Typer(help="List, inspect, follow and stop Ray jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
JobId = Annotated[str, typer.Argument(help="Submission id (sentiment-<kind>-...).")]


def _cluster(address: str):
    from sentiment import submit
    from sentiment.cluster import LOCAL, SUBMIT, address_kind

    kind = address_kind(address)
    if kind == LOCAL:
        raise SentimentError("no Ray cluster given: use --address or set RAY_ADDRESS")
    if kind != SUBMIT:
        raise SentimentError(
            f"Ray jobs are managed through the dashboard: give http://<head>:8265, not {address}"
        )
    return submit.connect(address)


@jobs_app.command("list")
def jobs_list(address: JobsAddressOption = "") -> None:
    """Submitted jobs, oldest first: id, status, start time, entrypoint."""
    import time

    from sentiment import submit

    with user_errors():
        states = submit.list_jobs(_cluster(address))
    if not states:
        typer.echo("no jobs")
    for s in states:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.start_time or 0))
        typer.echo(f"{s.job_id}  {s.status:<9}  {started}  {s.entrypoint[:80]}")


@jobs_app.command("status")
def jobs_status(job_id: JobId, address: JobsAddressOption = "") -> None:
    """A job's status and Ray's message about it."""
    from sentiment import submit

    with user_errors():
        s = submit.status(_cluster(address), job_id)
    typer.echo(f"{s.job_id} {s.status}" + (f": {s.message.splitlines()[0]}" if s.message else ""))


@jobs_app.command("logs")
def jobs_logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the job ends.")] = False,
    address: JobsAddressOption = "",
) -> None:
    """A job's logs so far, or followed until it ends."""
    from sentiment import submit

    with user_errors():
        cluster = _cluster(address)
        if follow:
            submit.follow(cluster, job_id, lambda text: typer.echo(text, nl=False))
        else:
            typer.echo(submit.logs(cluster, job_id), nl=False)


@jobs_app.command("stop")
def jobs_stop(job_id: JobId, address: JobsAddressOption = "") -> None:
    """Stop a job and wait (up to a minute) until it has ended."""
    from sentiment import submit

    with user_errors():
        s = submit.stop(_cluster(address), job_id)
    typer.echo(f"{s.job_id} {s.status}")


# --- models: the model store -----------------------------------------------------------


models_app = typer.Typer(
    help="List the model store, show a model, point LATEST at one.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(store: StoreOption = "", as_json: JsonOption = False) -> None:
    """Every model in the store, oldest first: id, variant, accuracies, when published;
    `*` marks the one LATEST names."""
    from sentiment.catalog import list_models
    from sentiment.config import store_location

    with user_errors():
        models = list_models(store_location(store))
    if as_json:
        _echo_json(store=store_location(store), models=models)
        return
    if not models:
        typer.echo(f"no models in {store_location(store)}")
    for m in models:
        mark = "*" if m["latest"] else " "
        if "problem" in m:
            typer.echo(f"{mark} {m['model_id']:<24} unreadable: {m['problem']}")
            continue
        accuracy = "  ".join(
            f"{split} {100 * m[f'{split}_accuracy']:.2f} %"
            for split in ("val", "test")
            if m.get(f"{split}_accuracy") is not None
        )
        typer.echo(f"{mark} {m['model_id']:<24} {m['published'] or '':<20}  {accuracy}")


@models_app.command("show")
def models_show(
    model: Annotated[
        str, typer.Argument(help="'latest', a model id in the store, a directory or a URI.")
    ] = "latest",
    store: StoreOption = "",
    as_json: JsonOption = False,
) -> None:
    """A model's settings, data, embeddings, calibration and versions (its lineage), and
    its metrics."""
    from sentiment.catalog import show_model
    from sentiment.config import store_location

    with user_errors():
        shown = show_model(model, store_location(store))
    if as_json:
        _echo_json(**shown)
        return
    config, metrics = shown["config"], shown["metrics"]
    training = config.get("training") or {}
    members = (config.get("ensemble") or {}).get("members", [])
    rows = [
        ("model", shown["model_id"] + ("  (LATEST)" if shown["latest"] else "")),
        ("location", shown["location"]),
        ("shape", _flat(config.get("model") or {"ensemble of": len(members)})),
        ("data", f"{training.get('data')}  seed {training.get('seed')}"),
        ("embeddings", _flat(config.get("embeddings") or {})),
        ("calibration", _flat(config.get("calibration") or {})),
        *(
            (split, f"accuracy {100 * metrics[split]['accuracy']:.2f} %")
            for split in ("train", "val", "test")
            if (metrics.get(split) or {}).get("accuracy") is not None
        ),
        ("versions", _flat(config.get("versions") or {})),
    ]
    for name, value in rows:
        if value:
            typer.echo(f"{name:<12}{value}")


def _flat(d: dict[str, Any]) -> str:
    """`key value` pairs of a dict's plain values, for one line."""
    return "  ".join(f"{k} {v}" for k, v in d.items() if not isinstance(v, (dict, list)))


@models_app.command("set-latest")
def models_set_latest(
    model_id: Annotated[str, typer.Argument(help="A model id in the store (gru-8289c5a4a067).")],
    store: StoreOption = "",
) -> None:
    """Point the store's LATEST at a model (promote or roll back), once its files are
    checked to digest to its id."""
    from sentiment.catalog import set_latest
    from sentiment.config import store_location

    with user_errors():
        before = set_latest(model_id, store_location(store))
    typer.echo(f"LATEST {before or '(none)'} -> {model_id}")
