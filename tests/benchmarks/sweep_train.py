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
import os
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import amazon_embeddings, plain_train, prepared_amazon, write_section

from sentiment.config import TextConfig, TrainConfig

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
    # Issue 11: candidates beyond the defaults, each over three folds (--folds 3).
    ("read-out max-mean", {"readout": "max-mean"}),
    ("word bias", {"word_bias": True}),
    ("word dropout 0.1", {"word_dropout": 0.1}),
    ("word dropout 0.25", {"word_dropout": 0.25}),
    ("weight decay 0.05", {"weight_decay": 0.05}),
    ("label smoothing 0.1", {"label_smoothing": 0.1}),
    ("8 epochs", {"epochs": 8}),
    ("4 epochs", {"epochs": 4}),
    ("trainable embeddings, lr 1e-4", {"freeze": False, "embedding_lr": 1e-4}),
    ("trainable embeddings, lr 3e-4", {"freeze": False, "embedding_lr": 3e-4}),
    ("hidden 50", {"hidden_size": 50}),
    ("word2vec window 10", {"window": 10}),
    ("word2vec window 3", {"window": 3}),
    ("word2vec negative 15", {"negative": 15}),
    ("word2vec sample 1e-4", {"sample": 1e-4}),
    ("word2vec min_count 1", {"min_count": 1}),
    ("word2vec min_count 3", {"min_count": 3}),
    ("word2vec dim 100", {"dim": 100}),
    ("word2vec phrases 10", {"phrases": 10.0}),
    ("word2vec 20 epochs", {"w2v_epochs": 20}),
    ("`grub`", {"variant": "grub"}),
    ("`gruh`", {"variant": "gruh"}),
    ("`pmgru`", {"variant": "pmgru"}),
    # Issue 11, word2vec beyond the auto budget (40 epochs on the train split less a fold).
    ("word2vec 80 epochs", {"w2v_epochs": 80}),
    # Issue 11: the n-gram head (on by default since), its settings.
    ("no n-gram head", {"ngrams": False}),
    ("n-gram C 3", {"ngram_c": 3.0}),
    ("n-gram C 30", {"ngram_c": 30.0}),
    ("n-gram C 100", {"ngram_c": 100.0}),
    ("n-gram min_df 1", {"ngram_min_df": 1}),
    ("n-gram min_df 1, C 30", {"ngram_min_df": 1, "ngram_c": 30.0}),
    ("n-gram weight 0.3", {"ngram_weight": 0.3}),
    ("n-gram weight 0.7", {"ngram_weight": 0.7}),
    # The small gains above, together.
    ("max-mean, 8 epochs", {"readout": "max-mean", "epochs": 8}),
    ("max-mean, word2vec 80 epochs", {"readout": "max-mean", "w2v_epochs": 80}),
    (
        "max-mean, 8 epochs, word2vec 80 epochs",
        {"readout": "max-mean", "epochs": 8, "w2v_epochs": 80},
    ),
]


EMBEDDING_KEYS = ("window", "negative", "sample", "min_count", "dim", "phrases", "corpus")
MODEL_KEYS = ("readout", "dropout", "hidden_size", "word_dropout", "word_bias", "ngram_weight")

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
        **{k: c.pop(k) for k in EMBEDDING_KEYS if k in c},
    )
    model = dataclasses.replace(
        base.model,
        variant=c.pop("variant", base.model.variant),
        freeze_embeddings=c.pop("freeze", base.model.freeze_embeddings),
        **{k: c.pop(k) for k in MODEL_KEYS if k in c},
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
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        help="run each label on folds 0..N-1 (disjoint tenths of the products), fold k with "
        "model and word2vec seed k; report each fold, the mean and the mean paired difference "
        "from the defaults",
    )
    args = parser.parse_args()
    if args.folds:
        main_folds(args)
        return
    if args.val_carve != "group":
        import common

        from sentiment import train_job

        train_job.split_keys = lambda table: table["review_id"].to_pylist()
        if args.val_carve == "tail":
            train_job.in_validation = _in_tail
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


def main_folds(args) -> None:
    """Each selected label (and the defaults) on `args.folds` folds; results cached per run."""
    import json

    import common

    from sentiment.config import to_dict

    store = common.CACHE / os.environ.get("SWEEP_STORE", "sweep-folds.json")
    done = json.loads(store.read_text()) if store.exists() else {}
    labels = ["defaults"] + [lab for lab, _ in SWEEP if args.only and re.search(args.only, lab)]
    changes = dict(SWEEP)
    results: dict[str, list[dict]] = {}
    sizes = []
    for label in dict.fromkeys(labels):
        results[label] = []
        for fold in range(args.folds):
            common.use_fold(fold)
            base = TrainConfig(data=prepared_amazon(), val_fraction=0.1, seed=fold)
            base = dataclasses.replace(
                base, embeddings=dataclasses.replace(base.embeddings, seed=fold)
            )
            cfg = configure(base, changes[label])
            key = f"fold{fold} " + json.dumps(_stable(to_dict(cfg)), sort_keys=True)
            if key not in done:
                print(f"{label}, fold {fold}", flush=True)
                out = plain_train(cfg, amazon_embeddings(cfg), args.threads, evaluate=("val",))
                history = out["history"]
                done[key] = {
                    "val": history[-1]["val"]["accuracy"],
                    "n_val": len(out["splits"]["val"]),
                    "n_train": len(out["splits"]["train"]),
                    "train": out["train_eval"]["accuracy"],
                    "rate": sum(h["train"]["n"] for h in history)
                    / sum(h["train"]["seconds"] for h in history),
                }
                # another sweep may have added runs meanwhile: keep them
                on_disk = json.loads(store.read_text()) if store.exists() else {}
                store.write_text(json.dumps({**on_disk, **done}, indent=1))
            results[label].append(done[key])
            if label == "defaults":
                sizes.append((done[key]["n_train"], done[key]["n_val"]))
    folds = range(args.folds)
    ref = [r["val"] for r in results["defaults"]]
    lines = []
    for label, runs in results.items():
        accs = [r["val"] for r in runs]
        diff = sum(a - b for a, b in zip(accs, ref, strict=True)) / len(accs)
        rate = sum(r["rate"] for r in runs) / len(runs)
        lines.append(
            f"| {label} | "
            + " | ".join(f"{100 * a:.2f} %" for a in accs)
            + f" | **{100 * sum(accs) / len(accs):.2f} %** | {100 * diff:+.2f} | {rate:,.0f} |"
        )
    n_val = sum(v for _, v in sizes)
    only = f" --only {shlex.quote(args.only)}" if args.only else ""
    body = f"""
Command: `.venv/bin/python tests/benchmarks/sweep_train.py --threads {args.threads} --folds {args.folds}{only}`

`gru` with the defaults but for the change named, trained on the train split less one
validation tenth of its products (train's carve by a hash of group_id; fold k is the k-th
tenth, fold 0 train's own), with model and word2vec seed k; word2vec never sees the fold.
Accuracy on the fold ({", ".join(f"{v:,}" for _, v in sizes)} reviews: {n_val:,} in all, one review of
the mean is about {100 / n_val:.2f} points). The test split is not used here. Δ: the mean
paired difference from the defaults, fold by fold.

| change from the defaults | {" | ".join(f"fold {k}" for k in folds)} | mean | Δ | train reviews/s |
|---|{"---:|" * args.folds}---:|---:|---:|
{chr(10).join(lines)}
"""
    write_section(f"Validation over {args.folds} folds (sweep_train.py --folds{only})", body)
    print(body)


# Settings added after runs were cached, at the values those runs had: left out of the key.
LATER = {
    ("calibrate",): True,
    ("ensemble",): 1,
    ("embeddings", "phrases"): 0.0,
    ("embeddings", "corpus"): (),
    ("text", "phrases"): 0,
    ("min_workers",): 0,
    ("resource_timeout_s",): 600.0,
}


def _stable(settings: dict) -> dict:
    if not settings.get("ngrams"):  # runs without the head, before and since it existed
        for name in ("ngrams", "ngram_c", "ngram_min_df"):
            settings.pop(name, None)
        for name in ("ngrams", "ngram_pairs", "ngram_weight"):
            settings["model"].pop(name, None)
    for path, value in LATER.items():
        parent = settings
        for name in path[:-1]:
            parent = parent[name]
        if parent.get(path[-1]) == value:
            del parent[path[-1]]
    return settings


def _in_tail(review_id: str, val_fraction: float) -> bool:
    """Amazon ids end in the review's position in its file; train positions are 0..799."""
    return val_fraction > 0 and int(review_id.rsplit("/", 1)[1]) >= 800 * (1 - val_fraction)


if __name__ == "__main__":
    main()
