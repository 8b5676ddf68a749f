"""Settings for every stage, as frozen dataclasses.

Configuration travels as these dataclasses: `asdict` into Ray Train's
`train_loop_config` or a job's arguments, and `from_dict` back on the other side.
A model directory stores its `ModelConfig`, `TextConfig` and `EmbeddingConfig`
so that loading rebuilds the model from the directory alone.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

VARIANTS = ("gru", "grub", "gruh", "pmgru")
READOUTS = ("last", "max", "mean")


class SentimentError(Exception):
    """A user-facing error: bad input, bad settings, a missing file.

    The CLI prints its message as one line and exits non-zero; anything else is a bug.
    """


def default_home() -> str:
    """Where models and training runs go when no store is named.

    `SENTIMENT_JOBS_HOME` (a local path or a URI) wins; otherwise `~/.sentiment-jobs`.
    """
    return os.environ.get("SENTIMENT_JOBS_HOME") or str(Path.home() / ".sentiment-jobs")


@dataclass(frozen=True)
class TextConfig:
    """How text becomes token ids; identical at training and scoring time."""

    tokenizer: str = "words-v1"  # the only one so far; recorded so a change is detectable
    max_tokens: int = 400  # known tokens kept per review (the head); longer ones are truncated

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise SentimentError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass(frozen=True)
class EmbeddingConfig:
    """Where the word vectors come from: trained with gensim word2vec, or a pretrained file."""

    source: str = "train"  # "train", or a path to pretrained vectors / a saved embeddings dir
    format: str = "auto"  # auto | word2vec-binary | word2vec-text | glove | keyedvectors | saved
    dim: int = 300  # word2vec size when training (the Google News vectors are 300-d)
    min_count: int = 2
    window: int = 5
    epochs: int = 10
    sg: bool = False  # CBOW, as the Google News vectors
    seed: int = 0
    workers: int = 1  # 1 is reproducible run to run; more are faster but not
    limit: int | None = None  # keep at most this many pretrained vectors (file order)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a GRU classifier; enough to rebuild it with `models.build_model`."""

    variant: str = "gru"
    vocab_size: int = 2
    embed_dim: int = 300
    hidden_size: int = 100
    layers: int = 1
    bidirectional: bool = False  # forced on for `grub`; available for gruh/pmgru too
    dropout: float = 0.0
    readout: str = "max"  # last | max | mean: how the sequence of states becomes one vector
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
        if self.hidden_size < 1 or self.layers < 1:
            raise SentimentError("hidden_size and layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise SentimentError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, optimisation and the Ray resources it runs on."""

    data: str = ""  # a prepared dataset (directory of Parquet written by `prepare`)
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    epochs: int = 6
    lr: float = 2e-3
    batch_size: int = 32
    grad_clip: float = 5.0  # max gradient norm; GRUs on long reviews occasionally spike
    val_fraction: float = 0.0  # carved from the train split by a hash of review_id
    seed: int = 0
    # Ray resources
    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # only when use_gpu
    threads_per_worker: int = 0  # torch intra-op threads per worker; 0: one per CPU reserved
    max_failures: int = 0
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
        if not 0.0 <= self.val_fraction < 1.0:
            raise SentimentError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.workers < 1:
            raise SentimentError(f"workers must be >= 1, got {self.workers}")
        if not self.store:
            object.__setattr__(self, "store", f"{default_home()}/models")
        if not self.storage_path:
            object.__setattr__(self, "storage_path", f"{default_home()}/train")


@dataclass(frozen=True)
class ScoreConfig:
    """One scoring run over Parquet input; the model's shape comes from its directory."""

    inputs: tuple[str, ...] = ()
    output: str = ""  # "" -> next to the first input: <input>.scored
    model: str = "latest"  # a model directory, or "latest" in the store
    store: str = ""
    text_column: str = "text"
    id_column: str = ""  # "" -> use review_id if present, else add one from file and row
    batch_size: int = 1024  # rows per Ray Data batch handed to a Scorer
    model_batch_size: int = 128  # reviews per forward pass inside the Scorer
    actors: int = 0  # 0 -> one per GPU, or one per CPU core on a CPU cluster
    gpus_per_actor: float = -1.0  # -1 -> 1 if the cluster has GPUs, else 0
    cpus_per_actor: float = 0.0  # 0 -> chosen so read and write tasks keep a CPU
    max_tokens: int = 0  # 0 -> the model's own setting
    incremental: bool = False
    on_bad_file: str = "fail"  # fail | skip
    rows_per_file: int = 250_000  # bounds output file size

    def __post_init__(self) -> None:
        if self.on_bad_file not in ("fail", "skip"):
            raise SentimentError(f"--on-bad-file must be fail or skip, got {self.on_bad_file!r}")
        if self.batch_size < 1 or self.model_batch_size < 1:
            raise SentimentError("batch sizes must be >= 1")
        if not self.store:
            object.__setattr__(self, "store", f"{default_home()}/models")


C = TypeVar("C")


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
