"""`sentiment-jobs models list|show|set-latest` over a local store and an S3 store (moto's
real server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment.artifacts import publish
from sentiment.cli import app
from tests.conftest import train_tiny_model
from tests.test_object_store import s3  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> list[tuple[str, Path]]:
    """Two different small models: (model id, directory)."""
    root = tmp_path_factory.mktemp("models")
    return [
        (train_tiny_model(root / "a", "gru", steps=60), root / "a"),
        (train_tiny_model(root / "b", "pmgru", steps=60), root / "b"),
    ]


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.output


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_list_show_and_set_latest(kind, two_models, tmp_path, request):
    (a, a_dir), (b, b_dir) = two_models
    if kind == "s3":
        request.getfixturevalue("s3")
        store = f"s3://bucket/models-{tmp_path.name}"
    else:
        store = str(tmp_path / "store")
    code, _, output = cli("models", "list", "--store", store)
    assert code == 0 and "no models in" in output
    publish(a_dir, store, a)
    publish(b_dir, store, b)  # LATEST: b

    code, stdout, output = cli("models", "list", "--store", store, "--json")
    assert code == 0, output
    listed = json.loads(stdout)["models"]
    assert {m["model_id"]: (m["variant"], m["latest"]) for m in listed} == {
        a: ("gru", False),
        b: ("pmgru", True),
    }
    code, _, output = cli("models", "list", "--store", store)
    assert code == 0 and f"* {b}" in output and f"  {a}" in output

    code, stdout, output = cli("models", "show", "--store", store, "--json")
    assert code == 0, output
    shown = json.loads(stdout)
    assert shown["model_id"] == b and shown["latest"] is True
    assert shown["config"]["model"]["variant"] == "pmgru" and "versions" in shown["config"]
    code, _, output = cli("models", "show", a, "--store", store)
    assert code == 0 and output.startswith(f"model       {a}\n") and "(LATEST)" not in output

    code, _, output = cli("models", "set-latest", a, "--store", store)
    assert code == 0 and output.strip() == f"LATEST {b} -> {a}"
    code, stdout, _ = cli("models", "show", "latest", "--store", store, "--json")
    assert json.loads(stdout)["model_id"] == a

    # Refused, LATEST left as it was: not an id, not in the store, files that do not
    # digest to the id.
    for bad, says in (("../a", "is not a model id"), ("gru-000000000000", "not found")):
        code, _, output = cli("models", "set-latest", bad, "--store", store)
        assert code == 1 and says in output, output
    _rewrite_weights(store, b)
    code, _, output = cli("models", "set-latest", b, "--store", store)
    assert code == 1 and "digest" in output, output
    code, stdout, _ = cli("models", "show", "latest", "--store", store, "--json")
    assert json.loads(stdout)["model_id"] == a


def _rewrite_weights(store: str, model_id: str) -> None:
    from sentiment.storage import filesystem

    fs, root = filesystem(store)
    path = f"{root}/{model_id}/model.safetensors"
    with fs.open_input_stream(path) as f:
        data = bytearray(f.read())
    data[-1] ^= 0xFF  # one weight changed: same size, same header
    with fs.open_output_stream(path) as f:
        f.write(bytes(data))


def test_a_directory_that_is_not_a_model_is_listed_with_its_problem(two_models, tmp_path):
    (a, a_dir), _ = two_models
    store = tmp_path / "store"
    publish(a_dir, str(store), a)
    (store / "broken").mkdir()
    (store / "broken" / "config.json").write_text("{not json")
    (store / ".tmp-gru-123-abc").mkdir()  # a publish under way: not listed
    code, stdout, output = cli("models", "list", "--store", str(store), "--json")
    assert code == 0, output
    models = {m["model_id"]: m for m in json.loads(stdout)["models"]}
    assert set(models) == {a, "broken"}
    assert "unreadable model config" in models["broken"]["problem"]
