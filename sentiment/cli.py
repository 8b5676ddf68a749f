"""The `sentiment-jobs` command line (the only typer importer).

Each command turns its options into a config dataclass, calls one library
function, and prints a summary. A `SentimentError` becomes one line on stderr
and exit status 1, so a scheduler sees the failure and the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from sentiment import datasets, download
from sentiment.config import (
    BAD_FILE_POLICIES,
    LR_SCHEDULES,
    READOUTS,
    VARIANTS,
    VECTOR_FORMATS,
    EmbeddingConfig,
    ModelConfig,
    ScoreConfig,
    SentimentError,
    TextConfig,
    TrainConfig,
)

app = typer.Typer(
    help="Train GRU sentiment classifiers and score Parquet collections of reviews on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        logging.getLogger("gensim").setLevel(logging.WARNING)  # a line per word2vec step


RUN_OPTIONS = ("address", "wait", "python")  # where a run goes, not what it does


def choices(name: str, values: Sequence[str]) -> type[Enum]:
    """A Typer choice type from the library's own tuple of names."""
    return Enum(name, {v: v for v in values}, type=str)


def from_options(
    cls: type, params: dict[str, Any], prefix: str = "", groups: dict[str, str] | None = None
):
    """A config dataclass from a command's parameters, each named after the field it sets
    (`prefix` + field name; a nested dataclass field's own fields take `groups[field]`).
    Fields without a parameter keep their defaults."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if callable(f.default_factory) else None):
            nested = (groups or {}).get(f.name, prefix)
            kwargs[f.name] = from_options(f.default_factory, params, nested, groups)
            continue
        value = params.get(prefix + f.name)
        if value is None and prefix + f.name not in params:
            continue
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
    import json

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
    """Turn a known user error into one line and a non-zero exit."""
    try:
        yield
    except SentimentError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None


# Options shared by `train`, `score` and `jobs ...` (defined in the Ray jobs section below).
AddressOption = Annotated[
    str,
    typer.Option(
        envvar="RAY_ADDRESS",
        help="http://<head>:8265: submit as a Ray job there. <head>:<port> or 'auto': run "
        "here as a driver of that cluster. Empty or 'local': a Ray started in-process. "
        "Paths must be reachable from the cluster.",
    ),
]
WaitOption = Annotated[
    bool,
    typer.Option(help="With --address: follow the job's logs and exit with its outcome."),
]
ConfigOption = Annotated[
    str,
    typer.Option(
        "--config",
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
PythonOption = Annotated[
    str,
    typer.Option(
        envvar="SENTIMENT_JOBS_PYTHON",
        help="With --address: the cluster's Python (default: the one it runs Ray with).",
    ),
]


# --- commands are added below, one section each -------------------------------------


# --- prepare ---------------------------------------------------------------------------


class SourceFormat(str, Enum):
    auto = "auto"
    amazon = "amazon"
    dlstudio = "dlstudio"
    fasttext = "fasttext"
    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"


class SplitName(str, Enum):
    train = "train"
    test = "test"


class DownloadName(str, Enum):
    amazon_multi_domain = "amazon-multi-domain"


@app.command()
def prepare(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Dataset directory to write.", show_default=False)
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
        Path | None,
        typer.Option(
            help="Where an archive's unlabeled reviews go (Parquet, a `text` column: extra text "
            "for word2vec). [default: <output>.unlabeled]",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        SourceFormat, typer.Option("--format", help="Source format; auto: from each path.")
    ] = SourceFormat.auto,
    text_column: Annotated[str, typer.Option(help="Table sources: the text column.")] = "text",
    label_column: Annotated[
        str, typer.Option(help="Table sources: the label column (0/1, pos/neg).")
    ] = "label",
    id_column: Annotated[
        str | None, typer.Option(help="Table sources: a unique id column (default: file/row).")
    ] = None,
    category_column: Annotated[
        str | None, typer.Option(help="Table sources: a category column (default: file name).")
    ] = None,
    split_column: Annotated[
        str | None, typer.Option(help="Table sources: a train/test column (default: by hash).")
    ] = None,
    group_column: Annotated[
        str | None,
        typer.Option(
            help="Table sources: rows that must share a split (e.g. a product id): the hashed "
            "test split and training's validation carve keep each group on one side."
        ),
    ] = None,
    rating_column: Annotated[
        str | None, typer.Option(help="Table sources: a star-rating column.")
    ] = None,
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
) -> None:
    """Read review sources into one canonical Parquet dataset with a train/test split."""
    columns = datasets.Columns(
        text=text_column,
        label=label_column,
        id=id_column,
        category=category_column,
        split=split_column,
        rating=rating_column,
        group=group_column,
    )
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
                columns=columns,
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

# The word2vec options of `embeddings` and `train`: one spelling (--w2v-*) and, like
# every option here, the default of the config field it sets (config.py).
W2vDim = Annotated[
    int, typer.Option("--w2v-dim", min=1, help="word2vec vector size (pretrained: their own).")
]
W2vMinCount = Annotated[
    int, typer.Option("--w2v-min-count", min=1, help="word2vec: drop rarer words.")
]
W2vWindow = Annotated[int, typer.Option("--w2v-window", min=1, help="word2vec context window.")]
W2vEpochs = Annotated[
    int | None,
    typer.Option(
        "--w2v-epochs",
        min=1,
        show_default=False,
        help="word2vec passes over the text. [default: about 36 M token updates, 5 to 40]",
    ),
]
W2vSkipgram = Annotated[
    bool, typer.Option("--w2v-skipgram/--w2v-cbow", help="word2vec architecture.")
]
W2vWorkers = Annotated[
    int, typer.Option("--w2v-workers", min=1, help="word2vec threads; only 1 is reproducible.")
]
W2vNegative = Annotated[
    int, typer.Option("--w2v-negative", min=1, help="word2vec negative samples.")
]
W2vSample = Annotated[
    float, typer.Option("--w2v-sample", help="word2vec down-sampling threshold of frequent words.")
]
W2vPhrases = Annotated[
    float,
    typer.Option(
        "--w2v-phrases",
        help="Join word pairs that gensim Phrases scores above this ('not_good') before "
        "word2vec; training and scoring join the same pairs (phrases.txt). 0: none.",
    ),
]
W2vCorpus = Annotated[
    list[str] | None,
    typer.Option(
        "--w2v-corpus",
        help="More text for word2vec: Parquet files/directories with a 'text' column "
        "(repeatable), e.g. `prepare`'s <dataset>.unlabeled. Held-out reviews are left out.",
    ),
]
VectorsFormat = choices("VectorsFormat", VECTOR_FORMATS)
FORMAT_HELP = (
    "Format of the pretrained vectors; auto: from the name and first line. keyedvectors "
    "(gensim .kv/.model) is a pickle that can run code when loaded: never guessed, only for "
    "files you trust."
)
LIMIT_HELP = "Pretrained: keep the first N vectors of the file."
_E = EmbeddingConfig()


@app.command()
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
            help="Directory for vectors.npy, vocab.txt and embeddings.json.", show_default=False
        ),
    ],
    w2v_source: Annotated[
        str,
        typer.Option(
            "--source",
            help="'train': word2vec on the train split; or pretrained vectors (word2vec "
            ".bin/.txt/.vec, GloVe .txt, gensim KeyedVectors, a saved embeddings dir).",
        ),
    ] = _E.source,
    w2v_format: Annotated[VectorsFormat, typer.Option("--format", help=FORMAT_HELP)] = _E.format,
    w2v_limit: Annotated[int | None, typer.Option("--limit", min=1, help=LIMIT_HELP)] = _E.limit,
    w2v_seed: Annotated[int, typer.Option("--seed", help="word2vec random seed.")] = _E.seed,
    w2v_dim: W2vDim = _E.dim,
    w2v_min_count: W2vMinCount = _E.min_count,
    w2v_window: W2vWindow = _E.window,
    w2v_epochs: W2vEpochs = _E.epochs,
    w2v_sg: W2vSkipgram = _E.sg,
    w2v_workers: W2vWorkers = _E.workers,
    w2v_negative: W2vNegative = _E.negative,
    w2v_sample: W2vSample = _E.sample,
    w2v_phrases: W2vPhrases = _E.phrases,
    w2v_corpus: W2vCorpus = None,
) -> None:
    """Train word2vec on a dataset's train split, or load pretrained vectors; save them."""
    from sentiment.embeddings import build_embeddings, dataset_texts, save_embeddings

    with user_errors():
        config = from_options(EmbeddingConfig, ctx.params, "w2v_")
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

Variant = choices("Variant", VARIANTS)
Readout = choices("Readout", READOUTS)
LrSchedule = choices("LrSchedule", LR_SCHEDULES)
ResourceTimeout = Annotated[
    float,
    typer.Option(
        "--resource-timeout",
        envvar="SENTIMENT_RESOURCE_TIMEOUT",
        help="Seconds to wait for room for the workers or actors (or for a stalled run to "
        "move) before failing with the missing resource named.",
    ),
]
_T, _M = TrainConfig(), ModelConfig()


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[
        str, typer.Option(help="Prepared dataset (directory or URI) from `prepare`.")
    ] = _T.data,
    variant: Annotated[Variant, typer.Option("--model", help="GRU variant.")] = _M.variant,
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = _T.epochs,
    lr: Annotated[float, typer.Option(help="Adam(W) learning rate.")] = _T.lr,
    lr_schedule: Annotated[LrSchedule, typer.Option(help="Learning rate over the run.")] = (
        _T.lr_schedule
    ),
    grad_clip: Annotated[
        float, typer.Option(help="Largest gradient norm (0: no clipping).")
    ] = _T.grad_clip,
    batch_size: Annotated[
        int, typer.Option(help="Reviews per step, length-bucketed.")
    ] = _T.batch_size,
    hidden_size: Annotated[int, typer.Option(help="GRU state size.")] = _M.hidden_size,
    layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = _M.layers,
    dropout: Annotated[
        float, typer.Option(help="Dropout on the words, between layers and before the head.")
    ] = _M.dropout,
    bidirectional: Annotated[
        bool, typer.Option(help="Also read right to left (always on for grub).")
    ] = _M.bidirectional,
    readout: Annotated[
        Readout,
        typer.Option(help="How the states become one vector: last token, max/mean over time."),
    ] = _M.readout,
    freeze_embeddings: Annotated[
        bool,
        typer.Option(
            "--freeze-embeddings/--trainable-embeddings", help="Keep the word vectors fixed."
        ),
    ] = _M.freeze_embeddings,
    reset_after: Annotated[
        bool, typer.Option(help="gruh: reset gate after U_h h, as nn.GRU.")
    ] = _M.reset_after,
    word_bias: Annotated[
        bool,
        typer.Option(help="Add a learned per-word score, averaged over the review, to the logit."),
    ] = _M.word_bias,
    word_dropout: Annotated[
        float, typer.Option(help="Training: share of words blanked out at random.")
    ] = _M.word_dropout,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = _T.weight_decay,
    label_smoothing: Annotated[
        float, typer.Option(help="Label smoothing of the loss.")
    ] = _T.label_smoothing,
    embedding_lr: Annotated[
        float, typer.Option(help="With --trainable-embeddings: their learning rate (0: --lr).")
    ] = _T.embedding_lr,
    max_tokens: Annotated[
        int, typer.Option(help="Known tokens kept per review (head).")
    ] = TextConfig().max_tokens,
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Part of the train split held out for validation (whole groups: a product's "
            "reviews are all held out or all trained on)."
        ),
    ] = _T.val_fraction,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="With --val-fraction: fit a temperature on the validation reviews so that "
            "p_positive is calibrated (stored in config.json, applied when scoring)."
        ),
    ] = _T.calibrate,
    ensemble: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train this many models (seeds --seed, --seed+1, ...) and publish their "
            "ensemble (probabilities averaged) as the model.",
        ),
    ] = _T.ensemble,
    seed: Annotated[int, typer.Option(help="Seed for weights, shuffling and word2vec.")] = _T.seed,
    w2v_source: Annotated[
        str,
        typer.Option(
            "--embeddings",
            help="'train' (word2vec on the train split), or pretrained vectors / a saved "
            "embeddings dir.",
        ),
    ] = _E.source,
    w2v_format: Annotated[
        VectorsFormat, typer.Option("--embeddings-format", help=FORMAT_HELP)
    ] = _E.format,
    w2v_limit: Annotated[
        int | None, typer.Option("--embeddings-limit", min=1, help=LIMIT_HELP)
    ] = _E.limit,
    w2v_dim: W2vDim = _E.dim,
    w2v_min_count: W2vMinCount = _E.min_count,
    w2v_window: W2vWindow = _E.window,
    w2v_epochs: W2vEpochs = _E.epochs,
    w2v_sg: W2vSkipgram = _E.sg,
    w2v_workers: W2vWorkers = _E.workers,
    w2v_negative: W2vNegative = _E.negative,
    w2v_sample: W2vSample = _E.sample,
    w2v_phrases: W2vPhrases = _E.phrases,
    w2v_corpus: W2vCorpus = None,
    workers: Annotated[int, typer.Option(help="Ray Train workers (data-parallel).")] = _T.workers,
    min_workers: Annotated[
        int,
        typer.Option(
            help="Elastic: go on with as few as this many workers when nodes are lost "
            "(0: always --workers)."
        ),
    ] = _T.min_workers,
    use_gpu: Annotated[bool, typer.Option(help="One GPU per worker.")] = _T.use_gpu,
    gpus_per_worker: Annotated[
        float, typer.Option(help="GPUs per worker with --use-gpu.")
    ] = _T.gpus_per_worker,
    cpus_per_worker: Annotated[
        float, typer.Option(help="CPUs reserved per worker.")
    ] = _T.cpus_per_worker,
    threads_per_worker: Annotated[
        int, typer.Option("--threads", help="torch threads per worker (0: one per CPU reserved).")
    ] = _T.threads_per_worker,
    max_failures: Annotated[
        int,
        typer.Option(help="Worker or node failures to recover from (from the last checkpoint)."),
    ] = _T.max_failures,
    resource_timeout_s: ResourceTimeout = _T.resource_timeout_s,
    store: StoreOption = _T.store,
    storage_path: Annotated[
        str,
        typer.Option(
            help="Ray Train run storage (dir or URI); default $SENTIMENT_JOBS_HOME/train."
        ),
    ] = _T.storage_path,
    name: Annotated[
        str, typer.Option(help="Run name; the same name resumes an interrupted run.")
    ] = _T.name,
    config: ConfigOption = "",
    address: AddressOption = "",
    wait: WaitOption = True,
    python: PythonOption = "",
) -> None:
    """Train a GRU classifier with Ray Train and publish it to the model store."""
    from sentiment.evaluation import category_table, results_table
    from sentiment.train_job import run_training

    def build() -> TrainConfig:
        if not data:
            raise SentimentError("give --data: a dataset prepared by `sentiment-jobs prepare`")
        params = {**ctx.params, "w2v_seed": seed}  # word2vec takes the run's seed
        return from_options(TrainConfig, params, "", {"embeddings": "w2v_"})

    cfg = _settings_or_submit(ctx, "train", TrainConfig, build)
    if cfg is None:
        return
    with user_errors():
        result = run_training(cfg, address=_driver_address(address))
    m = result.metrics
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
        Path | None, typer.Option(help="Write the metrics (JSON) and confusion PNGs here.")
    ] = None,
) -> None:
    """Recompute accuracy, cross-entropy, confusion and per-category accuracy of trained models."""
    from sentiment.evaluation import category_table, results_table
    from sentiment.training import evaluate_models

    with user_errors():
        rows = evaluate_models(model, data, split, store=store, output=output)
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


BadFilePolicy = choices("BadFilePolicy", BAD_FILE_POLICIES)
_S = ScoreConfig()


@app.command()
def score(
    ctx: typer.Context,
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Parquet files, directories, globs or URIs.", show_default=False),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Model directory or URI, or 'latest' or a model id in the store.")
    ] = _S.model,
    output: Annotated[
        str,
        typer.Option(help="Output directory (default: next to the first input, <name>.scored)."),
    ] = _S.output,
    text_column: Annotated[
        str, typer.Option(help="Column holding the review text.")
    ] = _S.text_column,
    id_column: Annotated[
        str,
        typer.Option(
            help="Column identifying rows (default: review_id if present, else a row_id is "
            "added from file and row)."
        ),
    ] = _S.id_column,
    batch_size: Annotated[
        int, typer.Option(help="Rows per Ray Data batch (sorted by length inside).")
    ] = _S.batch_size,
    model_batch_size: Annotated[
        int, typer.Option(help="Reviews per forward pass; 0: 128 on CPU, 1024 on a GPU.")
    ] = _S.model_batch_size,
    actors: Annotated[
        int,
        typer.Option(
            help="A fixed number of scoring actors (0: from --min-actors up to --max-actors)."
        ),
    ] = _S.actors,
    min_actors: Annotated[
        int,
        typer.Option(
            min=0,
            help="The pool never shrinks below this (0: as many as the alive nodes hold at "
            "the start: one per GPU, or per CPU core).",
        ),
    ] = _S.min_actors,
    max_actors: Annotated[
        int,
        typer.Option(
            min=0,
            help="The pool may grow to this many as an autoscaler adds nodes (0: no more "
            "than at the start).",
        ),
    ] = _S.max_actors,
    gpus_per_actor: Annotated[
        float, typer.Option(help="GPUs per actor (-1: 1 when the cluster has GPUs, else 0).")
    ] = _S.gpus_per_actor,
    cpus_per_actor: Annotated[
        float, typer.Option(help="CPUs reserved per actor (0: leave one CPU to read/write).")
    ] = _S.cpus_per_actor,
    max_tokens: Annotated[
        int,
        typer.Option(
            help="Known tokens read per review; longer ones are truncated and marked (0: the "
            "model's setting, 400 by default)."
        ),
    ] = _S.max_tokens,
    resource_timeout_s: ResourceTimeout = _S.resource_timeout_s,
    rows_per_file: Annotated[
        int,
        typer.Option(
            min=1,
            help="Input rows (whole row groups) read, scored and written together: at most "
            "this many per output file, and what a lost node makes the run score again.",
        ),
    ] = _S.rows_per_file,
    max_attempts: Annotated[
        int,
        typer.Option(
            min=1,
            help="Attempts of the pipeline when nodes are lost, each over what is left unscored.",
        ),
    ] = _S.max_attempts,
    incremental: Annotated[
        bool, typer.Option(help="Only score input files the committed manifest does not list.")
    ] = _S.incremental,
    on_bad_file: Annotated[
        BadFilePolicy,
        typer.Option(help="fail: stop on a bad input file; skip: record it in the manifest."),
    ] = _S.on_bad_file,
    store: StoreOption = _S.store,
    address: AddressOption = "",
    wait: WaitOption = True,
    python: PythonOption = "",
    config: ConfigOption = "",
) -> None:
    """Score Parquet reviews with Ray Data and commit predictions to Parquet (safe to re-run)."""
    from sentiment.score_job import run_scoring

    def build() -> ScoreConfig:
        if not inputs:
            raise SentimentError("give the Parquet files, directories, globs or URIs to score")
        return from_options(ScoreConfig, ctx.params)

    cfg = _settings_or_submit(ctx, "score", ScoreConfig, build)
    if cfg is None:
        return
    with user_errors():
        summary = run_scoring(cfg, address=_driver_address(address))
    _echo_score_summary(summary.output, summary.manifest)


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
        cfg = settings_from(config, cls, ctx, RUN_OPTIONS) if config else build()
        submitting = _submitting(address)
    if not submitting:
        return cfg
    _submit_job(kind, cfg, address, wait, python)
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


def _submit_job(kind: str, cfg: object, address: str, wait: bool, python: str) -> None:
    from sentiment import submit

    with user_errors():
        cluster = submit.connect(address)
        job_id = submit.submit(cluster, kind, cfg, python)
    typer.echo(f"submitted {job_id} to {cluster.address}", err=True)
    if not wait:
        typer.echo(job_id)
        return
    try:
        with user_errors():
            state = submit.follow(cluster, job_id, lambda text: typer.echo(text, nl=False))
            failed = state.status != "SUCCEEDED"
            reason = submit.job_failure_reason(cluster, state) if failed else ""
    except KeyboardInterrupt:
        typer.echo(f"\n{job_id} still runs; stop it: sentiment-jobs jobs stop {job_id}", err=True)
        raise typer.Exit(code=130) from None
    if failed:
        typer.secho(f"error: job {job_id} {state.status.lower()}: {reason}", err=True, fg="red")
        raise typer.Exit(code=1)
    typer.echo(f"job {job_id} succeeded", err=True)


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
def jobs_list(address: AddressOption = "") -> None:
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
def jobs_status(job_id: JobId, address: AddressOption = "") -> None:
    """A job's status and Ray's message about it."""
    from sentiment import submit

    with user_errors():
        s = submit.status(_cluster(address), job_id)
    typer.echo(f"{s.job_id} {s.status}" + (f": {s.message.splitlines()[0]}" if s.message else ""))


@jobs_app.command("logs")
def jobs_logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the job ends.")] = False,
    address: AddressOption = "",
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
def jobs_stop(job_id: JobId, address: AddressOption = "") -> None:
    """Stop a job and wait (up to a minute) until it has ended."""
    from sentiment import submit

    with user_errors():
        s = submit.stop(_cluster(address), job_id)
    typer.echo(f"{s.job_id} {s.status}")
