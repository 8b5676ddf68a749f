"""On the real reviews in ../shared: prepare, train through Ray Train, score through Ray Data."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sentiment.config import EmbeddingConfig, ModelConfig, ScoreConfig, TextConfig, TrainConfig
from sentiment.datasets import prepare, read_prepared
from sentiment.score_job import run_scoring
from sentiment.train_job import run_training

pytestmark = [pytest.mark.ray, pytest.mark.real_data]


def test_scored_test_split_accuracy_equals_the_trained_models(ray_local, amazon_dir, tmp_path):
    prepare([amazon_dir], tmp_path / "amazon")
    cfg = TrainConfig(
        data=str(tmp_path / "amazon"),
        model=ModelConfig(variant="gru", hidden_size=16),
        text=TextConfig(max_tokens=100),  # short and small: this checks plumbing, not accuracy
        embeddings=EmbeddingConfig(dim=32, epochs=2, min_count=3),
        epochs=1,
        batch_size=64,
        store=str(tmp_path / "store"),
        storage_path=str(tmp_path / "runs"),
        threads_per_worker=1,
    )
    result = run_training(cfg)
    test = read_prepared(tmp_path / "amazon", split="test")
    assert test.num_rows == 1600
    pq.write_table(test, tmp_path / "test.parquet")
    manifest = run_scoring(
        ScoreConfig(
            inputs=(str(tmp_path / "test.parquet"),),
            output=str(tmp_path / "scored"),
            model="latest",
            store=str(tmp_path / "store"),
        )
    ).manifest
    assert manifest["model_id"] == result.model_id
    scored = pq.read_table(tmp_path / "scored")
    assert scored.num_rows == 1600
    predicted = pc.fill_null(pc.equal(scored["sentiment"], "positive"), False)
    truth = pc.equal(scored["label"], 1)
    correct = pc.sum(pc.and_(pc.invert(scored["sentiment"].is_null()), pc.equal(predicted, truth)))
    accuracy = correct.as_py() / 1600
    assert accuracy == result.metrics["test"]["accuracy"]
    assert accuracy > 0.55  # one small epoch already learns something
