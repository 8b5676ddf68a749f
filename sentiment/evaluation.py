"""Metrics and plots, as the original reported them and more.

Accuracy, cross-entropy, the confusion matrix (rows truth, columns prediction,
classes negative/positive), per-category accuracy, loss curves and the
results table of SPEC.md. Pure numpy, plus matplotlib for the PNGs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("negative", "positive")


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
    }
    if categories is not None:
        cats = np.asarray(categories, dtype=object)
        out["per_category"] = {
            str(c): {"n": int(m.sum()), "accuracy": float(correct[m].mean())}
            for c in sorted(set(cats.tolist()))
            for m in [cats == c]
        }
    return out


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
