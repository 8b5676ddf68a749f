"""Shared fixtures: the real reviews in ../shared (when present) and a real local Ray."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AMAZON = REPO.parent / "shared" / "datasets" / "amazon-multi-domain"


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory):
    """Models, runs and caches of the tests go to a temporary home, never ~/.sentiment-jobs."""
    import os

    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("SENTIMENT_JOBS_HOME")
    os.environ["SENTIMENT_JOBS_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("SENTIMENT_JOBS_HOME", None)
    else:
        os.environ["SENTIMENT_JOBS_HOME"] = old


@pytest.fixture(scope="session")
def amazon_dir() -> Path:
    """The real Amazon multi-domain reviews; tests that need them skip where they are absent."""
    if not (AMAZON / "books" / "positive.review").exists():
        pytest.skip(f"real reviews not found at {AMAZON}")
    return AMAZON


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray for this test session: its own temp dir, never `ray stop`.

    `address="local"` starts a new cluster instead of joining one already running.
    The temp dir is short because Ray's socket paths must fit in 107 bytes. The
    dashboard (on a free port, 127.0.0.1) serves the state API the tests query.
    Yields the dashboard URL.
    """
    import ray

    tmp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")
    context = ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        _temp_dir=tmp,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield "http://" + context.dashboard_url
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


POSITIVE = ("great", "excellent", "love", "wonderful", "perfect", "best", "happy", "recommend")
NEGATIVE = ("awful", "terrible", "hate", "broken", "worst", "poor", "refund", "disappointed")
FILLER = ("the", "product", "it", "was", "a", "this", "and", "i", "my", "with", "for", "very")


def make_reviews(n: int, seed: int = 0, categories=("books", "kitchen")) -> list[dict]:
    """Generated reviews with a learnable signal: a few sentiment words among filler words."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 30))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append(
            {
                "review_id": f"r{i}",
                "text": " ".join(words),
                "label": label,
                "category": categories[i % len(categories)],
            }
        )
    return rows


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A prepared dataset of 400 generated reviews (hashed 80/20 train/test split)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sentiment.datasets import prepare
    from sentiment.readers import Columns

    tmp = tmp_path_factory.mktemp("tiny")
    pq.write_table(pa.Table.from_pylist(make_reviews(400)), tmp / "reviews.parquet")
    cols = Columns(id="review_id", category="category")
    prepare([tmp / "reviews.parquet"], tmp / "dataset", columns=cols)
    return tmp / "dataset"


def train_tiny_model(directory: Path, variant: str = "gru", steps: int = 200) -> str:
    """A small model trained in-process (no Ray) on generated reviews; returns its model_id."""
    import numpy as np
    import torch

    from sentiment.artifacts import write_model_dir
    from sentiment.config import ModelConfig, TextConfig
    from sentiment.models import build_model
    from sentiment.text import Vocabulary, pad_batch

    torch.manual_seed(0)
    vocab = Vocabulary.from_words([*POSITIVE, *NEGATIVE, *FILLER])
    emb = np.random.default_rng(0).normal(0, 0.3, (len(vocab), 8)).astype(np.float32)
    emb[:2] = 0
    cfg = ModelConfig(variant=variant, vocab_size=len(vocab), embed_dim=8, hidden_size=8)
    model = build_model(cfg, emb)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    rows = make_reviews(256, seed=1)
    for step in range(steps):
        batch = rows[(step * 32) % 256 : (step * 32) % 256 + 32]
        ids, lengths = pad_batch([vocab.encode(r["text"], 400).ids for r in batch])
        labels = torch.tensor([r["label"] for r in batch])
        loss = torch.nn.functional.nll_loss(
            model(torch.from_numpy(ids), torch.from_numpy(lengths)), labels
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return write_model_dir(directory, model.eval(), vocab, TextConfig(max_tokens=400), {})


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A model directory of a small `gru` that separates the generated reviews."""
    directory = tmp_path_factory.mktemp("model") / "gru"
    train_tiny_model(directory)
    return directory
