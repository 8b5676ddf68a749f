"""Shared fixtures: the real reviews in ../shared (when present) and a real local Ray."""

from __future__ import annotations

import shutil
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
    The temp dir is short because Ray's socket paths must fit in 107 bytes.
    """
    import ray

    tmp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        _temp_dir=tmp,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
