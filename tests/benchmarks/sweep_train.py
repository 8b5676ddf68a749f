"""The validation sweep behind the training defaults (never the test split).

    .venv/bin/python tests/benchmarks/sweep_train.py [--threads 2] [--only REGEX] [--val-carve group|review|tail]

Each configuration trains `gru` (unless it says otherwise) for 6 epochs in the plain-torch
loop on the train split less a validation tenth (`train`'s carve by product unless
`--val-carve` says otherwise) and reports accuracy on that tenth. Settings not
named are the defaults of `TrainConfig`. Writes a section of RESULTS.md; a run with `--only`
(the labels it matches) writes a section of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import amazon_embeddings, plain_train, prepared_amazon, write_section

from sentiment.config import ModelConfig, TextConfig, TrainConfig

# (label, changes): the changes from the defaults each run makes.
SWEEP: list[tuple[str, dict]] = [
    ("defaults", {}),
    ("word2vec skip-gram, 20 epochs", {"w2v_epochs": 20}),
    ("word2vec CBOW, 10 epochs (the Google News recipe)", {"sg": False, "w2v_epochs": 10}),
    ("word2vec skip-gram, 10 epochs", {"w2v_epochs": 10}),
    ("word2vec skip-gram, 40 epochs", {"w2v_epochs": 40}),
    ("read-out `last`", {"readout": "last"}),
    ("read-out `mean`", {"readout": "mean"}),
    ("batch 32, lr 2e-3", {"batch_size": 32, "lr": 2e-3}),
    ("batch 64, lr 3e-3", {"lr": 3e-3}),
    ("batch 128, lr 4e-3", {"batch_size": 128}),
    ("batch 128, lr 6e-3", {"batch_size": 128, "lr": 6e-3}),
    ("constant lr (no cosine decay)", {"lr_schedule": "constant"}),
    ("max_tokens 256", {"max_tokens": 256}),
    ("trainable embeddings", {"freeze": False}),
    ("dropout 0.3", {"dropout": 0.3}),
    ("hidden 200", {"hidden_size": 200}),
    ("defaults, seed 1", {"seed": 1}),
    ("defaults, seed 2", {"seed": 2}),
    ("word2vec skip-gram, 40 epochs, seed 1", {"w2v_epochs": 40, "seed": 1}),
    ("word2vec skip-gram, 40 epochs, seed 2", {"w2v_epochs": 40, "seed": 2}),
    ("word2vec seed 1", {"w2v_seed": 1, "w2v_epochs": 20}),
    ("word2vec seed 1, 30 epochs", {"w2v_seed": 1, "w2v_epochs": 30}),
    ("word2vec seed 1, 40 epochs", {"w2v_seed": 1, "w2v_epochs": 40}),
    ("word2vec skip-gram, 30 epochs", {"w2v_epochs": 30}),
    ("word2vec seed 2", {"w2v_seed": 2, "w2v_epochs": 20}),
    ("word2vec seed 2, 30 epochs", {"w2v_seed": 2, "w2v_epochs": 30}),
    ("word2vec seed 2, 40 epochs", {"w2v_seed": 2, "w2v_epochs": 40}),
    # The rows above trained word2vec on the whole train split, validation reviews included;
    # since then (as `train` does) it never sees them. Epochs compared again that way:
    *[
        (f"word2vec {e} epochs, word2vec seed {w}", {"w2v_epochs": e, "w2v_seed": w})
        for w in (0, 1, 2)
        for e in (20, 40)
    ],
    ("`grub`", {"variant": "grub"}),
    ("`gruh`", {"variant": "gruh"}),
    ("`pmgru`", {"variant": "pmgru"}),
]


CARVES = {
    "group": "a tenth of the products, by a hash of group_id",
    "review": "a tenth of the reviews, by a hash of review_id",
    "tail": "the last tenth of each source file's train positions",
}


def configure(base: TrainConfig, change: dict) -> TrainConfig:
    c = dict(change)
    emb = dataclasses.replace(
        base.embeddings,
        sg=c.pop("sg", True),
        epochs=c.pop("w2v_epochs", base.embeddings.epochs),
        seed=c.pop("w2v_seed", base.embeddings.seed),
    )
    model = ModelConfig(
        variant=c.pop("variant", "gru"),
        readout=c.pop("readout", base.model.readout),
        freeze_embeddings=c.pop("freeze", True),
        dropout=c.pop("dropout", 0.0),
        hidden_size=c.pop("hidden_size", 100),
    )
    text = TextConfig(max_tokens=c.pop("max_tokens", base.text.max_tokens))
    return dataclasses.replace(base, embeddings=emb, model=model, text=text, **c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="run only the labels this regex matches")
    parser.add_argument(
        "--val-carve",
        choices=("group", "review", "tail"),
        default="group",
        help="group: `train`'s salted hash of each review's group_id (the product); "
        "review: the same hash of review_id (products straddle the carve; `train` before "
        "group_id); tail: the last positions of each source file's train part, as the "
        "canonical test split takes the last 200 of 1,000",
    )
    args = parser.parse_args()
    if args.val_carve != "group":
        import common

        from sentiment import trainer

        trainer.split_keys = lambda table: table["review_id"].to_pylist()
        if args.val_carve == "tail":
            trainer.in_validation = _in_tail
        common.EMB_KEY_SUFFIX = f"-{args.val_carve}"
    base = TrainConfig(data=prepared_amazon(), val_fraction=0.1)
    lines, sizes = [], ()
    for label, change in SWEEP:
        if not re.search(args.only, label):
            continue
        cfg = configure(base, change)
        print(label, flush=True)
        out = plain_train(cfg, amazon_embeddings(cfg), args.threads, evaluate=("val",))
        history = out["history"]
        sizes = (len(out["splits"]["train"]), len(out["splits"]["val"]))
        best = max(h["val"]["accuracy"] for h in history)
        rate = sum(h["train"]["n"] for h in history) / sum(h["train"]["seconds"] for h in history)
        lines.append(
            f"| {label} | {100 * history[-1]['val']['accuracy']:.2f} % | {100 * best:.2f} % | "
            f"{100 * out['train_eval']['accuracy']:.2f} % | {rate:,.0f} |"
        )
    only = f" --only {shlex.quote(args.only)}" if args.only else ""
    only += f" --val-carve {args.val_carve}" if args.val_carve != "group" else ""
    body = f"""
Command: `.venv/bin/python tests/benchmarks/sweep_train.py --threads {args.threads}{only}`

`gru` unless named, 6 epochs, trained on {sizes[0]:,} reviews of the train split, accuracy on
the {sizes[1]:,} held out ({CARVES[args.val_carve]}; one review is {100 / sizes[1]:.2f} points, and
seed-to-seed spread is about ±1 point). The test split is not used here.

| change from the defaults | val acc (last epoch) | best epoch | train acc | train reviews/s |
|---|---:|---:|---:|---:|
{chr(10).join(lines)}
"""
    write_section(f"Validation sweep (sweep_train.py{only})", body)
    print(body)


def _in_tail(review_id: str, val_fraction: float) -> bool:
    """Amazon ids end in the review's position in its file; train positions are 0..799."""
    return val_fraction > 0 and int(review_id.rsplit("/", 1)[1]) >= 800 * (1 - val_fraction)


if __name__ == "__main__":
    main()
