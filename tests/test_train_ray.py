"""Training through Ray Train on a real local Ray: every variant, checkpoints, resume, determinism."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from sentiment.artifacts import load_model_dir, resolve_model
from sentiment.config import (
    EmbeddingConfig,
    ModelConfig,
    SentimentError,
    TextConfig,
    TrainConfig,
)
from sentiment.train_job import fit_ngrams, run_training
from sentiment.training import evaluate_models

pytestmark = pytest.mark.ray


def tiny_config(data: Path, tmp: Path, variant: str = "gru", **overrides) -> TrainConfig:
    settings = dict(
        data=str(data),
        model=ModelConfig(variant=variant, hidden_size=8),
        text=TextConfig(max_tokens=50),
        embeddings=EmbeddingConfig(dim=8, min_count=1, epochs=2),
        epochs=2,
        lr=1e-2,
        batch_size=16,
        store=str(tmp / "store"),
        storage_path=str(tmp / "runs"),
        threads_per_worker=1,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.parametrize("variant", ["gru", "grub", "gruh", "pmgru"])
def test_each_variant_trains_through_ray_train_and_loss_falls(
    ray_local, tiny_dataset, tmp_path, variant
):
    result = run_training(tiny_config(tiny_dataset, tmp_path, variant, epochs=3))
    history = result.metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train"]["loss"] < history[0]["train"]["loss"]
    assert result.metrics["test"]["n"] > 0 and "per_category" in result.metrics["test"]
    model_dir = Path(result.model_dir)
    for name in ("config.json", "model.safetensors", "vocab.txt", "metrics.json", "loss_curve.png"):
        assert (model_dir / name).is_file(), name
    assert result.model_id.startswith(f"{variant}-")
    # the store's LATEST pointer names the newest model
    assert resolve_model("latest", str(tmp_path / "store")) == model_dir
    # and a model is found in the store by its id alone
    assert resolve_model(result.model_id, str(tmp_path / "store")) == model_dir
    with pytest.raises(SentimentError, match=f"{tmp_path}/store/{variant}-0123456789ab: model"):
        resolve_model(f"{variant}-0123456789ab", str(tmp_path / "store"))


def test_model_directory_reloads_into_the_trained_model(ray_local, tiny_dataset, tmp_path):
    """Metrics recomputed from the saved directory equal those the workers reported."""
    cfg = tiny_config(tiny_dataset, tmp_path)
    result = run_training(cfg)
    [row] = evaluate_models([result.model_dir], str(tiny_dataset), ["train", "test"])
    for split in ("train", "test"):
        assert row[split]["accuracy"] == result.metrics[split]["accuracy"]
        assert row[split]["cross_entropy"] == pytest.approx(
            result.metrics[split]["cross_entropy"], abs=1e-6
        )
        assert row[split]["confusion"] == result.metrics[split]["confusion"]
    a, b = load_model_dir(result.model_dir), load_model_dir(result.model_dir)
    ids, lengths = torch.tensor([[2, 3, 4, 5]]), torch.tensor([4])
    torch.testing.assert_close(a.model(ids, lengths), b.model(ids, lengths), rtol=0, atol=0)
    # the n-gram head (a default) is the one fitted on the driver, as the driver fits it
    fit = fit_ngrams(cfg, a.vocab)
    assert a.model.config.ngrams and a.model.config.ngram_pairs == len(fit.pairs) > 0
    assert torch.equal(a.model.ngram.pairs, torch.from_numpy(fit.pairs))
    torch.testing.assert_close(a.model.ngram.coef, torch.from_numpy(fit.coef), rtol=0, atol=0)
    assert (
        a.model_id
        == result.model_id
        == json.loads((Path(result.model_dir) / "config.json").read_text())["model_id"]
    )


def test_no_ngrams_publishes_the_gru_alone(ray_local, tiny_dataset, tmp_path):
    result = run_training(tiny_config(tiny_dataset, tmp_path, ngrams=False, epochs=1))
    loaded = load_model_dir(result.model_dir)
    assert loaded.model.ngram is None
    assert (
        json.loads((Path(result.model_dir) / "config.json").read_text())["model"]["ngrams"] is False
    )
    assert not [k for k in loaded.model.state_dict() if k.startswith("ngram.")]


def test_same_configuration_gives_the_same_metrics(ray_local, tiny_dataset, tmp_path):
    first = run_training(tiny_config(tiny_dataset, tmp_path, name="a"))
    second = run_training(tiny_config(tiny_dataset, tmp_path, name="b"))
    losses = lambda r: [h["train"]["loss"] for h in r.metrics["history"]]  # noqa: E731
    assert losses(first) == losses(second)
    assert first.metrics["test"] == second.metrics["test"]
    assert first.model_id == second.model_id  # same weights, same id


def _kill_first_worker_after_a_checkpoint(
    run_dir: Path, stop: threading.Event, dashboard: str
) -> None:
    """Wait for the first checkpoint, then SIGKILL the Ray Train worker process."""
    from ray.util.state import list_actors

    # A checkpoint directory appears before Ray Train registers it; the snapshot lists
    # only registered ones, the ones a restarted worker resumes from.
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while not stop.is_set():
        if snapshot.exists() and "checkpoint_dir_name" in snapshot.read_text():
            for actor in list_actors(
                address=dashboard,
                filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
            ):
                os.kill(actor.pid, signal.SIGKILL)
                return
        time.sleep(0.05)


def test_killed_worker_resumes_from_the_last_checkpoint_and_same_name_resumes(
    ray_local, tiny_dataset, tmp_path
):
    cfg = tiny_config(tiny_dataset, tmp_path, name="resume", epochs=15, max_failures=1)
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_first_worker_after_a_checkpoint,
        args=(tmp_path / "runs" / "resume", stop, ray_local),
    )
    killer.start()
    try:
        result = run_training(cfg)
    finally:
        stop.set()
        killer.join()
    history = result.metrics["history"]
    assert [h["epoch"] for h in history] == list(range(1, 16))
    resumed = result.metrics["resumed_after"]
    assert len(resumed) == 1 and 1 <= resumed[0] < 15, resumed
    # Running again under the same name with more epochs continues instead of starting over.
    again = run_training(tiny_config(tiny_dataset, tmp_path, name="resume", epochs=17))
    assert [h["epoch"] for h in again.metrics["history"]] == list(range(1, 18))
    assert again.metrics["history"][:15] == history
    assert again.metrics["resumed_after"] == [*resumed, 15]


def test_two_workers_train_data_parallel_into_one_model(ray_local, tiny_dataset, tmp_path):
    """DDP over two CPU workers (gloo): each trains on its half of the batches, one model."""
    cfg = tiny_config(
        tiny_dataset, tmp_path, workers=2, cpus_per_worker=0.5, epochs=8, val_fraction=0.25
    )
    result = run_training(cfg)
    history = result.metrics["history"]
    # each epoch's figures cover both shards: all whole batches of the train split
    n_train = result.metrics["train"]["n"]
    assert all(n_train - 2 * 16 < h["train"]["n"] <= n_train for h in history)
    assert history[-1]["train"]["loss"] < history[0]["train"]["loss"]
    assert result.metrics["test"]["n"] > 0
    # a validation carve: a temperature fitted on it, recorded and applied on loading
    calibration = result.metrics["calibration"]
    assert calibration["n"] == result.metrics["val"]["n"] > 0
    assert calibration["val_cross_entropy_after"] <= calibration["val_cross_entropy_before"]
    config = json.loads((Path(result.model_dir) / "config.json").read_text())
    assert config["calibration"] == calibration
    assert load_model_dir(result.model_dir).model.temperature == calibration["temperature"]


def test_store_and_run_storage_accept_uris(ray_local, tiny_dataset, tmp_path):
    cfg = tiny_config(
        tiny_dataset,
        tmp_path,
        epochs=1,
        store=f"file://{tmp_path}/uri-store",
        storage_path=f"file://{tmp_path}/uri-runs",
    )
    result = run_training(cfg)
    assert result.model_dir == f"file://{tmp_path}/uri-store/{result.model_id}"
    local = resolve_model("latest", f"file://{tmp_path}/uri-store")
    assert load_model_dir(local).model_id == result.model_id


def test_word2vec_is_trained_once_per_dataset_and_settings(
    ray_local, tiny_dataset, tmp_path, private_home
):
    cfg = tiny_config(
        tiny_dataset, tmp_path, epochs=1, embeddings=EmbeddingConfig(dim=8, min_count=1, epochs=3)
    )
    first = run_training(cfg)
    cached = list((private_home / "cache" / "embeddings").iterdir())
    second = run_training(cfg)
    assert list((private_home / "cache" / "embeddings").iterdir()) == cached
    assert first.model_id == second.model_id  # same vectors, same training, same weights
    other = run_training(
        dataclasses.replace(cfg, embeddings=EmbeddingConfig(dim=8, min_count=1, epochs=4))
    )
    assert len(list((private_home / "cache" / "embeddings").iterdir())) == len(cached) + 1
    assert other.model_id != first.model_id


def test_a_word2vec_corpus_is_read_and_a_changed_one_retrains(
    ray_local, tiny_dataset, tmp_path, private_home
):
    """`train --w2v-corpus`: its files are part of the cache key (names, sizes, mtimes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(
        pa.table({"text": ["spare words about a fine kettle"] * 20}), corpus / "a.parquet"
    )
    embeddings = EmbeddingConfig(dim=8, min_count=1, epochs=2, corpus=(str(corpus),))
    cfg = tiny_config(tiny_dataset, tmp_path, epochs=1, embeddings=embeddings)
    cache = private_home / "cache" / "embeddings"
    before = set(cache.iterdir()) if cache.exists() else set()  # other tests' vectors
    run_training(cfg)
    [entry] = set(cache.iterdir()) - before
    assert "kettle" in entry.joinpath("vocab.txt").read_text().split("\n")
    entries = set(cache.iterdir())
    run_training(cfg)
    assert set(cache.iterdir()) == entries  # unchanged corpus: the cached vectors
    pq.write_table(pa.table({"text": ["a teapot"] * 30}), corpus / "b.parquet")
    run_training(cfg)
    assert len(set(cache.iterdir()) - entries) == 1  # a new file in it: word2vec again


def test_a_relative_dataset_path_works(ray_local, tiny_dataset, tmp_path, monkeypatch):
    """Ray Train workers run in their own directories: the driver resolves the path."""
    monkeypatch.chdir(tiny_dataset.parent)
    result = run_training(tiny_config(Path(tiny_dataset.name), tmp_path, epochs=1))
    assert result.metrics["test"]["n"] > 0


def test_the_validation_carve_keeps_each_product_on_one_side(tmp_path):
    """Reviews sharing a group_id (a product) are all in validation or all in training."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sentiment.datasets import prepare, read_prepared
    from sentiment.readers import Columns
    from sentiment.text import Vocabulary
    from sentiment.train_job import load_splits, word2vec_texts

    records = [
        {"text": f"product {i // 8} review {i}", "label": i % 2, "product": f"p{i // 8}"}
        for i in range(800)
    ]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "r.parquet")
    prepare([tmp_path / "r.parquet"], tmp_path / "ds", columns=Columns(group="product"))
    cfg = TrainConfig(data=str(tmp_path / "ds"), val_fraction=0.25)
    train = read_prepared(cfg.data, split="train").to_pydict()
    seen = set(word2vec_texts(cfg))
    sides: dict[str, set[bool]] = {}
    for group, text in zip(train["group_id"], train["text"], strict=True):
        sides.setdefault(group, set()).add(text in seen)
    assert all(len(s) == 1 for s in sides.values())  # no product on both sides
    n_val = sum(not next(iter(s)) for s in sides.values())
    assert 0.15 < n_val / len(sides) < 0.35
    splits = load_splits(cfg, Vocabulary.from_words([]))
    assert len(splits["val"]) == len(train["text"]) - len(seen) == 8 * n_val


def test_word2vec_never_sees_the_validation_reviews(tiny_dataset):
    """Validation reviews stay as unseen by word2vec as test reviews are."""
    from sentiment.datasets import read_prepared
    from sentiment.text import Vocabulary
    from sentiment.train_job import load_splits, word2vec_texts
    from sentiment.training import in_validation

    table = read_prepared(tiny_dataset, columns=["review_id", "text"], split="train").to_pydict()
    assert word2vec_texts(TrainConfig(data=str(tiny_dataset))) == table["text"]
    cfg = TrainConfig(data=str(tiny_dataset), val_fraction=0.3)
    rows = zip(table["review_id"], table["text"], strict=True)
    val = {text for rid, text in rows if in_validation(rid, 0.3)}
    texts = word2vec_texts(cfg)
    assert 0 < len(val) < len(table["text"]) and not val & set(texts)
    assert len(texts) + len(val) == len(table["text"])
    splits = load_splits(cfg, Vocabulary.from_words([]))
    assert (len(splits["train"]), len(splits["val"])) == (len(texts), len(val))
    # The n-gram head's fit encodes the training reviews only: the same ones.
    only = load_splits(cfg, Vocabulary.from_words([]), names=("train",))
    assert (
        list(only) == ["train"] and only["train"].labels.tolist() == splits["train"].labels.tolist()
    )


def test_an_ensemble_trains_with_phrases_and_is_calibrated_on_validation(
    ray_local, tiny_dataset, tmp_path
):
    """`train --ensemble 2 --val-fraction --phrases`: two members (seeds 0 and 1) published,
    then their ensemble, calibrated on the validation carve, joining the same word pairs."""
    cfg = tiny_config(
        tiny_dataset,
        tmp_path,
        ensemble=2,
        val_fraction=0.3,
        embeddings=EmbeddingConfig(dim=8, min_count=1, epochs=2, phrases=0.01),
    )
    result = run_training(cfg)
    assert result.model_id.startswith("ensemble-")
    assert resolve_model("latest", str(tmp_path / "store")) == Path(result.model_dir)
    members = result.metrics["members"]
    assert len(members) == 2 and all(m.startswith("gru-") for m in members)
    seeds = [
        json.loads((tmp_path / "store" / m / "config.json").read_text())["training"]["seed"]
        for m in members
    ]
    assert seeds == [0, 1]
    config = json.loads((Path(result.model_dir) / "config.json").read_text())
    calibration = config["calibration"]
    assert calibration["temperature"] > 0 and calibration["n"] == result.metrics["val"]["n"]
    assert config["text"]["phrases"] > 0
    assert (Path(result.model_dir) / "phrases.txt").read_text().count("\n") == config["text"][
        "phrases"
    ]
    loaded = load_model_dir(result.model_dir)
    assert loaded.model.temperature == calibration["temperature"]
    [row] = evaluate_models([result.model_dir], str(tiny_dataset), ["test"])
    assert row["test"]["accuracy"] == result.metrics["test"]["accuracy"]


def test_train_json_prints_the_model_and_its_metrics(tiny_dataset, tmp_path):
    """`train --json` from the installed command: stdout is one JSON document naming the
    published model and holding its metrics; logs stay on stderr."""
    import json
    import subprocess
    import sys

    from sentiment.config import to_dict

    cfg = to_dict(tiny_config(tiny_dataset, tmp_path, epochs=1))
    exe = str(Path(sys.executable).parent / "sentiment-jobs")
    done = subprocess.run(
        [exe, "train", "--config", json.dumps(cfg), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["model_dir"] == str(tmp_path / "store" / summary["model_id"])
    assert (tmp_path / "store" / "LATEST").read_text().strip() == summary["model_id"]
    assert 0 <= summary["metrics"]["test"]["accuracy"] <= 1
