"""Metrics and plots, as the original reported them and more.

Accuracy, cross-entropy, the confusion matrix (rows truth, columns prediction,
classes negative/positive), per-category accuracy, loss curves and the
results table of the original homework. Pure numpy, plus matplotlib for the PNGs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("negative", "positive")
ECE_BINS = 10  # equal-width bins of p_positive


def summarize(
    labels: np.ndarray,
    log_probs: np.ndarray,
    categories: Sequence[str] | None = None,
    scored: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of one split from true labels (N,) and log-probabilities (N, 2).

    Rows not `scored` (a review with no known word) have no prediction: they
    count as wrong in accuracy, as they would in a scored file, and are left out
    of the cross-entropy; `unscored` says how many there were.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    scored = np.ones(n, dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    pred = np.where(scored, np.argmax(log_probs, axis=1), -1) if n else np.zeros(0, np.int64)
    correct = pred == labels
    nll = -log_probs[np.arange(n), labels] if n else np.zeros(0)
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (labels[scored], pred[scored]), 1)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": float(correct.mean()) if n else float("nan"),
        "cross_entropy": float(nll[scored].mean()) if scored.any() else float("nan"),
        "confusion": confusion.tolist(),
        "unscored": int((~scored).sum()),
        "ece": expected_calibration_error(labels[scored], np.exp(log_probs[scored, 1]))
        if scored.any()
        else float("nan"),
    }
    if categories is not None:
        cats = np.asarray(categories, dtype=object)
        out["per_category"] = {
            str(c): {"n": int(m.sum()), "accuracy": float(correct[m].mean())}
            for c in sorted(set(cats.tolist()))
            for m in [cats == c]
        }
    return out


def reliability(
    labels: np.ndarray, p_positive: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per equal-width bin of p_positive: its reviews, mean p_positive and share positive."""
    labels, p = np.asarray(labels, dtype=np.float64), np.asarray(p_positive, dtype=np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)  # p == 1.0 falls in the last bin
    out = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        out.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "n": n,
                "p_positive": float(p[m].mean()) if n else float("nan"),
                "positive": float(labels[m].mean()) if n else float("nan"),
            }
        )
    return out


def expected_calibration_error(
    labels: np.ndarray, p_positive: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: the reviews' share-weighted gap between mean p_positive and the share of
    positive reviews, over equal-width bins of p_positive (0 when p_positive is exact)."""
    rows = reliability(labels, p_positive, bins)
    total = sum(r["n"] for r in rows)
    if not total:
        return float("nan")
    return float(sum(r["n"] * abs(r["p_positive"] - r["positive"]) for r in rows if r["n"]) / total)


def fit_temperature(labels: np.ndarray, log_probs: np.ndarray) -> float:
    """The temperature T minimising the cross-entropy of log_softmax(log_probs / T): a
    grid over log T in [1/20, 20] (steps of 0.2 %), since the loss is smooth in T."""
    labels = np.asarray(labels, dtype=np.int64)
    margin = np.asarray(log_probs[:, 1] - log_probs[:, 0], dtype=np.float64)  # logit of p
    sign = np.where(labels == 1, 1.0, -1.0)
    temperatures = np.exp(np.linspace(np.log(1 / 20), np.log(20), 3000))
    # NLL of the true class with logit margin / T: log(1 + exp(-sign * margin / T))
    losses = [np.logaddexp(0.0, -sign * margin / t).mean() for t in temperatures]
    return float(temperatures[int(np.argmin(losses))])


def results_table(rows: Sequence[dict[str, Any]]) -> str:
    """The original's table: model, training time, train/test accuracy and cross-entropy."""
    header = ("model", "time", "train acc", "test acc", "train CE", "test CE")
    lines = [header]
    for r in rows:
        lines.append(
            (
                str(r["model"]),
                _duration(r.get("train_seconds", r.get("seconds"))),
                _pct(r.get("train", {}).get("accuracy")),
                _pct(r.get("test", {}).get("accuracy")),
                _num(r.get("train", {}).get("cross_entropy")),
                _num(r.get("test", {}).get("cross_entropy")),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        cells = zip(line, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([fmt(lines[0]), fmt(tuple("-" * w for w in widths)), *map(fmt, lines[1:])])


def category_table(metrics: dict[str, Any]) -> str:
    """Per-category accuracy of one split, one line per category."""
    per = metrics.get("per_category", {})
    return "\n".join(f"{c:<24} {v['n']:>6}  {100 * v['accuracy']:6.2f} %" for c, v in per.items())


def plot_loss_curves(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Per-epoch loss of every split recorded in the history (train, val, test)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    for split in ("train", "val", "test"):
        values = [h.get(split, {}).get("loss") for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, values, marker="o", label=f"{split} loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (NLL)")
    ax.set_title("Loss per epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], path: str | Path, title: str) -> None:
    """Heat map: rows truth, columns prediction, classes negative/positive."""
    plt = _pyplot()
    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    image = ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=color)
    ax.set_xticks([0, 1], CLASSES)
    ax.set_yticks([0, 1], CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(rows: Sequence[dict[str, float]], path: str | Path, title: str) -> None:
    """Reliability diagram: share of positive reviews against mean p_positive, per bin."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    full = [r for r in rows if r["n"]]
    ax.bar(
        [(r["low"] + r["high"]) / 2 for r in full],
        [r["positive"] for r in full],
        width=[r["high"] - r["low"] for r in full],
        alpha=0.35,
        edgecolor="black",
        label="share positive",
    )
    ax.plot([r["p_positive"] for r in full], [r["positive"] for r in full], marker="o")
    for r in full:
        ax.annotate(str(r["n"]), ((r["low"] + r["high"]) / 2, 0.02), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("p_positive")
    ax.set_ylabel("share of positive reviews")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes or CI
    import matplotlib.pyplot as plt

    return plt


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    return (
        f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"
        if s >= 3600
        else f"{s // 60}m {s % 60:02d}s"
    )
