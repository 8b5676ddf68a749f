"""How the GRU and its n-gram head are mixed: accuracy and calibration on validation.

    .venv/bin/python tests/benchmarks/bench_mixing.py [--folds 0,1,2] [--threads 1]

For each fold k (seed k, validation on the k-th tenth of the train split's products, as
sweep_train.py --folds does), trains the default model (GRU + n-gram head) on the rest and
reads both parts' log-odds on the validation tenth, and on the test split to report only.
Compares ways to combine them with no validation carve at run time: the average of the
probabilities, the average of the log-odds (the default), other shares of the log-odds,
their sum; and, fitted on the other folds' validation reviews, a temperature on the
probability average and a weight for each part's log-odds. Writes a section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import amazon_embeddings, gru_alone, plain_train, prepared_amazon, write_section

from sentiment.config import TrainConfig
from sentiment.evaluation import expected_calibration_error, fit_temperature
from sentiment.models import set_up_for
from sentiment.training import length_batches, predict, to_tensors


def log_odds(model, split) -> tuple[np.ndarray, np.ndarray]:
    """(GRU, head) log-odds of P(positive) for each review of the split."""
    batches = length_batches(split.lengths, 256, shuffle=False)
    cpu = torch.device("cpu")
    with gru_alone(model):
        gru = predict(model, split, batches, cpu)
    head_scores = np.zeros(len(split.labels))
    with torch.no_grad():
        for b in batches:
            ids, lengths, _ = to_tensors(split, b, cpu)
            head_scores[b] = model.ngram(ids, lengths).numpy()
    return gru[:, 1] - gru[:, 0], head_scores


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def nll(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def fit_weights(zg: np.ndarray, zh: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the cross-entropy of sigmoid(a zg + b zh), on a grid of 0.05."""
    grid = np.round(np.arange(0.2, 1.6001, 0.05), 2)
    losses = {(a, b): nll(y, sigmoid(a * zg + b * zh)) for a in grid for b in grid}
    return min(losses, key=losses.get)


def mixes(zg, zh, temperature, weights) -> dict[str, np.ndarray]:
    pg, ph = sigmoid(zg), sigmoid(zh)
    average = (pg + ph) / 2
    a, b = weights
    return {
        "GRU alone": pg,
        "n-gram head alone": ph,
        "average of probabilities": average,
        "**average of log-odds (default)**": sigmoid((zg + zh) / 2),
        "log-odds, the head's share 0.6": sigmoid(0.4 * zg + 0.6 * zh),
        "log-odds, the head's share 0.7": sigmoid(0.3 * zg + 0.7 * zh),
        "sum of log-odds": sigmoid(zg + zh),
        f"average of probabilities, temperature fitted ({temperature:.2f})": sigmoid(
            np.log(average / (1 - average)) / temperature
        ),
        f"log-odds weights fitted ({a:.2f}·GRU + {b:.2f}·head)": sigmoid(a * zg + b * zh),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    torch.set_num_threads(args.threads)
    base = TrainConfig(data=prepared_amazon(), val_fraction=0.1)
    scores: dict[int, dict[str, tuple]] = {}
    for fold in folds:
        common.use_fold(fold)
        cfg = dataclasses.replace(
            base, seed=fold, embeddings=dataclasses.replace(base.embeddings, seed=fold)
        )
        print(f"fold {fold}", flush=True)
        out = plain_train(cfg, amazon_embeddings(cfg), args.threads, evaluate=())
        model, splits = out["model"], out["splits"]
        set_up_for(model, torch.device("cpu"), inference=True)
        scores[fold] = {}
        for name in ("val", "test"):
            s = splits[name]
            zg, zh = log_odds(model, s)
            scores[fold][name] = (s.labels[s.scored], zg[s.scored], zh[s.scored])
    common.use_fold(0)

    rows: dict[str, dict[str, list]] = {"val": {}, "test": {}}
    for fold in folds:
        # What is fitted comes from the other folds' validation reviews only.
        others = [scores[f]["val"] for f in folds if f != fold] or [scores[fold]["val"]]
        y, zg, zh = (np.concatenate(parts) for parts in zip(*others, strict=True))
        average = (sigmoid(zg) + sigmoid(zh)) / 2
        log_avg = np.log(np.stack([1 - average, average], 1))
        temperature = fit_temperature(y, log_avg)
        weights = fit_weights(zg, zh, y)
        for name in ("val", "test"):
            y, zg, zh = scores[fold][name]
            for i, (label, p) in enumerate(mixes(zg, zh, temperature, weights).items()):
                label = label if "fitted" not in label else label.split(" (")[0] + " †"
                rows[name].setdefault((i, label), []).append(
                    (
                        100 * float(((p >= 0.5) == y).mean()),
                        100 * expected_calibration_error(y, p),
                        nll(y, p),
                        label,
                    )
                )
        print(
            f"fold {fold}: temperature {temperature:.3f}, weights {tuple(map(float, weights))}",
            flush=True,
        )

    def table(name: str) -> str:
        lines = [
            "| mix | accuracy, mean (per fold) | ECE, mean (per fold) | cross-entropy |",
            "|---|---:|---:|---:|",
        ]
        for (_, label), runs in sorted(rows[name].items()):
            acc, ece, ce = (np.array([r[k] for r in runs]) for k in range(3))
            lines.append(
                f"| {label} | {acc.mean():.2f} % ({' / '.join(f'{a:.2f}' for a in acc)}) | "
                f"{ece.mean():.2f} % ({' / '.join(f'{e:.2f}' for e in ece)}) | {ce.mean():.4f} |"
            )
        return "\n".join(lines)

    body = f"""
Command: `.venv/bin/python tests/benchmarks/bench_mixing.py --folds {args.folds} --threads {args.threads}`

The default model (GRU + n-gram head) trained for each fold k on the train split less its
k-th validation tenth (seed k); the GRU's and the head's log-odds of P(positive) combined
in several ways. ECE: expected calibration error over 10 bins of p_positive. † fitted on
the other folds' validation reviews (what a run with no validation carve could not do, for
comparison). Mixing chosen on validation; the test split only reports.

Validation tenths:

{table("val")}

Test split (the same models; reports only):

{table("test")}
"""
    write_section("Mixing the GRU and the n-gram head (bench_mixing.py)", body)
    print(body)


if __name__ == "__main__":
    main()
