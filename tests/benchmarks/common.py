"""Shared helpers of the benchmarks: the real data, embeddings, a plain-torch training loop."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from sentiment.config import TrainConfig
from sentiment.embeddings import Embeddings, build_embeddings, load_embeddings, save_embeddings
from sentiment.models import build_model, set_up_for
from sentiment.ngrams import fit_ngram_head
from sentiment.train_job import load_splits
from sentiment.training import (
    configured_epoch,
    evaluate_split,
    make_optimizer,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
AMAZON = REPO.parent / "shared" / "datasets" / "amazon-multi-domain"
RESULTS = HERE / "RESULTS.md"
CACHE = Path(os.environ.get("BENCH_CACHE", "/tmp/sentiment-bench"))
EMB_KEY_SUFFIX = "-group"  # the validation carve's kind; a run with another carve sets it
# Embedding settings added after caches existed: left out of the cache key at these values,
# so vectors cached before they existed are found again.
LATER_SETTINGS = {"negative": 5, "sample": 0.001, "phrases": 0.0, "corpus": ()}


def prepared_amazon() -> str:
    """The real reviews prepared once into CACHE/amazon-g (canonical split, group_id)."""
    from sentiment.datasets import prepare

    out = CACHE / "amazon-g"
    if not out.exists():
        prepare([AMAZON], out)
    return str(out)


def amazon_embeddings(cfg: TrainConfig) -> Embeddings:
    """word2vec on the train split minus any validation carve, as `train` does; cached per
    embedding settings (one worker: reproducible)."""
    from sentiment.train_job import word2vec_texts

    key = "-".join(
        f"{k}{v}"
        for k, v in dataclasses.asdict(cfg.embeddings).items()
        if k != "source" and not (k in LATER_SETTINGS and LATER_SETTINGS[k] == v)
    )
    key += f"-val{cfg.val_fraction!r}{EMB_KEY_SUFFIX}" if cfg.val_fraction else ""
    if Path(cfg.data).name != "amazon-g":  # another dataset than the prepared reviews
        key += f"-data-{Path(cfg.data).name}"
    path = CACHE / f"emb-{key}"
    if (path / "vectors.npy").exists():
        return load_embeddings(path)
    emb = build_embeddings(cfg.embeddings, word2vec_texts(cfg))
    save_embeddings(emb, path)
    return emb


def use_fold(fold: int) -> None:
    """Validate on the `fold`-th tenth of the products (by `train`'s salted hash of group_id)
    instead of the first: fold 0 is `train`'s own carve, folds 0, 1, 2 are disjoint, so three
    seeds each on its own fold validate on three times as many reviews."""
    global EMB_KEY_SUFFIX
    from sentiment import train_job
    from sentiment.datasets import hash_fraction

    def in_fold(key: str, val_fraction: float) -> bool:
        h = hash_fraction(f"val:{key}")
        return val_fraction > 0 and fold * val_fraction <= h < (fold + 1) * val_fraction

    train_job.in_validation = in_fold
    EMB_KEY_SUFFIX = "-group" if fold == 0 else f"-group-fold{fold}"


def plain_train(
    cfg: TrainConfig, emb: Embeddings, threads: int, log=print, evaluate=("val", "test")
) -> dict[str, Any]:
    """The Ray Train loop's steps in one process, no Ray: for accuracy sweeps and the overhead check."""
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model_cfg = dataclasses.replace(
        cfg.model, vocab_size=len(emb.vocab), embed_dim=int(emb.matrix.shape[1])
    )
    splits = load_splits(cfg, emb.vocab)
    fit = None
    if cfg.ngrams:  # as `train` does: the head first, on the training reviews
        train = splits["train"]
        fit = fit_ngram_head(train.ids, train.labels, len(emb.vocab), cfg.ngram_c, cfg.ngram_min_df)
        model_cfg = dataclasses.replace(model_cfg, ngrams=True, ngram_pairs=len(fit.pairs))
    model = build_model(model_cfg, emb.matrix)
    if fit is not None:
        model.ngram.load_fit(fit)
    device = torch.device("cpu")
    set_up_for(model, device, inference=False)  # as the Ray Train loop does
    optimizer = make_optimizer(model, cfg)
    history = []
    for epoch in range(cfg.epochs):
        stats = configured_epoch(model, splits["train"], optimizer, device, cfg, epoch)
        record = {"epoch": epoch + 1, "train": stats}
        for name in evaluate:
            if name in splits:
                record[name] = evaluate_split(model, splits[name], device)
        history.append(record)
        log(
            f"  epoch {epoch + 1}: train {stats['reviews_per_s']:.0f} reviews/s loss {stats['loss']:.4f}"
            + "".join(
                f" | {n} acc {100 * record[n]['accuracy']:.2f}%"
                for n in ("val", "test")
                if n in record
            )
        )
    final = {"history": history, "model": model, "splits": splits}
    final["train_eval"] = evaluate_split(model, splits["train"], device)
    return final


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__}, Python {platform.python_version()}"


@contextlib.contextmanager
def gru_alone(model):
    """The model without its n-gram head (the GRU's own probabilities) inside the block."""
    head = model.ngram
    model.ngram = None
    try:
        yield model
    finally:
        model.ngram = head


def write_section(title: str, body: str) -> None:
    """Replace (or append) one `## title` section of RESULTS.md."""
    text = (
        RESULTS.read_text()
        if RESULTS.exists()
        else "# Benchmark results\n\nEach section is written by the script it names; rerun that script to refresh it.\n"
    )
    stamp = datetime.date.today().isoformat()
    section = f"## {title}\n\n_{stamp}; {machine()}_\n\n{body.strip()}\n"
    marker = f"## {title}\n"
    if marker in text:
        start = text.index(marker)
        end = text.find("\n## ", start + len(marker))
        text = text[:start] + section + (text[end:] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def git_rev() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
