"""Model directories and the model store.

A model directory is the only thing scoring needs:

    config.json        model/text/embedding settings, training settings, versions, model_id,
                       the calibration temperature (if fitted)
    model.safetensors  every weight, the embedding matrix included (no pickle)
    vocab.txt          one word per line; line i is row i of the embedding matrix
    phrases.txt        word pairs joined into one token before the look-up (if any)
    metrics.json       per-epoch history and final metrics
    loss_curve.png, confusion_test.png

An ensemble directory is the same, with every member's weights in model.safetensors
(`members.<i>.`) over one vocabulary, and `ensemble` in config.json instead of `model`.

The store is a directory or a URI (pyarrow filesystems: local, s3://, gs://, ...)
holding `<model_id>/` directories and a `LATEST` file naming the newest one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sentiment.config import (
    MODEL_SIZE_LIMITS,
    ModelConfig,
    SentimentError,
    TextConfig,
    from_dict,
    is_model_id,
)
from sentiment.models import Ensemble, SentimentGRU, build_model
from sentiment.storage import filesystem, storage_error
from sentiment.text import Vocabulary

WEIGHTS, CONFIG, VOCAB, METRICS = "model.safetensors", "config.json", "vocab.txt", "metrics.json"
PHRASES = "phrases.txt"
LATEST = "LATEST"


@dataclass
class LoadedModel:
    """A model directory loaded into memory."""

    model_id: str
    model: SentimentGRU | Ensemble
    vocab: Vocabulary
    text: TextConfig


def versions() -> dict[str, str]:
    import numpy
    import pyarrow

    from sentiment import __version__

    return {
        "sentiment_jobs": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
    }


def write_weights(directory: Path, model: torch.nn.Module, vocab: Vocabulary) -> None:
    """Weights as safetensors and the vocabulary as text: nothing here is ever unpickled."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    (directory / VOCAB).write_text(vocab.to_text(), encoding="utf-8")
    if vocab.phrases:
        (directory / PHRASES).write_text(vocab.phrases.to_text(), encoding="utf-8")


def read_vocab(
    directory: Path, text: TextConfig | None = None, rows: int | None = None
) -> Vocabulary:
    """vocab.txt with the phrases.txt beside it; `text` says how many pairs there must be,
    `rows` how many words (the model's vocab_size; default: the most a config may give).

    Both are read a line at a time and refused at the first line past those counts (or too
    long for a word), so what is held follows the counts, not the files' sizes.
    """
    from sentiment.embeddings import read_phrases, read_vocab_file

    phrases = read_phrases(directory, None if text is None else text.phrases)
    if text is not None and text.phrases != len(phrases or ()):
        raise SentimentError(
            f"{directory / PHRASES}: the model was trained with {text.phrases} word pairs, "
            f"the file has {len(phrases or ())}"
        )
    path = directory / VOCAB
    if rows is None:
        rows = MODEL_SIZE_LIMITS["vocab_size"][1]
        more = f"{path}: more than {rows:,} words, the most a model may have"
    else:
        more = f"{path}: more words than the model's {rows:,} rows"
    return read_vocab_file(path, phrases, rows, more)


def compute_model_id(directory: Path, variant: str) -> str:
    """A stable id: the variant and a digest of the weights, vocabulary, phrases, model
    settings and calibration (the last two only where present, so older ids stay)."""
    digest = hashlib.sha256()
    for name in (WEIGHTS, VOCAB, PHRASES):
        if name != PHRASES or (directory / name).exists():
            digest.update((directory / name).read_bytes())
    config = json.loads((directory / CONFIG).read_text())
    shape = config["ensemble"] if "ensemble" in config else config["model"]
    digest.update(json.dumps([shape, config["text"]], sort_keys=True).encode())
    if "calibration" in config:
        digest.update(json.dumps(config["calibration"]["temperature"]).encode())
    return f"{variant}-{digest.hexdigest()[:12]}"


def write_model_dir(
    directory: Path,
    model: SentimentGRU,
    vocab: Vocabulary,
    text: TextConfig,
    extra: dict[str, Any],
) -> str:
    """Write a complete model directory and return its model_id (also stored in config.json)."""
    write_weights(directory, model, vocab)
    config = {
        "model": _asdict(model.config),
        "text": _asdict(text),
        **extra,
        "versions": versions(),
    }
    _write_json(directory / CONFIG, config)
    config["model_id"] = compute_model_id(directory, model.config.variant)
    _write_json(directory / CONFIG, config)
    return config["model_id"]


def write_ensemble_dir(
    directory: Path, members: list[LoadedModel], extra: dict[str, Any] | None = None
) -> str:
    """An ensemble model directory of loaded models (their probabilities averaged); its id.

    The members must read text alike (same vocabulary, phrases and max_tokens): one
    tokenization then serves them all. Models trained on one dataset with the same word2vec
    settings qualify, whatever their variant, seeds or word2vec seed.
    """
    if len(members) < 2:
        raise SentimentError("an ensemble needs at least two models")
    first = members[0]
    for m in members[1:]:
        if m.vocab.words != first.vocab.words or _pairs(m.vocab) != _pairs(first.vocab):
            raise SentimentError(
                f"{m.model_id}: its vocabulary differs from {first.model_id}'s; ensemble "
                "members need one vocabulary (same dataset and word2vec settings)"
            )
        if m.text != first.text:
            raise SentimentError(f"{m.model_id}: its text settings differ from {first.model_id}'s")
    for m in members:  # an ensemble of ensembles would average unevenly
        if isinstance(m.model, Ensemble):
            raise SentimentError(f"{m.model_id} is an ensemble already; list its members")
        if m.model.temperature != 1.0:
            raise SentimentError(
                f"{m.model_id} is calibrated (temperature {m.model.temperature:g}); "
                "ensembles average the members' own probabilities: use uncalibrated models"
            )
    ensemble = Ensemble([m.model for m in members])
    write_weights(directory, ensemble, first.vocab)
    config = {
        "ensemble": {
            "combine": "mean of the members' probabilities",
            "members": [
                {"model_id": m.model_id, "model": _asdict(m.model.config)} for m in members
            ],
        },
        "text": _asdict(first.text),
        **(extra or {}),
        "versions": versions(),
    }
    _write_json(directory / CONFIG, config)
    config["model_id"] = compute_model_id(directory, "ensemble")
    _write_json(directory / CONFIG, config)
    return config["model_id"]


def _pairs(vocab: Vocabulary) -> list[tuple[str, str]]:
    return vocab.phrases.pairs if vocab.phrases else []


@dataclass(frozen=True)
class ModelFiles:
    """A model directory's files, checked, with nothing of the weights read but their
    header (`check_model_dir`)."""

    directory: Path
    config: dict[str, Any]
    model_cfgs: list[ModelConfig]
    text: TextConfig
    temperature: float
    vocab: Vocabulary

    @property
    def ensemble(self) -> bool:
        return "ensemble" in self.config


def check_model_dir(directory: str | Path) -> ModelFiles:
    """Every file of a model directory checked against the others, the weights read
    only as far as their header: what the driver does before any Ray work, so that a
    bad model is one line there and never a failure inside the scoring actors."""
    directory = Path(directory)
    for name in (CONFIG, WEIGHTS, VOCAB):
        if not (directory / name).is_file():
            raise SentimentError(f"{directory}: not a model directory (missing {name})")
    for name, limit in ((CONFIG, MAX_CONFIG_BYTES), (VOCAB, MAX_VOCAB_BYTES)):
        if (directory / name).stat().st_size > limit:
            raise SentimentError(f"{directory / name}: larger than {limit:,} bytes; refusing it")
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        shapes = (
            [m["model"] for m in config["ensemble"]["members"]]
            if "ensemble" in config
            else [config["model"]]
        )
        model_cfgs = [from_dict(ModelConfig, shape) for shape in shapes]
        text_cfg = from_dict(TextConfig, config["text"])
        temperature = float(config.get("calibration", {}).get("temperature", 1.0))
    except SentimentError as exc:  # a size or setting out of bounds
        raise SentimentError(f"{directory / CONFIG}: {exc}") from None
    except RecursionError:
        raise SentimentError(f"{directory / CONFIG}: nested too deeply; refusing it") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SentimentError(f"{directory / CONFIG}: unreadable model config ({exc})") from None
    if not temperature > 0:
        raise SentimentError(f"{directory / CONFIG}: calibration temperature must be > 0")
    ensemble = "ensemble" in config
    check_weights(directory / WEIGHTS, model_cfgs, ensemble)  # before allocating the model
    try:
        vocab = read_vocab(directory, text_cfg, rows=max(c.vocab_size for c in model_cfgs))
    except ValueError as exc:
        raise SentimentError(f"{directory / VOCAB}: unreadable vocabulary ({exc})") from None
    for model_cfg in model_cfgs:
        if len(vocab) != model_cfg.vocab_size:
            raise SentimentError(
                f"{directory / VOCAB}: {len(vocab)} words but the model has "
                f"{model_cfg.vocab_size} rows"
            )
    return ModelFiles(directory, config, model_cfgs, text_cfg, temperature, vocab)


def load_model_dir(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a model directory from its files alone (safetensors, JSON, text)."""
    files = check_model_dir(directory)
    model = _build(files.model_cfgs, files.ensemble)
    model.temperature = files.temperature
    weights = files.directory / WEIGHTS
    try:
        state = load_file(str(weights), device="cpu")
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors raises its own error types
        raise SentimentError(f"{weights}: cannot load weights ({exc})") from None
    model.to(device).eval()
    model_id = files.config.get("model_id", files.directory.name)
    return LoadedModel(model_id, model, files.vocab, files.text)


MAX_CONFIG_BYTES = 1 << 20
MAX_VOCAB_BYTES = 1 << 30
MAX_HEADER_BYTES = 1 << 24  # a safetensors header of a few hundred tensors is a few kB
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}  # I64 only where int64 is due


def _build(cfgs: list[ModelConfig], ensemble: bool) -> torch.nn.Module:
    members = [build_model(c) for c in cfgs]
    return Ensemble(members) if ensemble else members[0]


def check_weights(path: Path, cfgs: list[ModelConfig], ensemble: bool = False) -> None:
    """The tensors listed in a safetensors header (read alone, nothing allocated) are
    exactly the ones `cfgs` build, with the same shapes and byte ranges inside the file."""
    with torch.device("meta"):  # shapes without storage
        state = _build(cfgs, ensemble).state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items()}
    integer = {k for k, v in state.items() if not v.dtype.is_floating_point}
    cfg = cfgs[0]
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {length} does not fit a {size}-byte file")
            header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        tensors = {
            k: (v["dtype"], tuple(v["shape"]), tuple(v["data_offsets"])) for k, v in header.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SentimentError(f"{path}: cannot load weights (not safetensors: {exc})") from None
    data_bytes = size - 8 - length
    sizes = ", ".join(
        f"{k} {getattr(cfg, k)}" for k in ("vocab_size", "embed_dim", "hidden_size", "layers")
    )
    missing, extra = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected)
    if missing:
        raise SentimentError(f"{path}: no tensor {missing[0]}, which config.json ({sizes}) needs")
    if extra:
        raise SentimentError(f"{path}: tensor {extra[0]} is not part of config.json's model")
    for name, (dtype, shape, (begin, end)) in sorted(tensors.items()):
        if shape != expected[name]:
            raise SentimentError(
                f"{path}: tensor {name} has shape {list(shape)} but config.json ({sizes}) "
                f"gives {list(expected[name])}"
            )
        if name in integer and dtype != "I64":
            raise SentimentError(f"{path}: tensor {name} has dtype {dtype}, not I64")
        if name not in integer and dtype not in SAFETENSORS_BYTES:
            raise SentimentError(f"{path}: tensor {name} has dtype {dtype}, not a float type")
        nbytes = math.prod(shape) * SAFETENSORS_BYTES.get(dtype, 8)
        if not 0 <= begin <= end <= data_bytes or end - begin != nbytes:
            raise SentimentError(
                f"{path}: tensor {name} claims bytes {begin}..{end} of {data_bytes} "
                f"({nbytes} needed)"
            )


# --- the store ----------------------------------------------------------------------------


def publish(local_dir: Path, store: str, model_id: str) -> str:
    """Copy a finished model directory into the store, then point LATEST at it.

    A reader following LATEST never sees a half-written model. On a local disk the copy
    lands under a temporary name and is renamed into place. Object stores have no rename
    (S3 copies, object by object), so there the files go straight to `<model_id>/`,
    config.json last (a reader finds no model directory without it), and LATEST, a single
    PUT that is atomic, only once every file is there. A model id is a digest of the
    weights and settings: the same id means the same model, so writing over an earlier
    copy of it changes nothing a reader relies on.
    """
    import pyarrow.fs as pafs

    fs, root = filesystem(store)
    target = f"{root}/{model_id}"
    if isinstance(fs, pafs.LocalFileSystem):
        staging = f"{root}/.tmp-{model_id}-{uuid.uuid4().hex[:8]}"
        fs.create_dir(staging, recursive=True)
        pafs.copy_files(str(local_dir), staging, pafs.LocalFileSystem(), fs)
        if fs.get_file_info(target).type != pafs.FileType.NotFound:
            fs.delete_dir(target)  # same id = same weights: replacing it changes nothing
        fs.move(staging, target)
    else:
        files = [p for p in local_dir.iterdir() if p.is_file()]
        for item in sorted(files, key=lambda p: (p.name == CONFIG, p.name)):  # config.json last
            with open(item, "rb") as src, fs.open_output_stream(f"{target}/{item.name}") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    point_latest(fs, root, model_id)
    return target if "://" not in store else f"{store.rstrip('/')}/{model_id}"


def point_latest(fs, root: str, model_id: str) -> None:
    """Point the store's LATEST at `model_id`, in one step: a rename on a local disk, a
    single PUT on an object store. Readers see the old model id or the new one."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        _write_text_atomic(fs, f"{root}/{LATEST}", model_id + "\n")
    else:
        with fs.open_output_stream(f"{root}/{LATEST}") as f:
            f.write((model_id + "\n").encode())


def check_store(store: str) -> None:
    """Fail now if the store cannot be used: a missing bucket, an unreachable endpoint,
    refused credentials (an OSError, which `storage_error` describes). Training checks
    before it trains rather than when it publishes, hours later."""
    fs, root = filesystem(store)
    fs.get_file_info(f"{root}/{LATEST}")


def resolve_model(model: str, store: str) -> Path:
    """A local model directory for `model`: a path, a URI (downloaded), "latest" in the
    store, or the model_id of a model in the store (`gru-8289c5a4a067`)."""
    location, model_id = locate_model(model, store)
    return fetch_model(location, model_id, store)


def locate_model(model: str, store: str) -> tuple[str, str | None]:
    """Where `model` is, as a local path or a URI, and the model id the directory must
    hold when it was found through the store. "latest" is read here, once: every node
    given the location then uses the same model, whatever LATEST says later."""
    if is_model_id(model) and not Path(model).exists():
        return f"{store.rstrip('/')}/{model}", model
    if model != "latest":
        return model, None
    fs, root = filesystem(store)
    try:
        with fs.open_input_stream(f"{root}/{LATEST}") as f:
            raw = f.read(4096)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError) and storage_error(exc):
            raise  # credentials, permissions, network: not a missing model
        raise SentimentError(
            f"no trained model in the store {store} (no {LATEST}); train one first "
            "or pass --model DIR"
        ) from None
    model_id = raw.decode("utf-8", errors="replace").strip()
    if not _is_store_name(model_id):
        raise SentimentError(
            f"{store.rstrip('/')}/{LATEST}: {model_id[:100]!r} is not the name of a model "
            "in the store (a model id such as gru-8289c5a4a067; no paths); refusing it"
        )
    return f"{store.rstrip('/')}/{model_id}", model_id


def is_remote(location: str) -> bool:
    """Whether a location is an object store's URI (not a local path or file://)."""
    return "://" in location and not location.startswith("file://")


def fetch_model(location: str, model_id: str | None = None, store: str = "") -> Path:
    """The local model directory at `location` (see `locate_model`): a local one as it
    is (inside `store` when found through it), one on an object store as a checked copy
    in this machine's cache; `model_id`: the id it must hold."""
    if is_remote(location):
        return _download(location, model_id)
    path = Path(location.removeprefix("file://"))
    if not path.is_dir():
        raise SentimentError(f"{path}: model directory not found")
    if model_id and store:
        _check_inside_store(path, store)
    return path


def _is_store_name(name: str) -> bool:
    """A plain directory name: no separators, no `..`, nothing hidden."""
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}", name) is not None and ".." not in name


def _check_inside_store(path: Path, store: str) -> None:
    """A model found through the store must really be in it, every file of it: links out
    of it are refused."""
    root = os.path.realpath(store.removeprefix("file://"))
    for item in (path, *sorted(path.iterdir())):
        real = os.path.realpath(item)
        if not real.startswith(root + os.sep):
            raise SentimentError(
                f"{item}: leads to {real}, outside the model store {store}; refusing it"
            )


# --- models fetched from an object store ----------------------------------------------------


def model_cache() -> Path:
    """Where models fetched from an object store are kept: `<home>/cache/models/`."""
    from sentiment.config import local_home

    return local_home() / "cache" / "models"


@contextmanager
def cache_entry(cache: Path) -> Iterator[Path]:
    """A hidden sibling folder to fill, then renamed to `cache` in one step: a concurrent
    reader finds the whole entry or none (another run's, if it got there first, stays).
    Removed if the block fails."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with contextlib.suppress(OSError):
            tmp.rename(cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(uri: str, model_id: str | None = None) -> Path:
    """A local copy of the model directory at `uri`, checked against its content.

    Each use reads the store's config.json (a few kB: it holds the model id, a digest of
    everything that makes the model) and lists the directory (names, sizes, times). The
    cache entry (under `model_cache()`) is keyed by both, and taken only if its
    config.json is the same bytes and its files still digest to that id. So a model
    replaced or changed in the store is fetched again, and a copy damaged or planted in
    the cache is never trusted by its name; a download whose files do not digest to the
    id its config.json names is refused. `model_id`: the id the directory must hold
    (when found through the store).
    """
    fs, path = filesystem(uri)
    raw = _read_store_config(fs, path, uri)
    found = _config_model_id(raw, uri)
    if model_id is not None and found != model_id:
        raise SentimentError(f"{uri}/{CONFIG}: holds model {found}, not {model_id}; refusing it")
    files = _listing(fs, path, uri)
    state = hashlib.sha256(raw)
    state.update(json.dumps([(i.base_name, i.size, i.mtime_ns) for i in files]).encode())
    cache = model_cache() / f"{found}-{state.hexdigest()[:16]}"
    if _cached(cache, raw, found):
        return cache
    if cache.exists():  # not what its config.json says: damaged or planted, never used
        shutil.rmtree(cache, ignore_errors=True)
    with cache_entry(cache) as tmp:
        tmp.mkdir()
        for info in files:
            if info.base_name != CONFIG:  # the bytes read above: the files must match them
                with (
                    fs.open_input_stream(info.path) as src,
                    open(tmp / info.base_name, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst, 1 << 20)
        (tmp / CONFIG).write_bytes(raw)
        computed = _digest(tmp, raw)
        if computed != found:
            raise SentimentError(
                f"{uri}: its files digest to {computed}, not to the model_id {found} its "
                f"{CONFIG} names (damaged, tampered with, or replaced while being read); "
                "refusing it"
            )
    if not _cached(cache, raw, found):  # another run's entry won the rename and is wrong
        raise SentimentError(f"{cache}: cached model does not match {uri}; remove it")
    return cache


def _listing(fs, path: str, uri: str) -> list[Any]:
    """The plain files of plain names in a model directory (nothing lands elsewhere)."""
    import pyarrow.fs as pafs

    try:
        listed = fs.get_file_info(pafs.FileSelector(path))
    except FileNotFoundError:
        raise SentimentError(f"{uri}: model directory not found") from None
    return sorted(
        (i for i in listed if i.type == pafs.FileType.File and _is_store_name(i.base_name)),
        key=lambda i: i.base_name,
    )


def _read_store_config(fs, path: str, uri: str) -> bytes:
    try:
        with fs.open_input_stream(f"{path}/{CONFIG}") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise SentimentError(f"{uri}: model directory not found (no {CONFIG})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise SentimentError(f"{uri}/{CONFIG}: larger than {MAX_CONFIG_BYTES:,} bytes; refusing it")
    return raw


def _config_model_id(raw: bytes, uri: str) -> str:
    try:
        config = json.loads(raw.decode("utf-8"))
        model_id, _ = config["model_id"], _variant(config)
    except RecursionError:
        raise SentimentError(f"{uri}/{CONFIG}: nested too deeply; refusing it") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SentimentError(f"{uri}/{CONFIG}: unreadable model config ({exc})") from None
    if not isinstance(model_id, str) or not _is_store_name(model_id):
        raise SentimentError(f"{uri}/{CONFIG}: {str(model_id)[:100]!r} is not a model id")
    return model_id


def _variant(config: dict[str, Any]) -> str:
    """What `compute_model_id` takes as the variant: the model's, or `ensemble`."""
    if "ensemble" in config:
        return "ensemble"
    variant = config["model"]["variant"]
    if not isinstance(variant, str):
        raise TypeError(f"variant {variant!r} is not a name")
    return variant


def _digest(directory: Path, raw: bytes) -> str | None:
    """The model id the files of `directory` digest to, read with the config `raw`;
    None if a file is missing or unreadable."""
    try:
        return compute_model_id(directory, _variant(json.loads(raw.decode("utf-8"))))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cached(cache: Path, raw: bytes, model_id: str) -> bool:
    """The cache entry holds exactly the model of the store's config.json `raw`."""
    try:
        same = (cache / CONFIG).read_bytes() == raw
    except OSError:
        return False
    return same and _digest(cache, raw) == model_id


def _write_text_atomic(fs, path: str, text: str) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode())
    fs.move(tmp, path)  # a rename on local disks: readers see the old or the new pointer


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _asdict(cfg: Any) -> dict[str, Any]:
    from sentiment.config import to_dict

    return to_dict(cfg)
