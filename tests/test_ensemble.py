"""Ensemble model directories: built from models, scored and evaluated like any model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sentiment.artifacts import load_model_dir
from sentiment.cli import app
from sentiment.config import SentimentError
from sentiment.ensemble import build_ensemble
from sentiment.models import Ensemble
from sentiment.scoring import Scorer
from tests.conftest import make_reviews, train_tiny_model


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    """Two small models over one vocabulary: a `gru` and a `pmgru`, trained differently."""
    root = tmp_path_factory.mktemp("members")
    train_tiny_model(root / "gru", "gru", steps=60)
    train_tiny_model(root / "pmgru", "pmgru", steps=30)
    return [root / "gru", root / "pmgru"]


@pytest.fixture(scope="module")
def ensemble_dir(members, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "model"
    build_ensemble([str(m) for m in members], output=out)
    return out


def test_an_ensemble_scores_the_mean_of_its_members_probabilities(members, ensemble_dir):
    texts = [r["text"] for r in make_reviews(150, seed=5)] + ["great " * 500, "zzz", None]
    ensemble = Scorer(ensemble_dir, batch_size=32).score_texts(texts)
    singles = [Scorer(m, batch_size=32).score_texts(texts) for m in members]
    assert ensemble.status == singles[0].status  # one tokenization, the same statuses
    expected = np.mean([s.p_positive for s in singles], axis=0)
    np.testing.assert_allclose(ensemble.p_positive, expected, rtol=0, atol=2e-6, equal_nan=True)
    assert not np.allclose(singles[0].p_positive[:150], singles[1].p_positive[:150], atol=1e-3)


def test_the_ensemble_directory_is_self_contained(members, ensemble_dir):
    config = json.loads((ensemble_dir / "config.json").read_text())
    assert config["model_id"].startswith("ensemble-") and len(config["model_id"]) == 21
    ids = [json.loads((m / "config.json").read_text())["model_id"] for m in members]
    assert [m["model_id"] for m in config["ensemble"]["members"]] == ids
    assert [m["model"]["variant"] for m in config["ensemble"]["members"]] == ["gru", "pmgru"]
    loaded = load_model_dir(ensemble_dir)
    assert isinstance(loaded.model, Ensemble) and len(loaded.model.members) == 2
    assert sorted(p.name for p in ensemble_dir.iterdir()) == [
        "config.json",
        "model.safetensors",
        "vocab.txt",
    ]


def test_the_same_members_give_the_same_id(members, ensemble_dir, tmp_path):
    model_id, _ = build_ensemble([str(m) for m in members], output=tmp_path / "again")
    assert model_id == json.loads((ensemble_dir / "config.json").read_text())["model_id"]


def test_members_with_another_vocabulary_are_refused(members, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(members[1], other)
    words = (other / "vocab.txt").read_text().splitlines()
    words[2], words[3] = words[3], words[2]
    (other / "vocab.txt").write_text("\n".join(words) + "\n")
    with pytest.raises(SentimentError, match="its vocabulary differs from gru-"):
        build_ensemble([str(members[0]), str(other)], output=tmp_path / "e")
    with pytest.raises(SentimentError, match="at least two models"):
        build_ensemble([str(members[0])], output=tmp_path / "e")


def test_cli_publishes_an_ensemble_that_evaluate_reads(members, tiny_dataset, tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    result = runner.invoke(app, ["ensemble", *map(str, members), "--store", store])
    assert result.exit_code == 0, result.output
    model_id = result.output.split()[1]
    assert model_id.startswith("ensemble-")
    assert (tmp_path / "store" / "LATEST").read_text().strip() == model_id
    result = runner.invoke(
        app, ["evaluate", "--model", "latest", "--store", store, "--data", str(tiny_dataset)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2].startswith(model_id)
