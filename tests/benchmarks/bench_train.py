"""Training: accuracy and speed of every variant on the real reviews' canonical split.

    .venv/bin/python tests/benchmarks/bench_train.py [--threads 2] [--epochs 6] [--skip-ray]
        [--w2v-epochs N]   # other word2vec epochs than the default: a section of its own

1. A batch-size-1 loop like the original (per-review tensors, embeddings looked up in
   Python) for gru, grub and gruh: reviews/s only, over 400 reviews each.
2. Validation (10 % of the train split, never the test split): the read-out (last vs
   max) and the defaults, to choose settings.
3. Every variant with the default settings on the whole train split (6,400 reviews),
   plain-torch loop, evaluated on the 1,600 test reviews: time, reviews/s, train/test
   accuracy and cross-entropy, per-category test accuracy.
4. The same `gru` run through Ray Train (1 worker) against the plain-torch loop.
Writes a section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import amazon_embeddings, plain_train, prepared_amazon, write_section

from sentiment.config import ModelConfig, TrainConfig
from sentiment.evaluation import category_table, results_table
from sentiment.models import build_model
from sentiment.train_job import load_splits


def batch1_rate(cfg: TrainConfig, emb, n: int, threads: int) -> float:
    """Reviews/s of the original's training step: one review, Python look-ups, a step each."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=len(emb.vocab), embed_dim=emb.dim)
    model = build_model(model_cfg, emb.matrix)
    encoder, head = model.encoder, model.head
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    split = load_splits(dataclasses.replace(cfg, val_fraction=0.0), emb.vocab)["train"]
    order = np.random.default_rng(0).permutation(len(split))[:n]
    start = time.perf_counter()
    for i in order:
        words = split.ids[i]
        if len(words) == 0:
            continue
        x = torch.tensor(np.stack([emb.matrix[w] for w in words])).unsqueeze(0)  # (1, T, E)
        outs = encoder(x, torch.tensor([len(words)]))
        feats = torch.cat([o[:, -1] for o in outs], -1)  # the last step, as the original
        log_probs = torch.log_softmax(head(torch.relu(feats)), -1)
        loss = torch.nn.functional.nll_loss(log_probs, torch.tensor([int(split.labels[i])]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return n / (time.perf_counter() - start)


def row(name: str, out: dict, cfg: TrainConfig) -> dict:
    history = out["history"]
    seconds = sum(h["train"]["seconds"] for h in history)
    return {
        "model": name,
        "train_seconds": seconds,
        "rate": sum(h["train"]["n"] for h in history) / seconds,
        "train": out["train_eval"],
        "test": history[-1]["test"],
        "val": history[-1].get("val"),
    }


def ray_train_epochs(cfg: TrainConfig, threads: int) -> tuple[float, float, dict]:
    """Seconds of the training epochs inside Ray Train (1 worker) and of fit() as a whole."""
    import ray

    from sentiment.train_job import run_training

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-", dir="/tmp"))
    ray.init(
        address="local", include_dashboard=False, _temp_dir=str(tmp / "ray"), log_to_driver=False
    )
    cfg = dataclasses.replace(
        cfg,
        store=str(tmp / "store"),
        storage_path=str(tmp / "runs"),
        cpus_per_worker=threads,
        threads_per_worker=threads,
    )
    start = time.perf_counter()
    result = run_training(cfg)
    total = time.perf_counter() - start
    ray.shutdown()
    epochs = sum(h["train"]["seconds"] for h in result.metrics["history"])
    return epochs, total, result.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--variants", default="gru,grub,gruh,pmgru")
    parser.add_argument("--w2v-epochs", type=int, default=None)
    args = parser.parse_args()
    log = lambda s: print(s, flush=True)  # noqa: E731

    base = TrainConfig(data=prepared_amazon(), epochs=args.epochs)
    if args.w2v_epochs:
        base = dataclasses.replace(
            base, embeddings=dataclasses.replace(base.embeddings, epochs=args.w2v_epochs)
        )
    flags = f" --w2v-epochs {args.w2v_epochs}" if args.w2v_epochs else ""
    flags += " --skip-ray" if args.skip_ray else ""
    emb = amazon_embeddings(base)
    cfg_of = lambda v, **kw: dataclasses.replace(  # noqa: E731
        base, model=dataclasses.replace(base.model, variant=v), **kw
    )

    log("batch-size-1 baseline")
    batch1 = {v: batch1_rate(cfg_of(v), emb, 400, args.threads) for v in ("gru", "grub", "gruh")}
    log(str(batch1))

    log("validation: read-out")
    val_rows = []
    for readout in ("last", "max"):
        cfg = dataclasses.replace(
            cfg_of("gru", val_fraction=0.1), model=ModelConfig(variant="gru", readout=readout)
        )
        out = plain_train(cfg, amazon_embeddings(cfg), args.threads, log)
        val_rows.append(
            (readout, out["history"][-1]["val"]["accuracy"], row("gru", out, cfg)["rate"])
        )

    rows = []
    for variant in args.variants.split(","):
        log(f"test split: {variant}")
        cfg = cfg_of(variant)
        out = plain_train(cfg, emb, args.threads, log)
        rows.append(row(variant, out, cfg))
    best = max(rows, key=lambda r: r["test"]["accuracy"])

    ray_line = "not run (--skip-ray)"
    if not args.skip_ray:
        log("Ray Train, 1 worker")
        epochs_s, total_s, metrics = ray_train_epochs(cfg_of("gru"), args.threads)
        plain_s = next(r for r in rows if r["model"] == "gru")["train_seconds"]
        ray_line = (
            f"{args.epochs} epochs of `gru` took {epochs_s:.1f} s inside Ray Train (1 worker, "
            f"{args.threads} threads) against {plain_s:.1f} s in the plain-torch loop: "
            f"**{epochs_s / plain_s - 1:+.1%}**. The whole `run_training` (word2vec on the driver, "
            f"Ray Train start, per-epoch checkpoints, final evaluation, model directory) took "
            f"{total_s:.1f} s. Test accuracy through Ray Train: "
            f"{100 * metrics['test']['accuracy']:.2f} %."
        )

    table = results_table(rows)
    rates = "\n".join(
        f"| `{r['model']}` | {r['rate']:,.0f} | "
        + (f"{r['rate'] / batch1[r['model']]:.1f}× |" if r["model"] in batch1 else "– |")
        for r in rows
    )
    body = f"""
Command: `.venv/bin/python tests/benchmarks/bench_train.py --threads {args.threads} --epochs {args.epochs}{flags}`

Data: the 8,000 real reviews, canonical split (6,400 train / 1,600 test). Defaults:
{_defaults(base, emb)}. Embeddings: word2vec trained on the train split
({emb.meta.get("vocab_size", len(emb.vocab)):,} words, coverage {100 * emb.meta.get("coverage", float("nan")):.2f} %).
Plain-torch loop, {args.threads} threads, CPU. Test figures are reported only; settings were chosen on validation.

{table}

Training speed (reviews/s over the {args.epochs} epochs) against a batch-size-1 loop like the original
(per-review tensors, embeddings looked up in Python; measured here over 400 reviews):

| variant | reviews/s | × batch-1 |
|---|---:|---:|
{rates}

Batch-size-1 loop: {", ".join(f"{k} {v:.0f}/s" for k, v in batch1.items())}.

Best test accuracy: `{best["model"]}` {100 * best["test"]["accuracy"]:.2f} %; per category:

```
{category_table(best["test"])}
```

Read-out on the validation split (10 % of train, `gru`, defaults otherwise):
{"; ".join(f"`{r}` {100 * a:.2f} % ({s:,.0f} reviews/s)" for r, a, s in val_rows)}.

Ray Train overhead: {ray_line}
"""
    w2v = f" --w2v-epochs {args.w2v_epochs}" if args.w2v_epochs else ""
    write_section(f"Training (bench_train.py{w2v})", body)
    log(body)


def _defaults(cfg: TrainConfig, emb) -> str:
    m, e = cfg.model, cfg.embeddings
    epochs = f"{emb.meta['epochs']} epochs" + (" (auto)" if e.epochs is None else "")
    return (
        f"hidden {m.hidden_size}, {m.layers} layer, `{m.readout}` read-out, frozen embeddings, "
        f"Adam lr {cfg.lr:g} ({cfg.lr_schedule}), batch {cfg.batch_size} (length-bucketed), "
        f"max_tokens {cfg.text.max_tokens}, word2vec {'skip-gram' if e.sg else 'CBOW'} "
        f"{e.dim}-d, {epochs}, window {e.window}, min_count {e.min_count}"
    )


if __name__ == "__main__":
    main()
