"""Test accuracy of the default `gru` over word2vec seeds: what a user can expect, not one draw.

    .venv/bin/python tests/benchmarks/seeds_test.py [--threads 1] [--w2v-epochs 20,40]
        [--w2v-seeds 0,1,2]

Reports only: word2vec settings were chosen on validation (sweep_train.py). Each row trains
word2vec on the whole train split with that seed and epochs (cached), then `gru` with the
default settings in the plain-torch loop, and reports accuracy on the 1,600 test reviews.
Writes a section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import amazon_embeddings, plain_train, prepared_amazon, write_section

from sentiment.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--w2v-epochs", default="20,40")
    parser.add_argument("--w2v-seeds", default="0,1,2")
    args = parser.parse_args()
    epochs = [int(e) for e in args.w2v_epochs.split(",")]
    seeds = [int(s) for s in args.w2v_seeds.split(",")]
    base = TrainConfig(data=prepared_amazon())
    results: dict[tuple[int, int], float] = {}
    for seed in seeds:
        for n in epochs:
            emb_cfg = dataclasses.replace(base.embeddings, epochs=n, seed=seed)
            cfg = dataclasses.replace(base, embeddings=emb_cfg)
            print(f"word2vec {n} epochs, seed {seed}", flush=True)
            out = plain_train(cfg, amazon_embeddings(cfg), args.threads, evaluate=("test",))
            results[seed, n] = out["history"][-1]["test"]["accuracy"]
    header = "| word2vec seed | " + " | ".join(f"{n} epochs" for n in epochs) + " |"
    lines = [header, "|---|" + "---:|" * len(epochs)]
    for seed in seeds:
        lines.append(
            f"| {seed} | " + " | ".join(f"{100 * results[seed, n]:.2f} %" for n in epochs) + " |"
        )
    means = [statistics.mean(results[s, n] for s in seeds) for n in epochs]
    lines.append("| mean | " + " | ".join(f"{100 * m:.2f} %" for m in means) + " |")
    body = f"""
Command: `.venv/bin/python tests/benchmarks/seeds_test.py --threads {args.threads} --w2v-epochs {args.w2v_epochs} --w2v-seeds {args.w2v_seeds}`

`gru` with the default settings otherwise (6 epochs, model seed 0), trained on the whole
train split (6,400 reviews); accuracy on the 1,600 test reviews (one review is 0.06
points). Reported only: the word2vec epochs were chosen on validation.

{chr(10).join(lines)}
"""
    write_section("Test accuracy over word2vec seeds (seeds_test.py)", body)
    print(body)


if __name__ == "__main__":
    main()
