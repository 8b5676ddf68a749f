"""The default `gru` against TF-IDF + logistic regression on the same splits, over seeds.

    .venv/bin/python tests/benchmarks/bench_accuracy.py [--threads 1] [--seeds 0,1,2]
        [--skip-loco] [--skip-calibration] [--skip-speed]

Needs the `bench` extra (scikit-learn): `.venv/bin/pip install -e '.[bench]'`.

- Canonical split: each seed trains word2vec (that seed) on the 6,400 training reviews and
  the default `gru` (that seed) on them; accuracy on the 1,600 test reviews. The linear
  baseline is TF-IDF over 1-2-grams of the same tokens (sublinear tf) and logistic
  regression, C chosen on three validation tenths of the train split (the `--folds` carve
  of sweep_train.py); it is deterministic, so every seed gives it the same figure.
- Short reviews: the same models on each test review's title alone (one line, read from
  the source XML), reviews with no known word counted wrong.
- Leave one category out: the labelled training reviews are the train split of three
  categories, the test reviews the fourth's test split. word2vec is the one of the
  canonical run (unlabelled text of the whole train split, never a test review).
- The three seeds' models as an ensemble (probabilities averaged): an extra, not the default.
- Calibration: models trained with a validation tenth (fold k for seed k), a temperature
  fitted on it; expected calibration error on the test split before and after.
- Scoring speed of the default model (and of the previous default's shape where it differs)
  and of an ensemble of three, one thread, same vocabulary and rows.

Test figures are reported only: nothing here chooses a setting. Writes a section of
RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import re
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import (
    AMAZON,
    CACHE,
    amazon_embeddings,
    gru_alone,
    plain_train,
    prepared_amazon,
    write_section,
)

from sentiment.config import ModelConfig, TrainConfig
from sentiment.datasets import hash_fraction, read_prepared, split_keys
from sentiment.evaluation import expected_calibration_error, fit_temperature, summarize
from sentiment.models import calibrate
from sentiment.text import tokenize
from sentiment.training import encode_split, evaluate_split, length_batches, predict

CATEGORIES = ("books", "dvd", "electronics", "kitchen")
C_GRID = (1, 3, 10, 30, 100)


# --- data -----------------------------------------------------------------------------------


def dataset() -> dict[str, np.ndarray]:
    table = read_prepared(
        prepared_amazon(),
        columns=["review_id", "text", "label", "category", "split", "group_id"],
    )
    cols = {k: np.asarray(v, dtype=object) for k, v in table.to_pydict().items()}
    cols["label"] = cols["label"].astype(np.int64)
    cols["hash"] = np.array([hash_fraction(f"val:{k}") for k in split_keys(table)])
    cols["title"] = np.array([TITLES.get(i, "") for i in cols["review_id"]], dtype=object)
    return cols


def titles() -> dict[str, str]:
    """review_id -> title, read from the source files as the reader reads them."""
    from sentiment.readers import _FIELD, _REVIEW, _read_text, _unescape

    out = {}
    for category in CATEGORIES:
        for stem in ("positive", "negative"):
            path = AMAZON / category / f"{stem}.review"
            for i, block in enumerate(_REVIEW.findall(_read_text(path))):
                fields = {name: _unescape(value) for name, value in _FIELD.findall(block)}
                out[f"amazon/{category}/{stem}/{i}"] = fields.get("title", "")
    return out


TITLES: dict[str, str] = {}


def loco_dataset(category: str) -> str:
    """A prepared dataset: the train split of the other categories, the test split of this one."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = CACHE / f"loco-{category}"
    if not (out / "part-0.parquet").exists():
        table = read_prepared(prepared_amazon())
        train = pc.and_(
            pc.equal(table["split"], "train"), pc.not_equal(table["category"], category)
        )
        test = pc.and_(pc.equal(table["split"], "test"), pc.equal(table["category"], category))
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pc.or_(train, test)), out / "part-0.parquet")
    return str(out)


# --- TF-IDF + logistic regression -------------------------------------------------------------


def tfidf(train_texts, train_labels, C: float):
    """Fit the baseline; returns P(positive) for a list of texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def grams(text: str) -> list[str]:
        words = tokenize(text)
        return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]

    vectorizer = TfidfVectorizer(analyzer=grams, sublinear_tf=True)
    model = LogisticRegression(C=C, solver="liblinear")
    model.fit(vectorizer.fit_transform(train_texts), train_labels)
    return lambda texts: model.predict_proba(vectorizer.transform(texts))[:, 1]


def choose_c(d) -> tuple[float, dict[float, float]]:
    """C with the best mean accuracy over the three validation folds of the train split."""
    scores = {c: [] for c in C_GRID}
    for fold in range(3):
        val = (d["split"] == "train") & (d["hash"] >= fold / 10) & (d["hash"] < (fold + 1) / 10)
        train = (d["split"] == "train") & ~val
        for c in C_GRID:
            p = tfidf(d["text"][train], d["label"][train], c)(list(d["text"][val]))
            scores[c].append(((p >= 0.5) == d["label"][val]).mean())
    means = {c: float(np.mean(v)) for c, v in scores.items()}
    return max(means, key=means.get), means


def accuracy(p: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of P(positive); NaN (no known word) counts wrong."""
    return float(np.mean(np.where(np.isnan(p), False, (p >= 0.5) == labels)))


# --- the GRU -------------------------------------------------------------------------------------


def gru_p(model, vocab, texts, max_tokens: int) -> np.ndarray:
    """P(positive) of texts; NaN where no word is known."""
    split = encode_split(texts, [0] * len(texts), ["-"] * len(texts), vocab, max_tokens)
    log_probs = predict(
        model, split, length_batches(split.lengths, 256, shuffle=False), torch.device("cpu")
    )
    return np.where(split.scored, np.exp(log_probs[:, 1]), np.nan)


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def spread(values: list[float]) -> str:
    """mean ± standard deviation (min–max) of accuracies."""
    if len(values) == 1:
        return pct(values[0])
    return (
        f"{pct(statistics.mean(values))} ± {100 * statistics.stdev(values):.2f} "
        f"({100 * min(values):.2f}–{100 * max(values):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--skip-loco", action="store_true")
    parser.add_argument("--skip-calibration", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--loco-word2vec",
        choices=("all", "three"),
        default="all",
        help="leave one category out with word2vec on the whole train split (all) or on the "
        "three training categories' reviews only (three)",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    TITLES.update(titles())
    d = dataset()
    train, test = d["split"] == "train", d["split"] == "test"
    y_test, texts_test, titles_test = (
        d["label"][test],
        list(d["text"][test]),
        list(d["title"][test]),
    )
    cats_test = d["category"][test]

    c, c_scores = choose_c(d)
    print(f"TF-IDF: C {c} on validation {c_scores}", flush=True)
    linear = tfidf(d["text"][train], d["label"][train], c)
    lin_test, lin_titles = linear(texts_test), linear(titles_test)

    base = TrainConfig(data=prepared_amazon())
    gru: dict[int, dict] = {}
    for seed in seeds:
        cfg = dataclasses.replace(
            base, seed=seed, embeddings=dataclasses.replace(base.embeddings, seed=seed)
        )
        print(f"gru, seed {seed}", flush=True)
        emb = amazon_embeddings(cfg)
        out = plain_train(cfg, emb, args.threads, evaluate=())
        model = out["model"].eval()
        gru[seed] = {
            "emb": emb,
            "test": gru_p(model, emb.vocab, texts_test, cfg.text.max_tokens),
            "titles": gru_p(model, emb.vocab, titles_test, cfg.text.max_tokens),
            "model": model,
        }
        with gru_alone(model):
            gru[seed]["test_alone"] = gru_p(model, emb.vocab, texts_test, cfg.text.max_tokens)
            gru[seed]["titles_alone"] = gru_p(model, emb.vocab, titles_test, cfg.text.max_tokens)
    with warnings.catch_warnings():  # a title no model knows a word of stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_p = {k: np.nanmean([g[k] for g in gru.values()], axis=0) for k in ("test", "titles")}

    rows = []
    cases = [("test split", "test", lin_test), ("titles only", "titles", lin_titles)]
    if base.ngrams:
        cases += [
            ("test split, the GRU alone", "test_alone", lin_test),
            ("titles only, the GRU alone", "titles_alone", lin_titles),
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for k in ("test_alone", "titles_alone"):
                mean_p[k] = np.nanmean([g[k] for g in gru.values()], axis=0)
    for what, key, lin in cases:
        accs = [accuracy(g[key], y_test) for g in gru.values()]
        rows.append(
            f"| {what} | {pct(accuracy(lin, y_test))} | {spread(accs)} | "
            + " | ".join(pct(a) for a in accs)
            + f" | {pct(accuracy(mean_p[key], y_test))} |"
        )
    per_cat = []
    for cat in CATEGORIES:
        m = cats_test == cat
        accs = [accuracy(g["test"][m], y_test[m]) for g in gru.values()]
        per_cat.append(
            f"| {cat} | {pct(accuracy(lin_test[m], y_test[m]))} | {spread(accs)} | "
            f"{pct(accuracy(mean_p['test'][m], y_test[m]))} |"
        )
    n_words = np.mean([len(tokenize(t)) for t in titles_test])
    unscored = int(np.isnan(gru[seeds[0]]["titles"]).sum())
    body = f"""
Command: `.venv/bin/python tests/benchmarks/bench_accuracy.py --threads {args.threads} --seeds {args.seeds}{" --skip-loco" * args.skip_loco}{" --skip-calibration" * args.skip_calibration}{" --skip-speed" * args.skip_speed}{" --loco-word2vec three" * (args.loco_word2vec == "three")}`

Default `gru` ({_describe(base)}), seeds {args.seeds} (model and
word2vec), trained on the 6,400 training reviews; TF-IDF 1–2-grams (sublinear tf, the same
tokenizer) + logistic regression (liblinear), C = {c:g} chosen on the three validation
tenths of the train split ({", ".join(f"C {k:g}: {100 * v:.2f} %" for k, v in c_scores.items())};
deterministic: the same for every seed). Accuracy: mean ± standard deviation over the seeds
(min–max). Test figures only report; nothing was chosen on them.

| test reviews | TF-IDF + LR | `gru` default, mean ± sd (min–max) | {" | ".join(f"seed {s}" for s in seeds)} | ensemble of the {len(seeds)} |
|---|---:|---:|{"---:|" * len(seeds)}---:|
{chr(10).join(rows)}

Titles only: each test review cut to its title ({n_words:.1f} words on average; {unscored} of
1,600 have no word the `gru` knows, counted wrong).

Per category (test split):

| category | TF-IDF + LR | `gru` default | ensemble |
|---|---:|---:|---:|
{chr(10).join(per_cat)}
"""
    if not args.skip_loco:
        body += loco_section(d, c, gru, base, args.threads, args.loco_word2vec)
    if not args.skip_calibration:
        body += calibration_section(base, gru, args.threads, texts_test, y_test, lin_test)
    if not args.skip_speed:
        body += speed_section(gru[seeds[0]], base)
    variant = " --loco-word2vec three" if args.loco_word2vec == "three" else ""
    # a run that skips parts writes a section of its own: the full one stays
    variant += "".join(
        f" --skip-{k}" for k in ("loco", "calibration", "speed") if getattr(args, f"skip_{k}")
    )
    write_section(
        f"Accuracy against TF-IDF + logistic regression (bench_accuracy.py{variant})", body
    )
    print(body)


def _describe(cfg: TrainConfig) -> str:
    m, e = cfg.model, cfg.embeddings
    extras = [
        f"{k.replace('_', ' ')} {getattr(m, k)}" for k in ("word_dropout",) if getattr(m, k)
    ] + (["word bias"] if m.word_bias else [])
    if cfg.ngrams:
        extras.append(
            f"n-gram head: words and pairs in ≥ {cfg.ngram_min_df} reviews, C {cfg.ngram_c:g}, "
            f"weight {m.ngram_weight:g}"
        )
    return ", ".join(
        [
            f"{m.readout} read-out",
            f"hidden {m.hidden_size}",
            f"{cfg.epochs} epochs",
            f"batch {cfg.batch_size}, lr {cfg.lr:g} {cfg.lr_schedule}",
            f"word2vec {e.dim}-d, window {e.window}, negative {e.negative}, sample {e.sample:g}, "
            f"min_count {e.min_count}, {e.epochs or 'auto'} epochs",
            *extras,
        ]
    )


def loco_section(d, c: float, gru: dict, base: TrainConfig, threads: int, w2v: str) -> str:
    """Train on three categories' labelled reviews, test on the fourth's test split."""
    lines, lin_all, gru_all = [], [], {s: [] for s in gru}
    alone_all: dict[int, list[float]] = {s: [] for s in gru}
    for cat in CATEGORIES:
        train = (d["split"] == "train") & (d["category"] != cat)
        test = (d["split"] == "test") & (d["category"] == cat)
        lin = accuracy(
            tfidf(d["text"][train], d["label"][train], c)(list(d["text"][test])), d["label"][test]
        )
        accs, alone = [], []
        for seed, g in gru.items():
            cfg = dataclasses.replace(
                base,
                data=loco_dataset(cat),
                seed=seed,
                embeddings=dataclasses.replace(base.embeddings, seed=seed),
            )
            print(f"leave out {cat}, seed {seed}", flush=True)
            emb = g["emb"] if w2v == "all" else amazon_embeddings(cfg)
            out = plain_train(cfg, emb, threads, evaluate=("test",))
            accs.append(out["history"][-1]["test"]["accuracy"])
            gru_all[seed].append(accs[-1])
            with gru_alone(out["model"]):
                alone.append(
                    evaluate_split(out["model"], out["splits"]["test"], torch.device("cpu"))[
                        "accuracy"
                    ]
                )
                alone_all[seed].append(alone[-1])
        lin_all.append(lin)
        lines.append(f"| {cat} | {pct(lin)} | {spread(accs)} | {spread(alone)} |")
    means = [statistics.mean(v) for v in gru_all.values()]
    means_alone = [statistics.mean(v) for v in alone_all.values()]
    lines.append(
        f"| **average** | **{pct(statistics.mean(lin_all))}** | **{spread(means)}** | "
        f"**{spread(means_alone)}** |"
    )
    seen = (
        "as above (all 6,400 training reviews as unlabelled text, the left-out category's "
        "included; never a test review)"
        if w2v == "all"
        else "trained on the three categories' 4,800 training reviews only (the left-out "
        "category unseen, as by the linear model)"
    )
    return f"""
Leave one category out: trained on the other three categories' training reviews (4,800),
tested on the left-out category's 400 test reviews. word2vec {seen}.

| left out | TF-IDF + LR | `gru` default, mean ± sd (min–max) | its GRU alone |
|---|---:|---:|---:|
{chr(10).join(lines)}
"""


def calibration_section(base, gru, threads, texts_test, y_test, lin_test) -> str:
    """Temperature fitted on a validation tenth; test ECE before and after."""
    seeds, lines = list(gru), []
    for seed in seeds:
        common.use_fold(seed)
        cfg = dataclasses.replace(
            base,
            val_fraction=0.1,
            seed=seed,
            embeddings=dataclasses.replace(base.embeddings, seed=seed),
        )
        print(f"calibration, fold {seed}", flush=True)
        emb = amazon_embeddings(cfg)
        out = plain_train(cfg, emb, threads, evaluate=())
        model, splits = out["model"].eval(), out["splits"]
        val = splits["val"]
        lp_val = predict(
            model, val, length_batches(val.lengths, 256, shuffle=False), torch.device("cpu")
        )
        t = fit_temperature(val.labels[val.scored], lp_val[val.scored])
        test = splits["test"]
        lp = predict(
            model, test, length_batches(test.lengths, 256, shuffle=False), torch.device("cpu")
        )
        after = calibrate(torch.from_numpy(lp), t).numpy()
        m0 = summarize(test.labels, lp, scored=test.scored)
        m1 = summarize(test.labels, after, scored=test.scored)
        lines.append(
            f"| {seed} | {t:.3f} | {100 * m0['ece']:.2f} % | {100 * m1['ece']:.2f} % | "
            f"{m0['cross_entropy']:.4f} | {m1['cross_entropy']:.4f} | {pct(m0['accuracy'])} |"
        )
    common.use_fold(0)
    lin_ece = expected_calibration_error(y_test, lin_test)

    def ece(key: str) -> str:
        return ", ".join(
            f"{100 * expected_calibration_error(y_test[ok], g[key][ok]):.2f} %"
            for g in gru.values()
            for ok in [~np.isnan(g[key])]
        )

    alone = f" (the GRU alone: {ece('test_alone')})" if "test_alone" in gru[seeds[0]] else ""
    return f"""
Calibration (`train --val-fraction 0.1`: a temperature fitted on the validation tenth, fold
k for seed k; the model trained on the rest): expected calibration error over 10 bins of
p_positive and cross-entropy on the test split, before and after the temperature. TF-IDF +
LR for comparison: ECE {100 * lin_ece:.2f} %. The default `train` (all 6,400 training reviews,
no temperature), seeds {", ".join(map(str, seeds))}: test ECE {ece("test")}{alone}.

| seed | temperature | test ECE before | after | test CE before | after | test acc |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(lines)}
"""


def speed_section(g: dict, base: TrainConfig) -> str:
    """Scorer reviews/s, 1 thread: the default model as trained, the GRU alone (the previous
    default) and an ensemble of three GRUs alone."""
    import tempfile

    from bench_score import make_collection, scorer_breakdown

    from sentiment.artifacts import load_model_dir, write_ensemble_dir, write_model_dir
    from sentiment.config import TextConfig
    from sentiment.models import build_model

    emb = g["emb"]
    shapes = {"the GRU alone (the previous default)": ModelConfig()}
    with tempfile.TemporaryDirectory() as tmp:
        files_dir = Path(tmp) / "reviews"
        make_collection(files_dir, 20_000, seed=1)
        files = sorted(files_dir.glob("*.parquet"))
        dirs = {"default (the GRU and its n-gram head, as trained)": Path(tmp) / "default"}
        write_model_dir(
            dirs["default (the GRU and its n-gram head, as trained)"],
            g["model"],
            emb.vocab,
            TextConfig(),
            {},
        )
        for name, shape in shapes.items():
            shape = dataclasses.replace(
                shape, vocab_size=len(emb.vocab), embed_dim=emb.matrix.shape[1]
            )
            dirs[name] = Path(tmp) / re.sub(r"\W+", "-", name)
            model = build_model(shape, emb.matrix)
            write_model_dir(dirs[name], model, emb.vocab, TextConfig(), {})
        members = []
        for seed in range(3):  # three differently initialised GRUs alone
            torch.manual_seed(seed)
            directory = Path(tmp) / f"member-{seed}"
            shape = dataclasses.replace(
                ModelConfig(), vocab_size=len(emb.vocab), embed_dim=emb.matrix.shape[1]
            )
            write_model_dir(directory, build_model(shape, emb.matrix), emb.vocab, TextConfig(), {})
            members.append(load_model_dir(directory))
        dirs["ensemble of three GRUs alone"] = Path(tmp) / "ensemble"
        write_ensemble_dir(dirs["ensemble of three GRUs alone"], members)
        rates = {
            name: max(scorer_breakdown(d, files, "table", 1)["rate"] for _ in range(3))
            for name, d in dirs.items()
        }
    lines = [f"| {name} | {rate:,.0f} |" for name, rate in rates.items()]
    return f"""
Scoring speed, the Scorer in one process, 1 thread, best of 3 passes over the same 20,000
resampled reviews (reading, tokenizing and the model; the weights do not matter):

| model | reviews/s |
|---|---:|
{chr(10).join(lines)}
"""


if __name__ == "__main__":
    main()
