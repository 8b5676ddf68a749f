"""`sentiment-jobs train` and `evaluate` through CliRunner: bad settings are one line, exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.datasets import prepare


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result, errors


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr", "0"], "error: learning rate must be > 0, got 0.0"),
        (["--lr", "-1e-3"], "error: learning rate must be > 0"),
        (["--epochs", "0"], "error: epochs must be >= 1"),
        (["--batch-size", "0"], "error: batch size must be >= 1"),
        (["--dropout", "1.5"], "error: dropout must be in [0, 1)"),
        (["--val-fraction", "1"], "error: val_fraction must be in [0, 1)"),
        (["--workers", "0"], "error: workers must be >= 1"),
    ],
)
def test_bad_settings_are_one_line_and_exit_1(tiny_dataset, extra, message):
    result, errors = run("train", "--data", str(tiny_dataset), *extra)
    assert result.exit_code == 1, result.output
    assert errors == [next(line for line in result.output.splitlines() if line.startswith(message))]
    assert "Traceback" not in result.output


def test_unknown_variant_is_a_usage_error(tiny_dataset):
    result, _ = run("train", "--data", str(tiny_dataset), "--model", "lstm")
    assert result.exit_code == 2
    assert "'lstm' is not one of" in result.output and "gru" in result.output


def test_a_dataset_without_a_train_split_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTIMENT_JOBS_HOME", str(tmp_path / "home"))
    pq.write_table(pa.table({"text": ["good", "bad"], "label": [1, 0]}), tmp_path / "t.parquet")
    prepare([tmp_path / "t.parquet"], tmp_path / "only-test", split="test")
    result, errors = run("train", "--data", str(tmp_path / "only-test"), "--epochs", "1")
    assert result.exit_code == 1
    assert errors == [
        f"error: {tmp_path / 'only-test'}: the dataset has no train split to train on"
    ]


def test_a_missing_dataset_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTIMENT_JOBS_HOME", str(tmp_path / "home"))
    result, errors = run("train", "--data", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert len(errors) == 1 and str(tmp_path / "nowhere") in errors[0]


def test_evaluate_prints_the_results_table_for_several_models(tiny_model, tiny_dataset, tmp_path):
    result, _ = run(
        "evaluate",
        "--model",
        str(tiny_model),
        "--model",
        str(tiny_model),
        "--data",
        str(tiny_dataset),
        "--output",
        str(tmp_path / "eval"),
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "model",
        "time",
        "train",
        "acc",
        "test",
        "acc",
        "train",
        "CE",
        "test",
        "CE",
    ]
    rows = [line for line in lines[2:4]]
    assert len(rows) == 2 and rows[0] == rows[1] and "%" in rows[0]
    assert "test accuracy per category" in result.output
    [metrics] = list((tmp_path / "eval").glob("*-metrics.json"))
    data = json.loads(metrics.read_text())
    assert data["test"]["n"] == sum(data["test"]["confusion"][0]) + sum(
        data["test"]["confusion"][1]
    )
    assert (tmp_path / "eval" / f"{data['model']}-confusion-test.png").stat().st_size > 1000


def test_evaluate_names_a_missing_split(tiny_model, tiny_dataset):
    result, errors = run(
        "evaluate", "--model", str(tiny_model), "--data", str(tiny_dataset), "--split", "val"
    )
    assert result.exit_code == 1 and errors == [f"error: {tiny_dataset}: no reviews in split 'val'"]


def test_evaluate_latest_without_a_model_in_the_store(tiny_dataset, tmp_path):
    result, errors = run(
        "evaluate", "--model", "latest", "--data", str(tiny_dataset), "--store", str(tmp_path)
    )
    assert result.exit_code == 1
    assert errors[0].startswith(f"error: no trained model in the store {tmp_path}")


def test_model_dir_is_self_contained(tiny_model):
    """config.json holds what rebuilds the model: variant, sizes, tokenizer, and its id."""
    config = json.loads((Path(tiny_model) / "config.json").read_text())
    assert config["model"]["variant"] == "gru" and config["model"]["hidden_size"] == 8
    assert config["text"] == {"tokenizer": "words-v1", "max_tokens": 400, "phrases": 0}
    assert config["model_id"].startswith("gru-") and "torch" in config["versions"]
