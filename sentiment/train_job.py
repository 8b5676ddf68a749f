"""The Ray Train loop around the plain-torch steps, and the whole training run.

`run_training` builds the embeddings on the driver, trains data-parallel with
`TorchTrainer` (one checkpoint per epoch, resumable under the same run name),
then turns the last checkpoint into a model directory in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentiment import artifacts
from sentiment.config import (
    SentimentError,
    TrainConfig,
    absolute,
    from_dict,
    storage_location,
    store_location,
    to_dict,
)
from sentiment.datasets import read_prepared, split_keys
from sentiment.evaluation import plot_confusion, plot_loss_curves, summarize
from sentiment.models import build_model, set_up_for
from sentiment.ngrams import NgramFit, fit_ngram_head
from sentiment.text import Phrases, Vocabulary
from sentiment.training import (
    EncodedSplit,
    configured_epoch,
    encode_split,
    in_validation,
    length_batches,
    make_optimizer,
    predict,
)

log = logging.getLogger(__name__)
STATE, OPTIMIZER = "state.json", "optimizer.pt"
EVAL_BATCH = 256


@dataclass
class TrainResult:
    model_id: str
    model_dir: str
    metrics: dict[str, Any]


def load_splits(
    cfg: TrainConfig, vocab: Vocabulary, names: tuple[str, ...] = ("train", "val", "test")
) -> dict[str, EncodedSplit]:
    """train (minus the validation carve), val (if val_fraction > 0) and test (if present);
    only those of `names` are encoded."""
    table = read_prepared(
        cfg.data, columns=["review_id", "text", "label", "category", "split", "group_id"]
    )
    rows = table.to_pydict()
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, (key, split) in enumerate(zip(split_keys(table), rows["split"], strict=True)):
        if split == "train" and in_validation(key, cfg.val_fraction):
            split = "val"
        if split in parts:
            parts[split].append(i)
    return {
        name: encode_split(
            [rows["text"][i] for i in idx],
            [rows["label"][i] for i in idx],
            [rows["category"][i] for i in idx],
            vocab,
            cfg.text.max_tokens,
        )
        for name, idx in parts.items()
        if idx and name in names
    }


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: shard, train, evaluate, checkpoint each epoch."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(TrainConfig, loop_config["train"])
    phrases = Phrases(map(tuple, loop_config["phrases"])) if loop_config["phrases"] else None
    vocab = Vocabulary(loop_config["vocab"], phrases)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Ray starts workers with OMP_NUM_THREADS = their CPUs; say it on purpose.
    torch.set_num_threads(cfg.threads_per_worker or max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()

    splits = load_splits(cfg, vocab)
    if "train" not in splits:
        raise SentimentError(f"{cfg.data}: no training reviews")
    model = build_model(cfg.model, loop_config["matrix"])
    if loop_config.get("ngrams") is not None:
        model.ngram.load_fit(loop_config["ngrams"])
    model = model.to(device)
    set_up_for(model, device, inference=False)
    optimizer = make_optimizer(model, cfg)
    start_epoch, history, resumed = _restore(ray.train.get_checkpoint(), model, optimizer, device)
    # Buffers (the n-gram head's) are fixed: nothing to broadcast at every step.
    ddp_model = ray.train.torch.prepare_model(
        model, move_to_device=False, parallel_strategy_kwargs={"broadcast_buffers": False}
    )

    for epoch in range(start_epoch, cfg.epochs):
        stats = configured_epoch(
            ddp_model, splits["train"], optimizer, device, cfg, epoch, rank, world
        )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "workers": world,
            "train": _all_reduce_stats(stats, world),
        }
        final = epoch + 1 == cfg.epochs
        for name in ("val", "test") + (("train",) if final else ()):
            if name in splits:
                metrics = _evaluate_sharded(model, splits[name], device, rank, world)
                key = "train_eval" if name == "train" else name
                record[key] = {**metrics, "loss": metrics["cross_entropy"]}
        history.append(record)
        log.info(_progress_line(record, cfg.epochs))
        report = _flat_metrics(record)
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                _save_checkpoint(Path(tmp), model, vocab, optimizer, history, resumed, loop_config)
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(report, checkpoint=None)


def run_training(cfg: TrainConfig, address: str = "") -> TrainResult:
    """Embeddings on the driver, Ray Train on the workers, a model directory in the store.

    Checks the dataset first, then joins the cluster at `address` (or the job's) or
    starts a local Ray (sentiment.cluster).
    """
    artifacts.check_store(store_location(cfg.store))  # before the work, not after it
    if cfg.ensemble > 1:
        from sentiment.ensemble import train_ensemble

        return train_ensemble(cfg)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from sentiment.cluster import failure_reason, init_ray

    started = time.time()
    cfg = dataclasses.replace(cfg, data=absolute(cfg.data))  # workers run elsewhere
    embeddings = _embeddings(cfg, word2vec_texts(cfg))
    init_ray(address)
    model_cfg = dataclasses.replace(
        cfg.model, vocab_size=len(embeddings.vocab), embed_dim=int(embeddings.matrix.shape[1])
    )
    phrases = embeddings.vocab.phrases
    text_cfg = dataclasses.replace(cfg.text, phrases=len(phrases or ()))
    cfg = dataclasses.replace(
        cfg, model=model_cfg, text=text_cfg, name=cfg.name or _default_name(cfg)
    )
    log.info("embeddings: %s", json.dumps(embeddings.meta))
    ngrams = None
    if cfg.ngrams:
        ngrams = fit_ngrams(cfg, embeddings.vocab)
        cfg = dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, ngrams=True, ngram_pairs=len(ngrams.pairs)),
        )

    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    _check_resources(cfg, resources)
    # Elastic: the group may restart with as few as min_workers after losing nodes (each
    # epoch shards by the world size it runs with).
    num_workers = (cfg.min_workers, cfg.workers) if cfg.min_workers else cfg.workers
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": to_dict(cfg),
            "vocab": embeddings.vocab.words,
            "phrases": phrases.pairs if phrases else [],
            "matrix": embeddings.matrix,
            "ngrams": ngrams,
        },
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=storage_location(cfg.storage_path),
            failure_config=FailureConfig(
                max_failures=cfg.max_failures,
                # A worker group that cannot start (no room after a node loss) is retried
                # each minute; by default forever. Bounded by the resource timeout.
                controller_failure_limit=max(1, math.ceil(cfg.resource_timeout_s / 60)),
            ),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray Train raises its own types for errors in workers
        raise SentimentError(f"training run {cfg.name} failed: {failure_reason(exc)}") from exc
    if result.error is not None:
        raise SentimentError(f"training run {cfg.name} failed: {failure_reason(result.error)}")
    if result.checkpoint is None:
        raise SentimentError(f"training run {cfg.name} produced no checkpoint")
    with result.checkpoint.as_directory() as ckpt:
        return _publish(Path(ckpt), cfg, embeddings.meta, time.time() - started)


def fit_ngrams(cfg: TrainConfig, vocab: Vocabulary) -> NgramFit:
    """The n-gram head, fitted here on the driver on the training reviews (the validation
    carve left out) as the GRU will read them."""
    train = load_splits(cfg, vocab, names=("train",)).get("train")
    if train is None:
        raise SentimentError(f"{cfg.data}: no training reviews")
    return fit_ngram_head(train.ids, train.labels, len(vocab), cfg.ngram_c, min_df=cfg.ngram_min_df)


def _check_resources(cfg: TrainConfig, per_worker: dict[str, float]) -> None:
    """Fail within the resource timeout, naming what is missing, when the cluster cannot
    host the (minimum) worker group; Ray Train would wait for it forever."""
    from sentiment.cluster import alive_nodes, can_place, describe

    count = cfg.min_workers or cfg.workers
    if not can_place([per_worker] * count, cfg.resource_timeout_s):
        needs = " and ".join(f"{v:g} {k}" for k, v in per_worker.items())
        raise SentimentError(
            f"training run {cfg.name}: no room for {count} Ray Train worker(s) needing "
            f"{needs} each within {cfg.resource_timeout_s:g} s; the cluster has "
            f"{describe(alive_nodes())} (add such nodes, or change --workers, "
            "--cpus-per-worker, --use-gpu; --resource-timeout waits longer)"
        )


def word2vec_texts(cfg: TrainConfig) -> list[str]:
    """The texts word2vec trains on: the train split without the validation carve, plus
    any `--corpus` text that is not one of the dataset's held-out reviews.

    Vectors trained on the validation reviews too would make validation easier than the
    test split, whose reviews word2vec never sees, and bias choices made on validation.
    """
    # the held-out reviews are read only to keep them out of a --corpus
    split = None if cfg.embeddings.corpus else "train"
    table = read_prepared(cfg.data, columns=["review_id", "text", "split", "group_id"], split=split)
    rows = table.to_pydict()
    texts, held_out = [], []
    for text, split, key in zip(rows["text"], rows["split"], split_keys(table), strict=True):
        if split == "train" and not in_validation(key, cfg.val_fraction):
            texts.append(text)
        elif text is not None:
            held_out.append(text)
    if not texts:
        raise SentimentError(f"{cfg.data}: the dataset has no train split to train on")
    if cfg.embeddings.corpus:
        from sentiment.embeddings import read_corpus

        texts += read_corpus(cfg.embeddings.corpus, held_out)[0]
    return texts


# --- helpers ------------------------------------------------------------------------------


def _embeddings(cfg: TrainConfig, texts: list[str]):
    """word2vec vectors for this dataset and these settings, cached on this machine.

    Training several variants on one dataset trains word2vec once (skip-gram takes
    minutes); the cache key covers every embedding setting and the dataset's files.
    """
    from sentiment.config import default_home
    from sentiment.datasets import dataset_fingerprint
    from sentiment.embeddings import build_embeddings, load_embeddings, save_embeddings

    home = default_home()
    if cfg.embeddings.source != "train" or "://" in home:
        return build_embeddings(cfg.embeddings, texts)
    key = hashlib.sha256(
        (
            json.dumps(to_dict(cfg.embeddings), sort_keys=True)
            + dataset_fingerprint(cfg.data)
            + _corpus_fingerprint(cfg.embeddings.corpus)
            + (f"val{cfg.val_fraction!r}/group" if cfg.val_fraction else "")
        ).encode()
    ).hexdigest()[:16]
    cache = Path(home) / "cache" / "embeddings" / key
    if (cache / "embeddings.json").exists():
        log.info("word2vec vectors from the cache %s", cache)
        return load_embeddings(cache)
    embeddings = build_embeddings(cfg.embeddings, texts)
    with artifacts.cache_entry(cache) as tmp:
        save_embeddings(embeddings, tmp)
    return embeddings


def _corpus_fingerprint(paths: tuple[str, ...]) -> str:
    """Names, sizes and modification times of the --corpus files: a changed file, a new
    file in a directory, retrains word2vec."""
    if not paths:
        return ""
    from sentiment.inputs import resolve

    found, _ = resolve(list(paths))
    parts = [f"{f.uri}\0{f.size}\0{f.mtime_ns}" for f in found]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _publish(ckpt: Path, cfg: TrainConfig, emb_meta: dict, seconds: float) -> TrainResult:
    state = json.loads((ckpt / STATE).read_text())
    vocab = artifacts.read_vocab(ckpt, cfg.text)
    model = build_model(cfg.model)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(ckpt / artifacts.WEIGHTS)))
    history = state["history"]
    last = history[-1]
    train_seconds = sum(h["train"]["seconds"] for h in history)
    n_seen = sum(h["train"]["n"] for h in history)
    metrics = {
        "model": cfg.model.variant,
        "seconds": seconds,
        "train_seconds": train_seconds,
        "train_reviews_per_s": n_seen / train_seconds if train_seconds else None,
        "epochs": len(history),
        "resumed_after": state.get("resumed_after", []),
        "train": last.get("train_eval"),
        "val": last.get("val"),
        "test": last.get("test"),
        "history": history,
    }
    calibration = fit_calibration(model, cfg, vocab) if cfg.calibrate and cfg.val_fraction else None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        extra = {
            "embeddings": emb_meta,
            "training": {k: v for k, v in to_dict(cfg).items() if k not in ("model", "text")},
            **({"calibration": calibration} if calibration else {}),
        }
        model_id = artifacts.write_model_dir(out, model, vocab, cfg.text, extra)
        metrics["model_id"] = model_id
        metrics["calibration"] = calibration
        artifacts._write_json(out / artifacts.METRICS, metrics)
        plot_loss_curves(history, out / "loss_curve.png")
        if metrics["test"]:
            plot_confusion(metrics["test"]["confusion"], out / "confusion_test.png", "test")
        target = artifacts.publish(out, store_location(cfg.store), model_id)
    return TrainResult(model_id=model_id, model_dir=target, metrics=metrics)


def fit_calibration(model, cfg: TrainConfig, vocab: Vocabulary) -> dict[str, Any]:
    """Temperature scaling fitted on the validation carve: the temperature, and the
    validation ECE and cross-entropy before and after it."""
    from sentiment.evaluation import expected_calibration_error, fit_temperature
    from sentiment.models import calibrate

    val = load_splits(cfg, vocab)["val"]
    device = torch.device("cpu")
    log_probs = predict(model, val, length_batches(val.lengths, EVAL_BATCH, shuffle=False), device)
    labels, scored = val.labels[val.scored], log_probs[val.scored]
    temperature = round(fit_temperature(labels, scored), 4)  # as config.json will hold it
    after = calibrate(torch.from_numpy(scored), temperature).numpy()
    out = {"temperature": temperature, "fitted_on": "val", "n": len(labels)}
    for name, lp in (("before", scored), ("after", after)):
        out[f"val_ece_{name}"] = expected_calibration_error(labels, np.exp(lp[:, 1]))
        out[f"val_cross_entropy_{name}"] = float(-lp[np.arange(len(labels)), labels].mean())
    log.info("calibration on %d validation reviews: %s", len(labels), json.dumps(out))
    return out


def _save_checkpoint(directory, model, vocab, optimizer, history, resumed, loop_config) -> None:
    artifacts.write_weights(directory, model, vocab)
    # Only tensors, numbers and dicts: loadable with torch.load(weights_only=True).
    torch.save(optimizer.state_dict(), directory / OPTIMIZER)
    state = {
        "epoch": history[-1]["epoch"],
        "history": history,
        "resumed_after": resumed,
        "train": loop_config["train"],
    }
    (directory / STATE).write_text(json.dumps(state))


def _restore(checkpoint, model, optimizer, device) -> tuple[int, list[dict[str, Any]], list[int]]:
    """Resume from the latest checkpoint: weights, optimizer state, epoch, history."""
    if checkpoint is None:
        return 0, [], []
    from safetensors.torch import load_file

    with checkpoint.as_directory() as d:
        d = Path(d)
        model.load_state_dict(load_file(str(d / artifacts.WEIGHTS), device=str(device)))
        optimizer.load_state_dict(torch.load(d / OPTIMIZER, map_location=device, weights_only=True))
        state = json.loads((d / STATE).read_text())
    log.info("resuming after epoch %d from %s", state["epoch"], checkpoint.path)
    return state["epoch"], state["history"], [*state.get("resumed_after", []), state["epoch"]]


def _all_reduce_stats(stats: dict[str, float], world: int) -> dict[str, float]:
    """Combine per-worker epoch stats into whole-epoch figures."""
    if world == 1:
        return stats
    import torch.distributed as dist

    n = stats["n"]
    t = torch.tensor(
        [stats["loss"] * n, stats["accuracy"] * n, n, stats["seconds"]], dtype=torch.float64
    )
    dist.all_reduce(t)
    seconds = float(t[3]) / world
    return {
        "loss": float(t[0] / t[2]),
        "accuracy": float(t[1] / t[2]),
        "n": int(t[2]),
        "seconds": seconds,
        "reviews_per_s": float(t[2]) / seconds if seconds else 0.0,
    }


def _evaluate_sharded(model, split: EncodedSplit, device, rank: int, world: int) -> dict[str, Any]:
    """Each worker predicts its share; the shares are summed so every worker has all of them."""
    batches = length_batches(split.lengths, EVAL_BATCH, shuffle=False, rank=rank, world_size=world)
    log_probs = predict(model, split, batches, device)
    if world > 1:
        import torch.distributed as dist

        t = torch.from_numpy(log_probs)
        dist.all_reduce(t)
        log_probs = t.numpy()
    return summarize(split.labels, log_probs, split.categories, split.scored)


def _flat_metrics(record: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {"epoch": record["epoch"]}
    for split, m in record.items():
        if isinstance(m, dict):
            for key in ("loss", "accuracy", "reviews_per_s"):
                if key in m:
                    out[f"{split}_{key}"] = float(m[key])
    return out


def _progress_line(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for split in ("train", "val", "test"):
        if split in record:
            m = record[split]
            parts.append(f"{split} loss {m['loss']:.4f} acc {100 * m['accuracy']:.2f}%")
    parts.append(f"{record['train']['reviews_per_s']:.0f} reviews/s")
    return " | ".join(parts)


def _default_name(cfg: TrainConfig) -> str:
    return f"{cfg.model.variant}-{time.strftime('%Y%m%d-%H%M%S')}-{np.random.randint(1 << 16):04x}"
