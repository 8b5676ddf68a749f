"""Scorer throughput of this checkout against another git revision, interleaved (A/B).

    .venv/bin/python tests/benchmarks/ab_scorer.py --base 3fe4fcf [--rounds 4] [--rows 20000]

The base revision's `sentiment` package is exported with `git archive` to a temporary
directory. A model directory written by the base code (a `gru` with the default shape over
the real reviews' word2vec, random weights) is scored by both in turns, one process per
pass-set, one thread, best of 3 passes over the same resampled reviews each time; A and B
alternate so that the machine's drift (other jobs on a shared machine) falls on both.
Writes a section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_section

# Runs inside a child process: drop the editable install's finder so that the `sentiment`
# first on sys.path (the exported base, or this checkout) is the one imported.
CHILD = r"""
import json, sys, time
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, sys.argv[1])
import pyarrow.parquet as pq, torch
torch.set_num_threads(1)
from pathlib import Path
from sentiment.scoring import Scorer
if sys.argv[2] == "make-model":
    import glob
    from sentiment.artifacts import write_model_dir
    from sentiment.config import ModelConfig, TextConfig
    from sentiment.embeddings import load_embeddings
    from sentiment.models import build_model
    emb = load_embeddings(sys.argv[4])
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=len(emb.vocab), embed_dim=emb.dim), emb.matrix)
    write_model_dir(Path(sys.argv[3]), model.eval(), emb.vocab, TextConfig(), {})
    sys.exit(0)
scorer = Scorer(sys.argv[2])
files = sorted(Path(sys.argv[3]).glob("*.parquet"))
best = 0.0
for _ in range(3):
    start, n = time.perf_counter(), 0
    for f in files:
        texts = pq.read_table(f).column("text").to_pylist()
        for k in range(0, len(texts), 4096):
            scorer.score_texts(texts[k : k + 4096])
        n += len(texts)
    best = max(best, n / (time.perf_counter() - start))
print(json.dumps(best))
"""


def _default_model(directory: Path, emb_dir: Path) -> None:
    """The default shape with its n-gram head fitted as `train` fits it (random GRU weights)."""
    import dataclasses

    import torch
    from common import prepared_amazon

    from sentiment.artifacts import write_model_dir
    from sentiment.config import ModelConfig, TextConfig, TrainConfig
    from sentiment.embeddings import load_embeddings
    from sentiment.models import build_model
    from sentiment.train_job import fit_ngrams

    emb = load_embeddings(emb_dir)
    cfg = TrainConfig(data=prepared_amazon())
    fit = fit_ngrams(cfg, emb.vocab)
    shape = dataclasses.replace(
        ModelConfig(),
        vocab_size=len(emb.vocab),
        embed_dim=emb.dim,
        ngrams=True,
        ngram_pairs=len(fit.pairs),
    )
    torch.manual_seed(0)
    model = build_model(shape, emb.matrix)
    model.ngram.load_fit(fit)
    write_model_dir(directory, model.eval(), emb.vocab, TextConfig(), {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    from bench_score import make_collection
    from common import amazon_embeddings, prepared_amazon

    from sentiment.config import TrainConfig

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        base.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.base, "sentiment"], cwd=REPO, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        emb_dir = tmp / "emb"
        from sentiment.embeddings import save_embeddings

        save_embeddings(amazon_embeddings(TrainConfig(data=prepared_amazon())), emb_dir)
        model = tmp / "model"

        def child(code: Path, *argv: str) -> str:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(code), *argv],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            return out.stdout.strip()

        child(base, "make-model", str(model), str(emb_dir))
        with_head = tmp / "model-ngrams"
        _default_model(with_head, emb_dir)
        make_collection(tmp / "reviews", args.rows, seed=1)
        rates: dict[str, list[float]] = {"base": [], "this": [], "this, default": []}
        arms = (("base", base, model), ("this", REPO, model), ("this, default", REPO, with_head))
        for r in range(args.rounds):
            for name, code, directory in arms:
                rates[name].append(json.loads(child(code, str(directory), str(tmp / "reviews"))))
            print(r, {k: round(v[-1]) for k, v in rates.items()}, flush=True)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"| {name} | "
        + " | ".join(f"{v:,.0f}" for v in values)
        + f" | {statistics.median(values):,.0f} | {max(values):,.0f} |"
        for name, values in (
            (f"base ({args.base})", rates["base"]),
            (f"this ({head}, uncommitted changes included)", rates["this"]),
            (
                f"this ({head}), today's default: the GRU and its n-gram head",
                rates["this, default"],
            ),
        )
    ]
    body = f"""
Command: `.venv/bin/python tests/benchmarks/ab_scorer.py --base {args.base} --rounds {args.rounds} --rows {args.rows}`

The Scorer (reviews/s, 1 thread, best of 3 passes over {args.rows:,} resampled real reviews:
reading, tokenizing, the model) of the base revision and of this checkout, on one model
directory written by the base code (the default `gru` shape, random weights), in turns; and
this checkout on today's default model: that GRU with an n-gram head fitted on the 6,400
training reviews (`train`'s default settings):

| code | {" | ".join(f"round {r + 1}" for r in range(args.rounds))} | median | best |
|---|{"---:|" * args.rounds}---:|---:|
{chr(10).join(lines)}
"""
    write_section("Scorer throughput against a base revision (ab_scorer.py)", body)
    print(body)


if __name__ == "__main__":
    main()
