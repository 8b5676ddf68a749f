"""Plain-torch training and evaluation steps (no Ray): encoding, length buckets, epochs.

Reviews of similar length are batched together so padding stays small, and the
model reads each review at its own last real token, so padding never changes a
result. The Ray Train loop in `sentiment.train_job` calls these same functions.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from sentiment.config import TrainConfig
from sentiment.datasets import hash_fraction
from sentiment.evaluation import summarize
from sentiment.text import Vocabulary, pad_batch

POOL_BATCHES = 50  # a shuffled pool of this many batches is sorted by length, then cut


@dataclass
class EncodedSplit:
    """One split of reviews as token ids, with what evaluation reports by."""

    ids: list[np.ndarray]  # (n_i,) int64 per review; empty when no word is known
    labels: np.ndarray  # (N,) int64
    categories: np.ndarray  # (N,) object
    n_tokens: int  # tokens before look-up
    n_truncated: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter(map(len, self.ids), dtype=np.int64, count=len(self.ids))

    @property
    def scored(self) -> np.ndarray:
        """Reviews with at least one known word: the only ones a model can read."""
        return self.lengths > 0


def encode_split(
    texts: Sequence[str],
    labels: Sequence[int],
    categories: Sequence[str],
    vocab: Vocabulary,
    max_tokens: int,
) -> EncodedSplit:
    """Tokenize and look up every review once, before any epoch."""
    ids, n_tokens, n_truncated = [], 0, 0
    for text in texts:
        enc = vocab.encode(text, max_tokens)
        ids.append(np.asarray(enc.ids, dtype=np.int64))
        n_tokens += enc.n_tokens
        n_truncated += enc.truncated
    return EncodedSplit(
        ids=ids,
        labels=np.asarray(labels, dtype=np.int64),
        categories=np.asarray(categories, dtype=object),
        n_tokens=n_tokens,
        n_truncated=n_truncated,
    )


def lr_schedule(
    schedule: str, base: float, epoch: int, epochs: int, steps_per_epoch: int
) -> Callable[[int], float] | None:
    """The learning rate at each step of `epoch`; None for a constant rate.

    `cosine` decays from `base` to 0 over the whole run. A pure function of (epoch,
    step): a resumed run continues the same schedule with no scheduler state saved.
    """
    if schedule == "constant":
        return None
    total = max(1, epochs * steps_per_epoch)
    return lambda step: (
        base * 0.5 * (1 + math.cos(math.pi * (epoch * steps_per_epoch + step) / total))
    )


def in_validation(key: str, val_fraction: float) -> bool:
    """Whether a train-split review is carved out for validation, by its split key (its
    group_id, else its review_id: `datasets.split_keys`), so that a product's reviews stay
    together. Salted: independent of the hashed train/test split of `prepare`."""
    return val_fraction > 0 and hash_fraction(f"val:{key}") < val_fraction


def length_batches(
    lengths: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> list[np.ndarray]:
    """Index batches of similar-length reviews; this rank's share of them.

    Training (`shuffle`): shuffle with (seed, epoch), sort pools of POOL_BATCHES
    batches by length, cut, shuffle the batches; every rank gets the same number
    of batches, because DDP needs the same number of steps on each. Evaluation:
    sorted by length, dealt round-robin, nothing dropped. Reviews of length 0
    are left out: they have no word to read.
    """
    index = np.flatnonzero(lengths > 0)
    if shuffle:
        rng = np.random.default_rng([seed, epoch])
        index = rng.permutation(index)
        pool = batch_size * POOL_BATCHES
        index = (
            np.concatenate(
                [
                    c[np.argsort(lengths[c], kind="stable")]
                    for c in np.split(index, range(pool, len(index), pool))
                ]
            )
            if len(index)
            else index
        )
    else:
        index = index[np.argsort(lengths[index], kind="stable")]
    batches = np.split(index, range(batch_size, len(index), batch_size)) if len(index) else []
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
        per_rank = len(batches) // world_size
        return batches[rank * per_rank : (rank + 1) * per_rank]
    return batches[rank::world_size]


def to_tensors(
    split: EncodedSplit, batch: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids (B, T), lengths (B,) and labels (B,) of one batch, on `device`."""
    ids, lengths = pad_batch([split.ids[i] for i in batch])
    return (
        torch.from_numpy(ids).to(device, non_blocking=True),
        torch.from_numpy(lengths).to(device, non_blocking=True),
        torch.from_numpy(split.labels[batch]).to(device, non_blocking=True),
    )


def make_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (a `TrainConfig`'s lr and decay); trainable
    embeddings get `embedding_lr` if set. Each group's `lr_scale` is what `train_epoch`
    multiplies the scheduled rate by."""
    embedding = [p for n, p in model.named_parameters() if n.endswith("embedding.weight")]
    rest = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and not n.endswith("embedding.weight")
    ]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if embedding and embedding[0].requires_grad:
        scale = cfg.embedding_lr / cfg.lr if cfg.embedding_lr else 1.0
        groups.append({"params": embedding, "lr": cfg.lr * scale, "lr_scale": scale})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)


def configured_epoch(
    model: torch.nn.Module,
    split: EncodedSplit,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    cfg: TrainConfig,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Epoch `epoch` as `cfg` says: this rank's shard of the length-bucketed batches, the
    learning-rate schedule, clipping and label smoothing (the Ray Train loop and the
    benchmarks' plain loop alike)."""
    batches = length_batches(
        split.lengths,
        cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
    )
    lr_at = lr_schedule(cfg.lr_schedule, cfg.lr, epoch, cfg.epochs, len(batches))
    return train_epoch(
        model, split, batches, optimizer, device, cfg.grad_clip, lr_at, cfg.label_smoothing
    )


def train_epoch(
    model: torch.nn.Module,
    split: EncodedSplit,
    batches: Sequence[np.ndarray],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    grad_clip: float = 0.0,
    lr_at: Callable[[int], float] | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, float]:
    """One pass over `batches`; mean NLL loss and accuracy of the running predictions.

    `lr_at(step)` sets the learning rate before each step (a schedule, times each param
    group's `lr_scale`); None keeps it. The loss is reported without label smoothing.
    """
    model.train()
    loss_sum, correct, n = 0.0, 0, 0
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step) * group.get("lr_scale", 1.0)
        ids, lengths, labels = to_tensors(split, batch, device)
        log_probs = model(ids, lengths)  # (B, 2)
        loss = F.nll_loss(log_probs, labels)
        objective = loss
        if label_smoothing > 0:
            objective = (1 - label_smoothing) * loss - label_smoothing * log_probs.mean()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        loss_sum += loss.item() * len(batch)
        correct += int((log_probs.argmax(1) == labels).sum())
        n += len(batch)
    seconds = time.perf_counter() - start
    return {
        "loss": loss_sum / max(n, 1),
        "accuracy": correct / max(n, 1),
        "n": n,
        "seconds": seconds,
        "reviews_per_s": n / seconds if seconds else 0.0,
    }


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    split: EncodedSplit,
    batches: Sequence[np.ndarray],
    device: torch.device,
) -> np.ndarray:
    """Log-probabilities (N, 2) for the reviews in `batches`; zeros elsewhere."""
    model.eval()
    out = np.zeros((len(split), 2), dtype=np.float64)
    for batch in batches:
        ids, lengths, _ = to_tensors(split, batch, device)
        out[batch] = model(ids, lengths).double().cpu().numpy()
    return out


def evaluate_split(
    model: torch.nn.Module,
    split: EncodedSplit,
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Full metrics of one split in one process: accuracy, CE, confusion, per category."""
    batches = length_batches(split.lengths, batch_size, shuffle=False)
    log_probs = predict(model, split, batches, device)
    return summarize(split.labels, log_probs, split.categories, split.scored)


def evaluate_models(
    models: Sequence[str],
    data: str,
    splits: Sequence[str],
    store: str = "",
    output: Path | None = None,
) -> list[dict[str, Any]]:
    """Metrics of each model on each split of a prepared dataset, computed here and now.

    Rows as `evaluation.results_table` reads them; `seconds` is the model's recorded
    training time; each split's `ece` and `reliability` say how well p_positive is
    calibrated. With `output`, metrics JSON, confusion and reliability PNGs go there.
    """
    from sentiment.artifacts import METRICS, load_model_dir, resolve_model
    from sentiment.config import SentimentError, store_location
    from sentiment.datasets import read_prepared
    from sentiment.evaluation import plot_confusion, plot_reliability, reliability
    from sentiment.models import set_up_for

    table = read_prepared(data, columns=["text", "label", "category", "split"])
    by_split = {}
    for name in splits:
        part = table.filter(pc.field("split") == name)
        if part.num_rows == 0:
            raise SentimentError(f"{data}: no reviews in split {name!r}")
        by_split[name] = part.to_pydict()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for ref in models:
        directory = resolve_model(ref, store_location(store))
        loaded = load_model_dir(directory, device)
        set_up_for(loaded.model, device, inference=True)
        recorded = directory / METRICS
        seconds = (
            json.loads(recorded.read_text()).get("train_seconds") if recorded.exists() else None
        )
        row: dict[str, Any] = {
            "model": loaded.model_id,
            "seconds": seconds,
            "temperature": loaded.model.temperature,
        }
        for name, cols in by_split.items():
            split = encode_split(
                cols["text"], cols["label"], cols["category"], loaded.vocab, loaded.text.max_tokens
            )
            batches = length_batches(split.lengths, 256, shuffle=False)
            log_probs = predict(loaded.model, split, batches, device)
            row[name] = summarize(split.labels, log_probs, split.categories, split.scored)
            p_positive = np.exp(log_probs[split.scored, 1])
            row[name]["reliability"] = reliability(split.labels[split.scored], p_positive)
            if output is not None:
                output.mkdir(parents=True, exist_ok=True)
                title = f"{loaded.model_id} {name}"
                png = output / f"{loaded.model_id}-confusion-{name}.png"
                plot_confusion(row[name]["confusion"], png, title)
                png = output / f"{loaded.model_id}-reliability-{name}.png"
                plot_reliability(
                    row[name]["reliability"], png, f"{title} (ECE {row[name]['ece']:.1%})"
                )
        if output is not None:
            (output / f"{loaded.model_id}-metrics.json").write_text(
                json.dumps(row, indent=2) + "\n"
            )
        rows.append(row)
    return rows
