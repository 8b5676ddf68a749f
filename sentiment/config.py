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
READOUTS = ("last", "max", "mean", "max-mean")


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
        if self.max_tokens < 1:
            raise SentimentError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.phrases < 0:
            raise SentimentError(f"phrases must be >= 0, got {self.phrases}")


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
        if self.hidden_size < 1 or self.layers < 1:
            raise SentimentError("hidden_size and layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise SentimentError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise SentimentError(f"word dropout must be in [0, 1), got {self.word_dropout}")


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
        if self.lr_schedule not in ("cosine", "constant"):
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
        if self.batch_size < 1 or self.model_batch_size < 0:
            raise SentimentError("--batch-size must be >= 1 and --model-batch-size >= 0")


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


# --- command-line form: how a config travels as a Ray job's arguments ----------------------


def to_argv(config: Any) -> list[str]:
    """`--field value` options for the settings that differ from the class defaults.

    Nested configs get a dotted prefix (`--model.hidden-size 8`), tuples repeat their
    option, booleans are `--flag` / `--model.no-flag`, None is `none`. `from_argv` reverses it.
    """
    return _argv(config, type(config)(), "")


def from_argv(cls: type[C], argv: list[str]) -> C:
    """Rebuild a config from `to_argv` options; bare words go to the class's one tuple field."""
    specs = _option_specs(cls, "", ())
    tuples = [k for k, (path, hint) in specs.items() if len(path) == 1 and _is_tuple(hint)]
    data: dict[str, Any] = {}
    args = iter(argv)
    for arg in args:
        key, has_value, text = arg[2:].partition("=")
        if not arg.startswith("--"):
            if len(tuples) != 1:
                raise SentimentError(f"unexpected argument {arg!r} for {cls.__name__}")
            key, text = tuples[0], arg
        elif key not in specs:
            raise SentimentError(f"unknown option --{key} for {cls.__name__}")
        elif isinstance(specs[key][1], bool):  # a flag: the spec holds its value
            _put(data, specs[key][0], specs[key][1])
            continue
        elif not has_value:
            text = next(args, None)
            if text is None:
                raise SentimentError(f"option --{key} needs a value")
        path, hint = specs[key]
        value = _parse_value(key, hint, text)
        _put(data, path, [*_get(data, path), value] if _is_tuple(hint) else value)
    return from_dict(cls, data)


def _argv(config: Any, default: Any, prefix: str) -> list[str]:
    out: list[str] = []
    for f in dataclasses.fields(config):
        value, base = getattr(config, f.name), getattr(default, f.name)
        name = f.name.replace("_", "-")
        if dataclasses.is_dataclass(value):
            out += _argv(value, base, f"{prefix}{name}.")
        elif value == base:
            continue
        elif isinstance(value, bool):
            out.append(f"--{prefix}{name}" if value else f"--{prefix}no-{name}")
        elif isinstance(value, tuple):
            for item in value:
                out += [f"--{prefix}{name}", str(item)]
        else:
            # repr keeps every digit of a float; None is spelled "none"
            text = "none" if value is None else repr(value) if isinstance(value, float) else value
            out += [f"--{prefix}{name}", str(text)]
    return out


def _option_specs(cls: Any, prefix: str, path: tuple[str, ...]) -> dict[str, Any]:
    """Option name -> (field path, type hint); a flag's entry holds its value instead of a hint."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key, hint = prefix + f.name.replace("_", "-"), hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(_option_specs(hint, f"{key}.", (*path, f.name)))
        elif hint is bool:
            out[key] = ((*path, f.name), True)
            out[prefix + "no-" + key.removeprefix(prefix)] = ((*path, f.name), False)
        else:
            out[key] = ((*path, f.name), hint)
    return out


def _is_tuple(hint: Any) -> bool:
    return _origin(hint) is tuple


def _parse_value(key: str, hint: Any, text: str) -> Any:
    args = typing.get_args(hint)
    if _origin(hint) is None and type(None) in args:  # Optional[X]
        if text == "none":
            return None
        hint = next(a for a in args if a is not type(None))
    if _is_tuple(hint):
        hint = typing.get_args(hint)[0]
    try:
        return hint(text) if hint in (int, float) else text
    except ValueError:
        raise SentimentError(f"option --{key}: expected {hint.__name__}, got {text!r}") from None


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for name in path[:-1]:
        data = data.get(name, {})
    return data.get(path[-1], [])


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        data = data.setdefault(name, {})
    data[path[-1]] = value
