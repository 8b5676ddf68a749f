"""The Ray-free Scorer: statuses, padding invariance, Arrow in and out, safe loading."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from sentiment.artifacts import load_model_dir
from sentiment.config import SentimentError
from sentiment.scoring import Scorer
from tests.conftest import make_reviews, train_tiny_model


@pytest.fixture(scope="module")
def scorer(tiny_model) -> Scorer:
    return Scorer(tiny_model, batch_size=64)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("great product i love it", "ok"),
        (None, "null_text"),
        ("", "empty_text"),
        ("   \n\t ", "empty_text"),
        (123, "not_text"),
        (b"\xff\xfe broken", "not_text"),
        (b"great bytes", "ok"),
        ("zzz qqq xyzzy", "no_known_tokens"),
        ("great " * 100_000, "truncated"),
    ],
    ids=["ok", "null", "empty", "whitespace", "int", "bad-bytes", "utf8-bytes", "unknown", "100k"],
)
def test_every_row_gets_a_status(scorer, text, status):
    scores = scorer.score_texts(["awful product", text, "great"])
    assert scores.status == ["ok", status, "ok"]
    p = scores.p_positive[1]
    if status in ("ok", "truncated"):
        assert 0.0 <= p <= 1.0 and scores.sentiment[1] in ("positive", "negative")
    else:
        assert math.isnan(p) and scores.sentiment[1] is None


def test_the_model_separates_the_generated_reviews(scorer):
    rows = make_reviews(200, seed=7)
    scores = scorer.score_texts([r["text"] for r in rows])
    predicted = (scores.p_positive >= 0.5).astype(int)
    assert (predicted == [r["label"] for r in rows]).mean() > 0.9


@pytest.mark.parametrize("variant", ["gru", "grub", "gruh", "pmgru"])
def test_a_review_alone_and_in_a_large_padded_batch_get_the_same_probability(tmp_path, variant):
    train_tiny_model(tmp_path / variant, variant, steps=5)
    scorer = Scorer(tmp_path / variant, batch_size=512)
    texts = [r["text"] for r in make_reviews(300, seed=3)] + ["great " * 350]
    together = scorer.score_texts(texts).p_positive
    alone = np.array([scorer.score_texts([t]).p_positive[0] for t in texts])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)


def test_arrow_batch_keeps_input_columns_and_appends_predictions(scorer, tiny_model):
    table = pa.table(
        {
            "id": pa.array([3, 1, 2], pa.int64()),
            "text": ["great", None, "awful"],
            "extra": [{"a": 1}, {"a": 2}, {"a": 3}],
        }
    )
    out = scorer(table)
    assert out.column_names == [
        "id",
        "text",
        "extra",
        "sentiment",
        "p_positive",
        "model_id",
        "score_status",
    ]
    assert out.select(["id", "text", "extra"]).equals(table)
    assert out.schema.field("p_positive").type == pa.float32()
    assert out["score_status"].to_pylist() == ["ok", "null_text", "ok"]
    assert out["p_positive"].null_count == 1 and out["sentiment"].to_pylist()[1] is None
    assert set(out["model_id"].to_pylist()) == {load_model_dir(tiny_model).model_id}


def test_max_tokens_override_truncates(tiny_model):
    scorer = Scorer(tiny_model, max_tokens=3)
    assert scorer.score_texts(["great love best happy"]).status == ["truncated"]
    assert scorer.score_texts(["great love best"]).status == ["ok"]


def test_scorer_runs_on_cpu_when_torch_sees_no_gpu(scorer):
    assert scorer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert next(scorer.model.parameters()).device.type == scorer.device.type


def test_pickled_weights_are_never_loaded(tmp_path, tiny_model):
    """A model.safetensors that is really a pickle (which could run code) is refused."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    (bad / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(SentimentError, match=r"model\.safetensors: cannot load weights"):
        Scorer(bad)
    assert not marker.exists()


def test_not_a_model_directory(tmp_path):
    with pytest.raises(SentimentError, match="not a model directory"):
        Scorer(tmp_path)


def test_batch_size_defaults_per_device_and_bad_sizes_are_refused(tiny_model):
    from sentiment.config import ScoreConfig
    from sentiment.scoring import CPU_MODEL_BATCH, GPU_MODEL_BATCH

    default = GPU_MODEL_BATCH if torch.cuda.is_available() else CPU_MODEL_BATCH
    assert Scorer(tiny_model).batch_size == default
    assert Scorer(tiny_model, batch_size=7).batch_size == 7
    assert ScoreConfig(model_batch_size=0).model_batch_size == 0  # 0: the Scorer chooses
    for bad in ({"batch_size": 0}, {"model_batch_size": -1}):
        with pytest.raises(SentimentError, match="--batch-size must be >= 1"):
            ScoreConfig(**bad)
