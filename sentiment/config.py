"""Settings for every stage, as frozen dataclasses.

Configuration travels as these dataclasses: `to_dict` into Ray Train's
`train_loop_config` or a submitted job's `--config` JSON, and `from_dict` back.
A model directory stores its `ModelConfig`, `TextConfig` and `EmbeddingConfig`
so that loading rebuilds the model from the directory alone.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

VARIANTS = ("gru", "grub", "gruh", "pmgru")
READOUTS = ("last", "max", "mean", "max-mean")
VECTOR_FORMATS = ("auto", "word2vec-binary", "word2vec-text", "glove", "keyedvectors", "saved")
LR_SCHEDULES = ("cosine", "constant")  # cosine: decay to 0 over the run
BAD_FILE_POLICIES = ("fail", "skip")


def setting(default: Any = dataclasses.MISSING, help: str = "", **option: Any) -> Any:
    """A config field that is also a command-line option (cli.py builds the options from
    these): its help, and Typer's extras in `option`: `option` (its spelling when not
    --<field-name>), `choices` (the allowed names), `min`, `envvar`."""
    return field(default=default, metadata={"help": help, **option})


class SentimentError(Exception):
    """A user-facing error: bad input, bad settings, a missing file.

    The CLI prints its message as one line and exits non-zero; anything else is a bug.
    """


def default_home() -> str:
    """Where models and training runs go when no store is named.

    `SENTIMENT_JOBS_HOME` (a local path or a URI) wins; otherwise `~/.sentiment-jobs`.
    """
    return os.environ.get("SENTIMENT_JOBS_HOME") or str(Path.home() / ".sentiment-jobs")


def local_home() -> Path:
    """The home on this machine, for caches: `default_home()`, or `~/.sentiment-jobs` when
    that is a URI (s3://): a cache is only worth having on a local disk."""
    home = default_home()
    return Path.home() / ".sentiment-jobs" if "://" in home else Path(home)


def absolute(path: str) -> str:
    """A local path made absolute (Ray workers run in other directories); URIs as they are."""
    if not path or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def is_model_id(name: str) -> bool:
    """`<variant>-<12 hex digits>`, as a model id is made (`gru-8289c5a4a067`)."""
    return re.fullmatch(r"[a-z]+-[0-9a-f]{12}", name) is not None


def store_location(store: str) -> str:
    """The model store: as given, or `<home>/models` (resolved where the work runs)."""
    return store or f"{default_home()}/models"


def storage_location(storage_path: str) -> str:
    """Ray Train's run storage: as given, or `<home>/train`."""
    return storage_path or f"{default_home()}/train"


@dataclass(frozen=True)
class TextConfig:
    """How text becomes token ids; identical at training and scoring time."""

    tokenizer: str = "words-v1"  # the only one so far; recorded so a change is detectable
    max_tokens: int = setting(400, "Known tokens kept per review (the head); longer ones are cut.")
    phrases: int = 0  # word pairs joined into one token (phrases.txt); set from the embeddings

    def __post_init__(self) -> None:
        # The bound keeps a padded batch of 128 reviews under 100 MB of token ids.
        if not _integer(self.max_tokens) or not 1 <= self.max_tokens <= 100_000:
            raise SentimentError(
                f"max_tokens must be an integer in 1..100000, got {self.max_tokens!r}"
            )
        if not _integer(self.phrases) or self.phrases < 0:
            raise SentimentError(f"phrases must be an integer >= 0, got {self.phrases!r}")


# word2vec on a small corpus gains with passes over it (tests/benchmarks/RESULTS.md), a large
# corpus needs few: the budget is 40 passes over the Amazon train split's 911,392 tokens.
WORD2VEC_UPDATES = 36_000_000


def word2vec_epochs(n_tokens: int) -> int:
    """Default word2vec epochs for a corpus of `n_tokens`: WORD2VEC_UPDATES over it, 5..40."""
    return max(5, min(40, -(-WORD2VEC_UPDATES // max(n_tokens, 1))))


@dataclass(frozen=True)
class EmbeddingConfig:
    """Where the word vectors come from: trained with gensim word2vec, or a pretrained file."""

    source: str = setting(
        "train",
        "'train': word2vec on the train split; or pretrained vectors (word2vec .bin/.txt/.vec, "
        "GloVe .txt, gensim KeyedVectors, a saved embeddings dir).",
        option="--source",
    )
    format: str = setting(
        "auto",
        "Format of the pretrained vectors; auto: from the name and first line. keyedvectors "
        "(gensim .kv/.model) is a pickle that can run code when loaded: never guessed, only "
        "for files you trust.",
        option="--format",
        choices=VECTOR_FORMATS,
    )
    dim: int = setting(300, "word2vec vector size (pretrained: their own).", min=1)
    min_count: int = setting(2, "word2vec: drop rarer words.", min=1)
    window: int = setting(5, "word2vec context window.", min=1)
    negative: int = setting(5, "word2vec negative samples per positive pair.", min=1)
    sample: float = setting(1e-3, "word2vec down-sampling threshold of frequent words.")
    phrases: float = setting(
        0.0,
        "Join word pairs that gensim Phrases scores above this ('not_good') before word2vec; "
        "training and scoring join the same pairs (phrases.txt). 0: none.",
    )
    corpus: tuple[str, ...] = setting(
        (),
        "More text for word2vec: Parquet files/directories with a 'text' column (repeatable), "
        "e.g. `prepare`'s <dataset>.unlabeled. Held-out reviews are left out.",
    )
    epochs: int | None = setting(
        None,
        "word2vec passes over the text. [default: about 36 M token updates, 5 to 40]",
        min=1,
        show_default=False,
    )
    # Skip-gram beat CBOW (the Google News recipe) on validation (RESULTS.md); it trains slower.
    sg: bool = setting(True, "word2vec architecture.", option="--w2v-skipgram/--w2v-cbow")
    seed: int = setting(0, "word2vec random seed.", option="--seed")
    workers: int = setting(1, "word2vec threads; only 1 is reproducible run to run.", min=1)

    limit: int | None = setting(
        None, "Pretrained: keep the first N vectors of the file.", option="--limit", min=1
    )

    def __post_init__(self) -> None:
        for name in ("dim", "min_count", "window", "negative", "workers"):
            if getattr(self, name) < 1:
                raise SentimentError(f"word2vec {name} must be >= 1, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise SentimentError(f"word2vec epochs must be >= 1, got {self.epochs}")
        if self.limit is not None and self.limit < 1:
            raise SentimentError(f"limit must be >= 1, got {self.limit}")
        if self.phrases < 0:
            raise SentimentError(f"phrases threshold must be >= 0, got {self.phrases}")
        if not 0.0 <= self.sample < 1.0:
            raise SentimentError(f"word2vec sample must be in [0, 1), got {self.sample}")


# Bounds on a model's sizes, far above any model this project trains (the largest
# vocabulary of pretrained vectors, Google News, has 3,000,000 words x 300): a config.json
# outside them is refused before anything is allocated.
MODEL_SIZE_LIMITS = {
    "vocab_size": (2, 20_000_000),
    "embed_dim": (1, 4096),
    "hidden_size": (1, 8192),
    "layers": (1, 16),
}
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32
MAX_NGRAM_PAIRS = 100_000_000


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a GRU classifier; enough to rebuild it with `models.build_model`."""

    variant: str = setting("gru", "GRU variant.", option="--model", choices=VARIANTS)
    vocab_size: int = 2
    embed_dim: int = 300
    hidden_size: int = setting(100, "GRU state size.")
    layers: int = setting(1, "Stacked recurrent layers.")
    bidirectional: bool = setting(False, "Also read right to left (always on for grub).")
    dropout: float = setting(0.0, "Dropout on the words, between layers and before the head.")
    readout: str = setting(
        "max",
        "How the states become one vector: the last token's, max or mean over time, or "
        "max-mean (both side by side).",
        choices=READOUTS,
    )
    word_dropout: float = setting(0.0, "Training: share of a review's words blanked out.")
    # A linear bag of words beside the GRU (what TF-IDF + logistic regression does).
    word_bias: bool = setting(
        False, "Add a learned per-word score, averaged over the review, to the logit."
    )
    freeze_embeddings: bool = setting(
        True, "Keep the word vectors fixed.", option="--freeze-embeddings/--trainable-embeddings"
    )
    reset_after: bool = setting(False, "gruh: the reset gate after U_h h, as nn.GRU.")
    # The n-gram head (sentiment.ngrams), fitted by the run when `TrainConfig.ngrams` says so:
    # False for models that have none (every model written before it existed).
    ngrams: bool = False
    ngram_pairs: int = 0  # word pairs it scores, beside the vocabulary's words
    ngram_weight: float = setting(
        0.5,
        "With --ngrams: the n-gram head's share of the log-odds of P(positive); the GRU has "
        "the rest.",
    )

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise SentimentError(
                f"unknown model variant {self.variant!r}; choose one of {', '.join(VARIANTS)}"
            )
        if self.readout not in READOUTS:
            raise SentimentError(
                f"unknown readout {self.readout!r}; choose one of {', '.join(READOUTS)}"
            )
        if self.variant == "grub" and not self.bidirectional:
            object.__setattr__(self, "bidirectional", True)
        for name, (low, high) in MODEL_SIZE_LIMITS.items():
            value = getattr(self, name)
            if not _integer(value) or not low <= value <= high:
                raise SentimentError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        if not _integer(self.ngram_pairs) or not 0 <= self.ngram_pairs <= MAX_NGRAM_PAIRS:
            raise SentimentError(
                f"ngram_pairs must be an integer in 0..{MAX_NGRAM_PAIRS}, got {self.ngram_pairs!r}"
            )
        if type(self.ngram_weight) not in (int, float) or not 0.0 <= self.ngram_weight <= 1.0:
            raise SentimentError(f"ngram_weight must be in [0, 1], got {self.ngram_weight!r}")
        for name in ("bidirectional", "freeze_embeddings", "reset_after", "word_bias", "ngrams"):
            if type(getattr(self, name)) is not bool:
                raise SentimentError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("dropout", "word_dropout"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0.0 <= value < 1.0:
                raise SentimentError(f"{name} must be in [0, 1), got {value!r}")
        if self.parameters() > MAX_PARAMETERS:
            raise SentimentError(
                f"{self.parameters():,} parameters (vocab_size x embed_dim and the GRU layers) "
                f"exceed the limit of {MAX_PARAMETERS:,}"
            )

    def parameters(self) -> int:
        """How many numbers the model holds (the embedding matrix included)."""
        directions = 2 if self.bidirectional else 1
        gates = 2 if self.variant == "pmgru" else 3
        pools = 2 if self.readout == "max-mean" else 1
        total = self.vocab_size * (self.embed_dim + int(self.word_bias))
        if self.ngrams:  # idf and coef per feature, the pairs' keys, the bias
            total += 2 * (self.vocab_size + self.ngram_pairs) + self.ngram_pairs + 1
        total += (pools * directions * self.hidden_size + 1) * 2
        for layer in range(self.layers):
            size_in = self.embed_dim if layer == 0 else directions * self.hidden_size
            total += directions * gates * self.hidden_size * (size_in + self.hidden_size + 2)
        return total


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, optimisation and the Ray resources it runs on."""

    data: str = setting("", "Required: the prepared dataset (directory or URI) from `prepare`.")
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    epochs: int = setting(6, "Passes over the training split.")
    lr: float = setting(4e-3, "Adam(W) learning rate.")
    batch_size: int = setting(64, "Reviews per step, length-bucketed.")
    lr_schedule: str = setting("cosine", "Learning rate over the run.", choices=LR_SCHEDULES)
    # GRUs on long reviews occasionally spike
    grad_clip: float = setting(5.0, "Largest gradient norm (0: no clipping).")
    ngrams: bool = setting(
        True,
        "Fit a linear head on the TF-IDF of each review's words and word pairs (logistic "
        "regression) before training the GRU; the model averages the two.",
        option="--ngrams/--no-ngrams",
    )
    ngram_c: float = setting(10.0, "The n-gram head's inverse L2 penalty (liblinear's C).")
    ngram_min_df: int = setting(
        2, "Word pairs the n-gram head keeps: those in at least this many reviews.", min=1
    )
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay.")
    label_smoothing: float = setting(0.0, "Label smoothing of the loss.")
    embedding_lr: float = setting(
        0.0, "With --trainable-embeddings: their learning rate (0: --lr)."
    )
    val_fraction: float = setting(
        0.0,
        "Part of the train split held out for validation, by a hash of group_id (a product's "
        "reviews all held out or all trained on), else review_id.",
    )
    calibrate: bool = setting(
        True,
        "With --val-fraction: fit a temperature on the validation reviews so that p_positive "
        "is calibrated (stored in config.json, applied when scoring).",
    )
    ensemble: int = setting(
        1,
        "Train this many models (seeds --seed, --seed+1, ...) and publish their ensemble "
        "(probabilities averaged) as the model.",
        min=1,
    )
    seed: int = setting(0, "Seed for weights, shuffling and word2vec.")
    # Ray resources
    workers: int = setting(1, "Ray Train workers (data-parallel).")
    min_workers: int = setting(
        0, "Elastic: go on with as few as this many workers when nodes are lost (0: fixed)."
    )
    use_gpu: bool = setting(False, "One GPU per worker.")
    cpus_per_worker: float = setting(1.0, "CPUs reserved per worker.")
    gpus_per_worker: float = setting(1.0, "GPUs per worker with --use-gpu.")
    threads_per_worker: int = setting(
        0, "torch threads per worker (0: one per CPU reserved).", option="--threads"
    )
    max_failures: int = setting(
        0, "Worker or node failures to recover from (from the last checkpoint)."
    )
    resource_timeout_s: float = setting(
        600.0,
        "Seconds to wait for room for the workers before failing with the missing resource named.",
        option="--resource-timeout",
        envvar="SENTIMENT_RESOURCE_TIMEOUT",
    )
    # where things go
    store: str = setting(
        "",
        "Model store (dir or URI; default $SENTIMENT_JOBS_HOME/models): where the model is "
        "published.",
        envvar="SENTIMENT_STORE",
    )
    storage_path: str = setting(
        "", "Ray Train run storage (dir or URI); default $SENTIMENT_JOBS_HOME/train."
    )
    name: str = setting("", "Run name; the same name resumes an interrupted run.")

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise SentimentError(f"learning rate must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise SentimentError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SentimentError(f"batch size must be >= 1, got {self.batch_size}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise SentimentError(
                f"lr schedule must be cosine or constant, got {self.lr_schedule!r}"
            )
        if self.ngram_c <= 0:
            raise SentimentError(f"ngram C must be > 0, got {self.ngram_c}")
        if self.ngram_min_df < 1:
            raise SentimentError(f"ngram min df must be >= 1, got {self.ngram_min_df}")
        if self.weight_decay < 0 or self.embedding_lr < 0:
            raise SentimentError("weight decay and embedding lr must be >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise SentimentError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise SentimentError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.workers < 1:
            raise SentimentError(f"workers must be >= 1, got {self.workers}")
        if not 0 <= self.min_workers <= self.workers:
            raise SentimentError(
                f"min workers must be between 0 and --workers ({self.workers}), "
                f"got {self.min_workers}"
            )
        if self.resource_timeout_s <= 0:
            raise SentimentError(
                f"--resource-timeout must be > 0 seconds, got {self.resource_timeout_s:g}"
            )
        if self.ensemble < 1:
            raise SentimentError(f"ensemble must be >= 1 models, got {self.ensemble}")


@dataclass(frozen=True)
class ScoreConfig:
    """One scoring run over Parquet input; the model's shape comes from its directory."""

    inputs: tuple[str, ...] = ()  # the command's arguments
    output: str = setting(
        "",
        "Output directory (default: next to the first input, <name>.scored).",
        option=("--output", "-o"),
    )
    model: str = setting(
        "latest", "Model directory or URI, or 'latest' or a model id in the store."
    )
    store: str = setting(
        "",
        "Model store (dir or URI; default $SENTIMENT_JOBS_HOME/models) for 'latest' and ids.",
        envvar="SENTIMENT_STORE",
    )
    text_column: str = setting("text", "Column holding the review text.")
    id_column: str = setting(
        "",
        "Column identifying rows (default: review_id if present, else a row_id is added "
        "from file and row).",
    )
    # Sorted by length inside: a larger batch pads less (RESULTS.md).
    batch_size: int = setting(4096, "Rows per Ray Data batch (sorted by length inside).")
    model_batch_size: int = setting(0, "Reviews per forward pass; 0: 128 on CPU, 1024 on a GPU.")
    actors: int = setting(
        0, "A fixed number of scoring actors (0: from --min-actors up to --max-actors)."
    )
    # A pool allowed below its start lets Ray Data retire idle actors whose slots read
    # tasks then take (seen on one-CPU nodes): the pool could not grow back.
    min_actors: int = setting(
        0,
        "The pool never shrinks below this (0: as many as the alive nodes hold at the "
        "start: one per GPU, or per CPU core).",
        min=0,
    )
    max_actors: int = setting(
        0,
        "The pool may grow to this many as an autoscaler adds nodes (0: no more than at "
        "the start).",
        min=0,
    )
    gpus_per_actor: float = setting(
        -1.0, "GPUs per actor (-1: 1 when the cluster has GPUs, else 0)."
    )
    cpus_per_actor: float = setting(
        0.0, "CPUs reserved per actor (0: what each node holds after read and write tasks)."
    )
    resource_timeout_s: float = setting(
        600.0,
        "Seconds to wait for actors to start, or for a stalled run to move, before failing "
        "with the missing resource named.",
        option="--resource-timeout",
        envvar="SENTIMENT_RESOURCE_TIMEOUT",
    )
    max_tokens: int = setting(
        0,
        "Known tokens read per review; longer ones are cut and marked (0: the model's "
        "setting, 400 by default).",
    )
    incremental: bool = setting(
        False, "Only score input files the committed manifest does not list."
    )
    content_digest: bool = setting(
        False,
        "Tell inputs apart by a SHA-256 of all their bytes (each input read once more per "
        "run), not by size, modification time and footer: --incremental then also sees a "
        "rewrite that keeps all three.",
    )
    on_bad_file: str = setting(
        "fail",
        "fail: stop on a bad input file; skip: record it in the manifest.",
        choices=BAD_FILE_POLICIES,
    )
    rows_per_file: int = setting(
        50_000,
        "Rows per output file: input rows (whole row groups; small files gathered) read, "
        "scored and written together, and what a lost node makes the run score again.",
        min=1,
    )
    union_schemas: bool = setting(
        False,
        "Inputs whose columns differ are written with the union of their columns (types "
        "promoted, missing columns as nulls); without it they are refused.",
    )
    max_attempts: int = setting(
        3, "Attempts of the pipeline when nodes are lost, each over what is left unscored.", min=1
    )

    def __post_init__(self) -> None:
        if self.on_bad_file not in BAD_FILE_POLICIES:
            raise SentimentError(f"--on-bad-file must be fail or skip, got {self.on_bad_file!r}")
        if self.batch_size < 1 or self.model_batch_size < 0:
            raise SentimentError("--batch-size must be >= 1 and --model-batch-size >= 0")
        if min(self.actors, self.min_actors, self.max_actors) < 0:
            raise SentimentError("--actors, --min-actors and --max-actors must be >= 0")
        if self.max_actors and self.max_actors < self.min_actors:
            raise SentimentError(
                f"--max-actors {self.max_actors} is below --min-actors {self.min_actors}"
            )
        if self.resource_timeout_s <= 0:
            raise SentimentError(
                f"--resource-timeout must be > 0 seconds, got {self.resource_timeout_s:g}"
            )
        if self.rows_per_file < 1 or self.max_attempts < 1:
            raise SentimentError("--rows-per-file and --max-attempts must be >= 1")


C = TypeVar("C")


def _integer(value: Any) -> bool:
    """An int (numpy's too) and not a bool: JSON can hold 1e6, "100" or true where a size goes."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    out = dataclasses.asdict(config)
    for k, v in out.items():
        if isinstance(v, tuple):
            out[k] = list(v)
    return out


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a (nested) config dataclass from `to_dict` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SentimentError(f"unknown {cls.__name__} settings: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        elif _origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _origin(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return None
    return origin
