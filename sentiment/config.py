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


class SentimentError(Exception):
    """A user-facing error: bad input, bad settings, a missing file.

    The CLI prints its message as one line and exits non-zero; anything else is a bug.
    """


def default_home() -> str:
    """Where models and training runs go when no store is named.

    `SENTIMENT_JOBS_HOME` (a local path or a URI) wins; otherwise `~/.sentiment-jobs`.
    """
    return os.environ.get("SENTIMENT_JOBS_HOME") or str(Path.home() / ".sentiment-jobs")


def absolute(path: str) -> str:
    """A local path made absolute (Ray workers run in other directories); URIs as they are."""
    if not path or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


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
    max_tokens: int = 400  # known tokens kept per review (the head); longer ones are truncated
    phrases: int = 0  # word pairs joined into one token (phrases.txt); set from the embeddings

    def __post_init__(self) -> None:
        # The bound keeps a padded batch of 128 reviews under 100 MB of token ids.
        if not _integer(self.max_tokens) or not 1 <= self.max_tokens <= 100_000:
            raise SentimentError(
                f"max_tokens must be an integer in 1..100000, got {self.max_tokens!r}"
            )
        if not _integer(self.phrases) or self.phrases < 0:
            raise SentimentError(f"phrases must be an integer >= 0, got {self.phrases!r}")


# word2vec's quality on a small corpus grows with passes over it (validation accuracy
# downstream on 5,760 Amazon reviews: 20 epochs 87.4 %, 30 epochs 88.3 %, 40 epochs 88.6 %,
# means over seeds in tests/benchmarks/RESULTS.md), while a large corpus needs few: the
# default budget is 40 passes over those reviews' 911,392 tokens, 5 to 40 epochs.
WORD2VEC_UPDATES = 36_000_000


def word2vec_epochs(n_tokens: int) -> int:
    """Default word2vec epochs for a corpus of `n_tokens`: WORD2VEC_UPDATES over it, 5..40."""
    return max(5, min(40, -(-WORD2VEC_UPDATES // max(n_tokens, 1))))


@dataclass(frozen=True)
class EmbeddingConfig:
    """Where the word vectors come from: trained with gensim word2vec, or a pretrained file."""

    source: str = "train"  # "train", or a path to pretrained vectors / a saved embeddings dir
    format: str = "auto"  # auto | word2vec-binary | word2vec-text | glove | keyedvectors | saved
    dim: int = 300  # word2vec size when training (the Google News vectors are 300-d)
    min_count: int = 2
    window: int = 5
    negative: int = 5  # negative samples per positive pair (gensim's default)
    sample: float = 1e-3  # down-sampling threshold of frequent words (gensim's default)
    # > 0: before word2vec, gensim `Phrases` joins word pairs scoring above this threshold
    # (its default score; gensim's default threshold is 10) into one token, "not_good".
    phrases: float = 0.0
    # Parquet files/directories with a `text` column: more text for word2vec (never the
    # training dataset's held-out reviews: texts equal to one are left out).
    corpus: tuple[str, ...] = ()
    # None: enough epochs for about WORD2VEC_UPDATES token updates, 5 to 40 (`word2vec_epochs`).
    epochs: int | None = None
    # Skip-gram: on 6,400 reviews it beat CBOW (the Google News recipe) by 3.3 points of
    # validation accuracy downstream (tests/benchmarks/RESULTS.md); it trains slower.
    sg: bool = True
    seed: int = 0
    workers: int = 1  # 1 is reproducible run to run; more are faster but not
    limit: int | None = None  # keep at most this many pretrained vectors (file order)

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


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a GRU classifier; enough to rebuild it with `models.build_model`."""

    variant: str = "gru"
    vocab_size: int = 2
    embed_dim: int = 300
    hidden_size: int = 100
    layers: int = 1
    bidirectional: bool = False  # forced on for `grub`; available for gruh/pmgru too
    dropout: float = 0.0  # on the embedded words, between layers, before the head
    # last | max | mean | max-mean (both pools side by side): how the states become one vector
    readout: str = "max"
    word_dropout: float = 0.0  # training only: this share of a review's words become blanks
    # A learned score per word, averaged over the review and added to the logit: a linear
    # bag of words beside the GRU (what TF-IDF + logistic regression does, jointly trained).
    word_bias: bool = False
    freeze_embeddings: bool = True
    reset_after: bool = False  # gruh only: reset gate after U_h h (nn.GRU's form)

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
        for name in ("bidirectional", "freeze_embeddings", "reset_after", "word_bias"):
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
        total += (pools * directions * self.hidden_size + 1) * 2
        for layer in range(self.layers):
            size_in = self.embed_dim if layer == 0 else directions * self.hidden_size
            total += directions * gates * self.hidden_size * (size_in + self.hidden_size + 2)
        return total


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, optimisation and the Ray resources it runs on."""

    data: str = ""  # a prepared dataset (directory of Parquet written by `prepare`)
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    epochs: int = 6
    lr: float = 4e-3  # with batch 64 and cosine decay: best on validation (RESULTS.md)
    batch_size: int = 64
    lr_schedule: str = "cosine"  # cosine (decay to 0 over the run) | constant
    grad_clip: float = 5.0  # max gradient norm; GRUs on long reviews occasionally spike
    weight_decay: float = 0.0  # AdamW's decoupled decay (0: the same steps as Adam)
    label_smoothing: float = 0.0  # share of the target spread evenly over both classes
    embedding_lr: float = 0.0  # trainable embeddings: their learning rate (0: `lr`)
    val_fraction: float = 0.0  # carved from train by a hash of group_id, else review_id
    calibrate: bool = True  # with a validation carve: fit a temperature on it (config.json)
    ensemble: int = 1  # > 1: train this many models (seeds seed, seed+1, ...) and average them
    seed: int = 0
    # Ray resources
    workers: int = 1
    min_workers: int = 0  # > 0: elastic, go on with this many when nodes are lost; 0: fixed
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # only when use_gpu
    threads_per_worker: int = 0  # torch intra-op threads per worker; 0: one per CPU reserved
    max_failures: int = 0
    # Seconds to wait for room for the workers before failing with the resource named.
    resource_timeout_s: float = 600.0
    # where things go
    store: str = ""  # model store (local dir or URI); "" -> <home>/models
    storage_path: str = ""  # Ray Train run storage (local dir or URI); "" -> <home>/train
    name: str = ""  # run name; the same name resumes an interrupted run

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

    inputs: tuple[str, ...] = ()
    output: str = ""  # "" -> next to the first input: <input>.scored
    model: str = "latest"  # a model directory, or "latest" in the store
    store: str = ""
    text_column: str = "text"
    id_column: str = ""  # "" -> use review_id if present, else add one from file and row
    # Rows per Ray Data batch handed to a Scorer: it sorts them by length, so a larger
    # batch pads less (tests/benchmarks/RESULTS.md, one thread: 1,024 rows x 256 per pass,
    # the earlier defaults, 2,365 reviews/s; 4,096 x 128 3,103).
    batch_size: int = 4096
    model_batch_size: int = 0  # reviews per forward pass; 0 -> the Scorer's per-device default
    actors: int = 0  # a fixed pool of this many; 0 -> from min_actors to max_actors
    # 0 -> as many as the alive nodes hold at the start (one per GPU, or per CPU core).
    # A pool allowed below that lets Ray Data retire idle actors whose slots read tasks
    # then take (seen on one-CPU nodes): the pool could not grow back.
    min_actors: int = 0
    max_actors: int = 0  # room to grow as an autoscaler adds nodes; 0 -> min_actors
    gpus_per_actor: float = -1.0  # -1 -> 1 if the cluster has GPUs, else 0
    cpus_per_actor: float = 0.0  # 0 -> what each node holds after read and write tasks
    # Seconds to wait for the first actors to start, and for a stalled run to move again,
    # before failing with the missing resource named (an autoscaler may be adding nodes).
    resource_timeout_s: float = 600.0
    max_tokens: int = 0  # 0 -> the model's own setting
    incremental: bool = False
    on_bad_file: str = "fail"  # fail | skip
    # Input rows read, scored and written together (whole row groups): at most this many
    # per output file, and what a lost node makes a run score again.
    rows_per_file: int = 50_000
    max_attempts: int = 3  # of the pipeline, each over what the last left unscored

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
