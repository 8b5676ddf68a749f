"""Shared fixtures: the real reviews in ../shared (when present) and a real local Ray."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AMAZON = REPO.parent / "shared" / "datasets" / "amazon-multi-domain"


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
