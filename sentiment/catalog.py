"""The model store as a catalog: `sentiment-jobs models list|show|set-latest`.

Reads only what a store holds for each model (`<model_id>/config.json`, `metrics.json`)
and its `LATEST`, the same on a local disk and on an object store; pointing LATEST at
a model first checks that the model's files digest to its id.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow.fs as pafs

from sentiment.artifacts import (
    CONFIG,
    LATEST,
    MAX_CONFIG_BYTES,
    METRICS,
    _config_model_id,
    _digest,
    _is_store_name,
    _read_store_config,
    _variant,
    fetch_model,
    is_remote,
    locate_model,
    point_latest,
)
from sentiment.config import SentimentError
from sentiment.storage import filesystem

SPLITS = ("train", "val", "test")


def latest_id(store: str) -> str | None:
    """The model id LATEST names, or None when the store has no LATEST."""
    fs, root = filesystem(store)
    try:
        with fs.open_input_stream(f"{root}/{LATEST}") as f:
            return f.read(4096).decode("utf-8", errors="replace").strip() or None
    except FileNotFoundError:
        return None


def list_models(store: str) -> list[dict[str, Any]]:
    """Every model directory of the store, oldest first: id, variant, when it was
    published (its config.json's time), accuracies, training data, whether LATEST names
    it. A directory that is not a readable model is listed with its `problem`."""
    fs, root = filesystem(store)
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except FileNotFoundError:
        entries = []
    latest = latest_id(store)
    models = []
    for entry in entries:
        name = entry.base_name
        if entry.type != pafs.FileType.Directory or not _is_store_name(name):
            continue  # LATEST, and a publish still under way (`.tmp-*`)
        uri = f"{store.rstrip('/')}/{name}"
        try:
            raw = _read_store_config(fs, entry.path, uri)
            _config_model_id(raw, uri)  # a readable config naming a model id
            config = json.loads(raw)
        except SentimentError as exc:
            models.append({"model_id": name, "latest": name == latest, "problem": str(exc)})
            continue
        metrics = _read_metrics(fs, entry.path)
        info = fs.get_file_info(f"{entry.path}/{CONFIG}")
        models.append(
            {
                "model_id": config["model_id"],
                "variant": _variant(config),
                "published": _iso(info.mtime.timestamp()) if info.mtime else None,
                **{
                    f"{split}_accuracy": (metrics.get(split) or {}).get("accuracy")
                    for split in SPLITS
                },
                "data": (config.get("training") or {}).get("data"),
                "latest": name == latest,
            }
        )
    return sorted(models, key=lambda m: (m.get("published") or "", m["model_id"]))


def show_model(model: str, store: str) -> dict[str, Any]:
    """One model's config (settings, embeddings, calibration, versions: its lineage),
    its metrics (the per-epoch history left out), where it is and whether it is LATEST.
    `model`: 'latest', a model id in the store, a directory or a URI."""
    location, _ = locate_model(model, store)
    fs, path = filesystem(location)
    config = json.loads(_read_store_config(fs, path, location))
    metrics = _read_metrics(fs, path)
    metrics.pop("history", None)
    return {
        "model_id": config.get("model_id"),
        "location": location,
        "latest": config.get("model_id") == latest_id(store),
        "config": config,
        "metrics": metrics,
    }


def set_latest(model_id: str, store: str) -> str:
    """Point LATEST at `model_id` (a rollback, or a promotion), once its directory in the
    store is checked: inside the store, its config.json naming that id, its files
    digesting to it. Returns the model id LATEST named before (or None)."""
    if not _is_store_name(model_id):
        raise SentimentError(f"{model_id!r} is not a model id (such as gru-8289c5a4a067)")
    location = f"{store.rstrip('/')}/{model_id}"
    local = fetch_model(location, model_id, store)  # checked: downloaded, or inside the store
    if not is_remote(location):
        raw = (local / CONFIG).read_bytes()
        found = _config_model_id(raw, location)
        if found != model_id:
            raise SentimentError(f"{location}/{CONFIG}: holds model {found}, not {model_id}")
        if _digest(local, raw) != model_id:
            raise SentimentError(
                f"{location}: its files do not digest to {model_id} (damaged or changed); "
                "LATEST left as it was"
            )
    before = latest_id(store)
    fs, root = filesystem(store)
    point_latest(fs, root, model_id)
    return before


def _read_metrics(fs, path: str) -> dict[str, Any]:
    try:
        with fs.open_input_stream(f"{path}/{METRICS}") as f:
            raw = f.read(MAX_CONFIG_BYTES * 16 + 1)
    except FileNotFoundError:
        return {}
    if len(raw) > MAX_CONFIG_BYTES * 16:
        return {}
    try:
        metrics = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
