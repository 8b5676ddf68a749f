"""Calibration: expected calibration error, temperature scaling, and the Scorer applying it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.evaluation import expected_calibration_error, fit_temperature, reliability
from sentiment.scoring import Scorer
from tests.conftest import make_reviews


@pytest.mark.parametrize(
    ("labels", "p", "ece"),
    [
        ([1, 1, 0, 0], [0.9, 0.9, 0.1, 0.1], 0.1),  # each bin 0.1 too unsure
        ([1, 1, 1, 0], [0.75, 0.75, 0.75, 0.75], 0.0),  # three in four positive: exact
        ([1, 0], [1.0, 0.0], 0.0),  # p == 1 falls in the last bin
        ([0, 0, 1, 1], [0.95, 0.95, 0.05, 0.05], 0.95),  # confidently wrong
        ([1, 0, 1, 0], [0.55, 0.55, 0.35, 0.35], (2 * 0.05 + 2 * 0.15) / 4),
    ],
)
def test_expected_calibration_error_on_known_cases(labels, p, ece):
    assert expected_calibration_error(np.array(labels), np.array(p)) == pytest.approx(ece)


def test_reliability_bins_count_every_review_once():
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    rows = reliability(rng.integers(0, 2, 1000), p, bins=10)
    assert [r["n"] for r in rows] == np.histogram(p, bins=10, range=(0, 1))[0].tolist()
    assert all(r["low"] <= r["p_positive"] < r["high"] for r in rows)


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_temperature_fit_recovers_the_temperature_that_made_the_labels(true_temperature):
    """Labels drawn from sigmoid(z / T): the fitted T is T, and calibration then holds."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, 40_000)
    labels = (rng.random(z.size) < 1 / (1 + np.exp(-z / true_temperature))).astype(int)
    log_probs = np.stack([-np.logaddexp(0, z), -np.logaddexp(0, -z)], 1)  # log(1-p), log p
    t = fit_temperature(labels, log_probs)
    assert t == pytest.approx(true_temperature, rel=0.05)
    before = expected_calibration_error(labels, 1 / (1 + np.exp(-z)))
    after = expected_calibration_error(labels, 1 / (1 + np.exp(-z / t)))
    assert after < 0.01 and (true_temperature == 1.0 or before > 2 * after)


def _with_temperature(model: Path, directory: Path, temperature: float) -> Path:
    shutil.copytree(model, directory)
    config = json.loads((directory / "config.json").read_text())
    config["calibration"] = {"temperature": temperature, "fitted_on": "val"}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_the_scorer_applies_the_stored_temperature(tiny_model, tmp_path):
    texts = [r["text"] for r in make_reviews(100, seed=4)]
    plain = Scorer(tiny_model).score_texts(texts).p_positive.astype(np.float64)
    calibrated = Scorer(_with_temperature(tiny_model, tmp_path / "t", 3.0)).score_texts(texts)
    logit = np.log(plain) - np.log1p(-plain)
    np.testing.assert_allclose(calibrated.p_positive, 1 / (1 + np.exp(-logit / 3.0)), atol=1e-5)
    assert (calibrated.p_positive >= 0.5).tolist() == (plain >= 0.5).tolist()


def test_evaluate_reports_ece_and_draws_the_reliability_diagram(tiny_model, tiny_dataset, tmp_path):
    t2 = _with_temperature(tiny_model, tmp_path / "t2", 2.0)
    result = CliRunner().invoke(
        app,
        ["evaluate", "--model", str(t2), "--data", str(tiny_dataset), "--output", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    [metrics] = tmp_path.glob("*-metrics.json")
    data = json.loads(metrics.read_text())
    ece = data["test"]["ece"]
    assert 0 <= ece <= 1 and len(data["test"]["reliability"]) == 10
    line = next(x for x in result.output.splitlines() if x.split()[1:2] == ["test"])
    assert f"ECE {100 * ece:5.2f} % (temperature 2)" in line
    assert (tmp_path / f"{data['model']}-reliability-test.png").stat().st_size > 1000


def test_evaluate_json_is_the_metrics_on_stdout(tiny_model, tiny_dataset):
    result = CliRunner().invoke(
        app, ["evaluate", "--model", str(tiny_model), "--data", str(tiny_dataset), "--json"]
    )
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["models"]
    assert set(row) >= {"model", "train", "test"}
    assert 0.5 < row["test"]["accuracy"] <= 1 and 0 <= row["test"]["ece"] <= 1
