"""Ensemble model directories: several trained models whose probabilities are averaged.

`build_ensemble` joins models already in a store or on disk; `train_ensemble` trains the
members (one seed each, word2vec's too) and joins them. The result is a model directory
like any other (`artifacts.write_ensemble_dir`): `score` and `evaluate` load it as one
model, and the Scorer tokenizes each review once for all members.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentiment import artifacts
from sentiment.config import SentimentError, TrainConfig, store_location
from sentiment.evaluation import summarize
from sentiment.models import Ensemble

log = logging.getLogger(__name__)


def build_ensemble(
    models: list[str], store: str = "", output: str | Path | None = None
) -> tuple[str, str]:
    """(model_id, directory) of the ensemble of `models` (directories, ids or 'latest'),
    written to `output` if given, else published to the store (and made its LATEST)."""
    members = [
        artifacts.load_model_dir(artifacts.resolve_model(m, store_location(store))) for m in models
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        model_id = artifacts.write_ensemble_dir(out, members)
        return model_id, _place(out, model_id, store, output)


def train_ensemble(cfg: TrainConfig):
    """Train `cfg.ensemble` models (seed, seed + 1, ...; word2vec's seed too), publish
    each, then publish their ensemble, calibrated on the validation carve if there is one."""
    from sentiment.train_job import (
        EVAL_BATCH,
        TrainResult,
        fit_calibration,
        load_splits,
        run_training,
    )
    from sentiment.training import length_batches, predict

    started = time.time()
    results = []
    for i in range(cfg.ensemble):
        member = dataclasses.replace(
            cfg,
            ensemble=1,
            seed=cfg.seed + i,
            embeddings=dataclasses.replace(cfg.embeddings, seed=cfg.embeddings.seed + i),
            calibrate=False,  # the ensemble is calibrated, not its members
            name=f"{cfg.name}-{i}" if cfg.name else "",
        )
        log.info("ensemble member %d of %d: seed %d", i + 1, cfg.ensemble, member.seed)
        results.append(run_training(member))
    store = store_location(cfg.store)
    members = [
        artifacts.load_model_dir(artifacts.resolve_model(r.model_id, store)) for r in results
    ]
    ensemble = Ensemble([m.model for m in members])
    vocab = members[0].vocab
    cfg = dataclasses.replace(cfg, text=members[0].text)  # with the phrases training found
    calibration = (
        fit_calibration(ensemble, cfg, vocab) if cfg.calibrate and cfg.val_fraction else None
    )
    splits = load_splits(cfg, vocab)
    metrics: dict[str, Any] = {
        "model": "ensemble",
        "members": [r.model_id for r in results],
        "seconds": time.time() - started,
        "train_seconds": sum(r.metrics["train_seconds"] for r in results),
        "calibration": calibration,
    }
    if calibration:
        ensemble.temperature = calibration["temperature"]
    for name, split in splits.items():
        batches = length_batches(split.lengths, EVAL_BATCH, shuffle=False)
        log_probs = predict(ensemble, split, batches, torch.device("cpu"))
        metrics[name] = summarize(split.labels, log_probs, split.categories, split.scored)
    metrics["member_accuracy"] = {
        name: [r.metrics[name]["accuracy"] for r in results if r.metrics.get(name)]
        for name in ("train", "val", "test")
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        extra = {"calibration": calibration} if calibration else {}
        model_id = artifacts.write_ensemble_dir(out, members, extra)
        metrics["model_id"] = model_id
        artifacts._write_json(out / artifacts.METRICS, metrics)
        target = _place(out, model_id, cfg.store, None)
    log.info(
        "ensemble %s: test accuracy %s (members %s)",
        model_id,
        metrics.get("test", {}).get("accuracy"),
        np.round(metrics["member_accuracy"]["test"], 4).tolist(),
    )
    return TrainResult(model_id=model_id, model_dir=target, metrics=metrics)


def _place(directory: Path, model_id: str, store: str, output: str | Path | None) -> str:
    if output is None:
        return artifacts.publish(directory, store_location(store), model_id)
    target = Path(output)
    if target.exists() and any(target.iterdir()):
        raise SentimentError(f"{target}: exists and is not empty")
    shutil.copytree(directory, target, dirs_exist_ok=True)
    return str(target)
