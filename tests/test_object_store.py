"""The model store, scoring data and the output lock on S3, against a real S3 server.

moto runs in server mode on 127.0.0.1 (a free port); the AWS_* variables point pyarrow
and boto3 at it, so everything under test talks HTTP to it: nothing of pyarrow or boto3
is mocked. The server's own state (moto's backend, in this process) is read only to
see when each object was written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentiment.artifacts import load_model_dir, model_cache, publish, resolve_model
from sentiment.cli import app
from sentiment.commit import OutputDir
from sentiment.config import SentimentError
from sentiment.storage import storage_error
from tests.conftest import free_port, make_reviews, train_tiny_model

REPO = Path(__file__).resolve().parents[1]
AWS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
# Settings that would send boto3 or pyarrow elsewhere, or with other credentials.
AWS_OTHERS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_S3")


@dataclass
class S3:
    endpoint: str
    client: object  # a boto3 S3 client, for setting up and looking

    def keys(self, prefix: str) -> dict[str, bytes]:
        listed = self.client.list_objects_v2(Bucket="bucket", Prefix=prefix).get("Contents", [])
        return {
            o["Key"]: self.client.get_object(Bucket="bucket", Key=o["Key"])["Body"].read()
            for o in listed
        }

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket="bucket", Key=key, Body=body)

    def upload_dir(self, directory: Path, prefix: str) -> None:
        for item in sorted(directory.iterdir()):
            self.put(f"{prefix}/{item.name}", item.read_bytes())

    def written_at(self, key: str):
        """When the server stored `key` (its clock, microseconds: S3's API gives seconds)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets["bucket"].keys[key].last_modified

    def set_auth(self, on: bool) -> None:
        """moto's server checks signatures and IAM policies only when told to."""
        import requests

        body = b"0" if on else b"inf"
        requests.post(f"{self.endpoint}/moto-api/reset-auth", data=body, timeout=10)


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 with a bucket `bucket`; AWS_* restored afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {name: os.environ.get(name) for name in (*AWS, *AWS_OTHERS)}
    for name in AWS_OTHERS:
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        client = boto3.session.Session().client("s3")
        client.create_bucket(Bucket="bucket")
        yield S3(endpoint, client)
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def prefix() -> str:
    """A fresh folder in the bucket for each test."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Two small, different model directories (no Ray): name → (directory, model_id)."""
    root = tmp_path_factory.mktemp("models")
    return {
        name: (root / name, train_tiny_model(root / name, variant, steps))
        for name, variant, steps in (("a", "gru", 60), ("b", "pmgru", 60))
    }


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result, errors


def one_error(*args: str) -> str:
    """The one `error:` line of a command that must fail with exit status 1."""
    result, errors = run(*args)
    assert result.exit_code == 1, result.output
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    return errors[0]


def read_output(uri: str) -> tuple[dict, pa.Table]:
    """The committed manifest of an output on S3 and the rows of the files it lists."""
    fs, root = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(f"{root}/_manifest.json") as f:
        manifest = json.loads(f.read())
    tables = [pq.read_table(f"{root}/{e['name']}", filesystem=fs) for e in manifest["files"]]
    return manifest, pa.concat_tables(tables)


# --- (a) publishing and resolving ------------------------------------------------------------


def test_publish_writes_the_model_then_latest_and_resolves_to_a_checked_copy(
    s3, prefix, models, private_home
):
    directory, model_id = models["a"]
    store = f"s3://bucket/{prefix}/models"
    assert publish(directory, store, model_id) == f"{store}/{model_id}"

    keys = s3.keys(prefix)
    files = sorted(p.name for p in directory.iterdir())
    assert sorted(keys) == sorted(
        [f"{prefix}/models/{model_id}/{name}" for name in files] + [f"{prefix}/models/LATEST"]
    )
    assert not any(".tmp" in key for key in keys)
    assert keys[f"{prefix}/models/LATEST"] == f"{model_id}\n".encode()
    for name in files:
        assert keys[f"{prefix}/models/{model_id}/{name}"] == (directory / name).read_bytes()
    # config.json after every other file, LATEST after config.json
    config_at = s3.written_at(f"{prefix}/models/{model_id}/config.json")
    others = [s3.written_at(f"{prefix}/models/{model_id}/{n}") for n in files if n != "config.json"]
    assert max(others) <= config_at <= s3.written_at(f"{prefix}/models/LATEST")

    local = resolve_model("latest", store)
    assert local.parent == private_home / "cache" / "models" == model_cache()
    assert load_model_dir(local).model_id == model_id
    assert resolve_model(model_id, store) == local
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        assert (local / name).read_bytes() == (directory / name).read_bytes()


def test_publishing_again_moves_latest_and_keeps_both_models(s3, prefix, models):
    store = f"s3://bucket/{prefix}/models"
    (dir_a, id_a), (dir_b, id_b) = models["a"], models["b"]
    publish(dir_a, store, id_a)
    publish(dir_b, store, id_b)
    publish(dir_a, store, id_a)  # the same id again: the same files, LATEST back to it
    keys = s3.keys(prefix)
    assert keys[f"{prefix}/models/LATEST"] == f"{id_a}\n".encode()
    assert {k.split("/")[2] for k in keys} == {id_a, id_b, "LATEST"}
    assert load_model_dir(resolve_model("latest", store)).model_id == id_a
    assert load_model_dir(resolve_model(id_b, store)).model_id == id_b


def test_a_model_directory_without_config_is_not_a_model(s3, prefix, models):
    """What a publish cut off before config.json leaves: refused, never half-read."""
    directory, model_id = models["a"]
    for name in ("model.safetensors", "vocab.txt"):
        s3.put(f"{prefix}/models/{model_id}/{name}", (directory / name).read_bytes())
    with pytest.raises(SentimentError, match="model directory not found"):
        resolve_model(model_id, f"s3://bucket/{prefix}/models")
    with pytest.raises(SentimentError, match="no trained model in the store"):
        resolve_model("latest", f"s3://bucket/{prefix}/models")


# --- (b) the cache of fetched models: keyed and checked by content ----------------------------


def test_tampered_cached_weights_are_fetched_again(s3, prefix, models):
    directory, model_id = models["a"]
    store = f"s3://bucket/{prefix}/models"
    publish(directory, store, model_id)
    local = resolve_model("latest", store)
    weights = local / "model.safetensors"
    tampered = bytearray(weights.read_bytes())
    tampered[-8:] = b"\x00" * 8  # another value for the last weight: still loads
    weights.write_bytes(bytes(tampered))

    again = resolve_model("latest", store)
    assert (again / "model.safetensors").read_bytes() == (
        directory / "model.safetensors"
    ).read_bytes()
    assert load_model_dir(again).model_id == model_id


def test_a_model_planted_in_the_cache_is_not_trusted_by_its_name(s3, prefix, models):
    """Another model put where the store's model is cached: with the store's config.json
    copied in (its files do not digest to that id), or whole (another config.json)."""
    (dir_a, id_a), (dir_b, _) = models["a"], models["b"]
    store = f"s3://bucket/{prefix}/models"
    publish(dir_a, store, id_a)
    entry = resolve_model(id_a, store)
    for keep_config in (True, False):
        shutil.rmtree(entry)
        shutil.copytree(dir_b, entry)
        if keep_config:
            shutil.copy(dir_a / "config.json", entry / "config.json")
        local = resolve_model(id_a, store)
        assert local == entry
        assert (local / "model.safetensors").read_bytes() == (
            dir_a / "model.safetensors"
        ).read_bytes()
        assert load_model_dir(local).model_id == id_a


def test_a_model_replaced_in_the_store_is_fetched_again(s3, prefix, models):
    (dir_a, id_a), (dir_b, id_b) = models["a"], models["b"]
    uri = f"s3://bucket/{prefix}/some/model"
    s3.upload_dir(dir_a, f"{prefix}/some/model")
    assert load_model_dir(resolve_model(uri, "unused")).model_id == id_a
    s3.upload_dir(dir_b, f"{prefix}/some/model")  # the same names, another model
    local = resolve_model(uri, "unused")
    assert load_model_dir(local).model_id == id_b
    assert (local / "model.safetensors").read_bytes() == (dir_b / "model.safetensors").read_bytes()


def test_a_model_whose_files_do_not_match_its_id_is_refused(s3, prefix, models, private_home):
    (dir_a, id_a), (dir_b, _) = models["a"], models["b"]
    s3.upload_dir(dir_a, f"{prefix}/models/{id_a}")
    s3.put(f"{prefix}/models/{id_a}/model.safetensors", (dir_b / "model.safetensors").read_bytes())
    s3.put(f"{prefix}/models/LATEST", id_a.encode())
    before = set(model_cache().iterdir()) if model_cache().exists() else set()
    with pytest.raises(SentimentError) as info:
        resolve_model("latest", f"s3://bucket/{prefix}/models")
    assert f"s3://bucket/{prefix}/models/{id_a}: its files digest to" in str(info.value)
    assert f"not to the model_id {id_a}" in str(info.value)
    assert set(model_cache().iterdir()) == before  # nothing cached, nothing left behind


def test_latest_naming_another_models_directory_is_refused(s3, prefix, models):
    (dir_a, _), (_, id_b) = models["a"], models["b"]
    s3.upload_dir(dir_a, f"{prefix}/models/{id_b}")  # a's files under b's name
    s3.put(f"{prefix}/models/LATEST", id_b.encode())
    with pytest.raises(SentimentError, match=f"holds model .*, not {id_b}"):
        resolve_model("latest", f"s3://bucket/{prefix}/models")


# --- datasets on S3 ----------------------------------------------------------------------------


def test_prepare_writes_a_dataset_to_s3_that_evaluate_reads(s3, prefix, models, tmp_path):
    from sentiment.datasets import read_prepared

    pq.write_table(pa.Table.from_pylist(make_reviews(120)), tmp_path / "reviews.parquet")
    dataset = f"s3://bucket/{prefix}/dataset"
    source = ["prepare", str(tmp_path / "reviews.parquet"), "--format", "parquet"]
    result, errors = run(*source, "-o", dataset)
    assert result.exit_code == 0 and not errors, result.output
    keys = s3.keys(prefix)
    assert f"{prefix}/dataset/_prepare_report.json" in keys
    table = read_prepared(dataset)
    assert table.num_rows == 120 and set(table["split"].to_pylist()) == {"train", "test"}

    assert one_error(*source, "-o", dataset) == (
        f"error: {dataset}: exists and is not empty; pass --overwrite to replace it"
    )
    result, _ = run(*source, "-o", dataset, "--overwrite")
    assert result.exit_code == 0 and read_prepared(dataset).num_rows == 120
    files = sorted(k for k in s3.keys(prefix) if not k.endswith("/"))  # not pyarrow's markers
    assert files == sorted(keys)

    result, _ = run("evaluate", "--model", str(models["a"][0]), "--data", dataset)
    assert result.exit_code == 0, result.output
    assert models["a"][1] in result.output


# --- (c) credentials, buckets, endpoints: one line naming the URI -----------------------------


def test_a_missing_bucket_is_one_line_for_every_command(s3, prefix, models, tiny_dataset):
    directory, model_id = models["a"]
    publish(directory, f"s3://bucket/{prefix}/models", model_id)
    s3.put(f"{prefix}/in/part-0.parquet", b"not read")
    ok_store = f"s3://bucket/{prefix}/models"
    cases = [
        (
            ["train", "--data", str(tiny_dataset), "--store", "s3://nobucket/models"],
            "s3://nobucket/models",
        ),
        (
            [
                "score",
                "s3://nobucket/in/",
                "--output",
                f"s3://bucket/{prefix}/out",
                "--store",
                ok_store,
            ],
            "s3://nobucket/in/",
        ),
        (
            [
                "score",
                f"s3://bucket/{prefix}/in/",
                "--output",
                "s3://nobucket/out",
                "--store",
                ok_store,
            ],
            "s3://nobucket/out",
        ),
        (
            [
                "score",
                f"s3://bucket/{prefix}/in/",
                "--output",
                f"s3://bucket/{prefix}/out",
                "--store",
                "s3://nobucket/models",
            ],
            "s3://nobucket/models",
        ),
        (
            [
                "evaluate",
                "--model",
                "latest",
                "--store",
                "s3://nobucket/models",
                "--data",
                str(tiny_dataset),
            ],
            "s3://nobucket/models",
        ),
        (
            ["evaluate", "--model", str(directory), "--data", "s3://nobucket/dataset"],
            "s3://nobucket/dataset",
        ),
        (
            ["ensemble", str(directory), str(directory), "--store", "s3://nobucket/models"],
            "s3://nobucket/models",
        ),
        (
            ["prepare", str(tiny_dataset), "--format", "parquet", "-o", "s3://nobucket/dataset"],
            "s3://nobucket/dataset",
        ),
    ]
    for args, uri in cases:
        assert one_error(*args) == f"error: {uri}: no such bucket (nobucket)", args


def test_an_unreachable_endpoint_is_one_line(s3, monkeypatch, tiny_dataset):
    closed = free_port()  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    line = one_error(
        "evaluate",
        "--model",
        "latest",
        "--store",
        "s3://bucket/models",
        "--data",
        str(tiny_dataset),
    )
    assert line == (
        f"error: s3://bucket/models: cannot connect to the storage endpoint 127.0.0.1:{closed} "
        "(check AWS_ENDPOINT_URL and the network)"
    )


@pytest.fixture
def auth(s3):
    """moto checks credentials and IAM policies meanwhile; a user `reader` may only read."""
    import boto3

    iam = boto3.session.Session().client("iam")
    name = f"reader-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*"}],
    }
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    s3.set_auth(True)
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        s3.set_auth(False)


def test_wrong_credentials_are_one_line(s3, prefix, models, auth, tiny_dataset, monkeypatch):
    directory, _ = models["a"]
    store = f"s3://bucket/{prefix}/models"
    # "testing" is no IAM user's key: every request is refused once moto checks
    line = one_error("evaluate", "--model", "latest", "--store", store, "--data", str(tiny_dataset))
    assert line.startswith(f"error: {store}/LATEST: access denied (check the AWS credentials")
    line = one_error("ensemble", str(directory), str(directory), "--store", store)
    assert line.startswith(f"error: {store}/") and "the AWS access key is not known there" in line
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth[0])  # a known key with a wrong secret
    line = one_error("ensemble", str(directory), str(directory), "--store", store)
    assert "the AWS secret key does not match the access key" in line


def test_no_permission_to_write_is_one_line(s3, prefix, models, auth, monkeypatch):
    directory, _ = models["a"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auth[1])
    store = f"s3://bucket/{prefix}/models"
    line = one_error("ensemble", str(directory), str(directory), "--store", store)
    assert line.startswith(f"error: {store}/ensemble-") and "access denied" in line
    import boto3

    reader = boto3.session.Session().client("s3")
    assert "Contents" not in reader.list_objects_v2(Bucket="bucket", Prefix=prefix)

    out = OutputDir(f"s3://bucket/{prefix}/out")
    denied = rf"s3://bucket/{prefix}/out/_LOCK: access denied"
    with pytest.raises(SentimentError, match=denied), out.lock("r1"):
        pass


def test_storage_error_names_the_key_and_the_reason():
    error = storage_error(
        OSError(
            "When getting information for key 'models/LATEST' in bucket 'bucket': AWS Error "
            "ACCESS_DENIED during HeadObject operation: No response body."
        )
    )
    assert str(error).startswith("s3://bucket/models/LATEST: access denied (check")
    assert storage_error(OSError(2, "No such file or directory")) is None


# --- (d) the output lock: S3's conditional create --------------------------------------------


def test_of_8_runs_racing_for_the_lock_exactly_one_gets_it(s3, prefix):
    location = f"s3://bucket/{prefix}/out"
    start, done = threading.Barrier(8), threading.Barrier(8)
    got, refused = [], []

    def attempt(i: int) -> None:
        out = OutputDir(location)
        start.wait()
        try:
            with out.lock(f"run{i}"):
                got.append(i)
                done.wait(timeout=60)  # hold it until every other run has tried
        except SentimentError as exc:
            refused.append(str(exc))
            done.wait(timeout=60)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 1 and len(refused) == 7, (got, refused)
    assert all(f"is being written by run run{got[0]}" in r for r in refused)
    assert s3.keys(prefix) == {}  # released
    with OutputDir(location).lock("later"):  # and free again
        assert json.loads(s3.keys(prefix)[f"{prefix}/out/_LOCK"])["run_id"] == "later"


def test_a_dead_runs_lock_on_s3_is_taken_over_and_a_live_one_respected(s3, prefix):
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = {"run_id": "dead", "host": socket.gethostname(), "pid": dead.pid, "since": 0}
    s3.put(f"{prefix}/out/_LOCK", json.dumps(lock).encode())
    out = OutputDir(f"s3://bucket/{prefix}/out")
    with out.lock("r2"):
        assert json.loads(s3.keys(prefix)[f"{prefix}/out/_LOCK"])["run_id"] == "r2"
    assert s3.keys(prefix) == {}

    other = {"run_id": "elsewhere", "host": "another-host", "pid": 1, "since": 0}
    s3.put(f"{prefix}/out/_LOCK", json.dumps(other).encode())
    with pytest.raises(SentimentError, match="is being written by run elsewhere"), out.lock("r3"):
        pass
    assert json.loads(s3.keys(prefix)[f"{prefix}/out/_LOCK"])["run_id"] == "elsewhere"


def test_a_lock_replaced_meanwhile_is_not_released(s3, prefix):
    """A run whose lock was taken over (thought stale) must not delete its successor's."""
    out = OutputDir(f"s3://bucket/{prefix}/out")
    other = json.dumps({"run_id": "successor", "host": "h", "pid": 1}).encode()
    with out.lock("r1"):
        s3.put(f"{prefix}/out/_LOCK", other)
    assert s3.keys(prefix) == {f"{prefix}/out/_LOCK": other}


# --- (e) scoring end to end through the CLI ---------------------------------------------------


@pytest.mark.ray
def test_score_reads_and_writes_s3_end_to_end(s3, prefix, models, private_home, tmp_path):
    """`sentiment-jobs score` in its own process with its own local Ray, whose workers
    inherit the AWS_* settings (a Ray started before this module set them would not
    pass them to its workers): inputs, model store and output all on the S3 server."""
    directory, model_id = models["a"]
    publish(directory, f"s3://bucket/{prefix}/models", model_id)
    expected = []
    for k in range(2):
        reviews = make_reviews(150, seed=k)
        ids = [f"f{k}-{r['review_id']}" for r in reviews]
        table = pa.table({"review_id": ids, "text": [r["text"] for r in reviews]})
        pq.write_table(table, tmp_path / f"part-{k}.parquet", row_group_size=50)
        s3.put(f"{prefix}/in/part-{k}.parquet", (tmp_path / f"part-{k}.parquet").read_bytes())
        expected += ids
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["SENTIMENT_JOBS_HOME"] = str(private_home)
    command = [
        sys.executable, "-m", "sentiment", "score", f"s3://bucket/{prefix}/in/",
        "--output", f"s3://bucket/{prefix}/out", "--model", "latest",
        "--store", f"s3://bucket/{prefix}/models", "--actors", "1",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"model {model_id}" in done.stdout

    fs, root = pafs.FileSystem.from_uri(f"s3://bucket/{prefix}/out")
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(root))}
    assert {"_SUCCESS", "_manifest.json"} <= names and "_LOCK" not in names
    manifest, out = read_output(f"s3://bucket/{prefix}/out")
    assert manifest["model_id"] == model_id
    assert sorted(out["review_id"].to_pylist()) == sorted(expected)  # every row once
    assert set(out["model_id"].to_pylist()) == {model_id}
    assert set(out["score_status"].to_pylist()) <= {"ok", "truncated"}


@pytest.mark.ray
def test_training_publishes_to_an_s3_store(s3, prefix, ray_local, tiny_dataset, tmp_path):
    """Ray Train's workers write checkpoints locally; the driver publishes to S3."""
    from sentiment.config import EmbeddingConfig, ModelConfig, TextConfig, TrainConfig
    from sentiment.train_job import run_training

    store = f"s3://bucket/{prefix}/models"
    cfg = TrainConfig(
        data=str(tiny_dataset),
        model=ModelConfig(variant="gru", hidden_size=8),
        text=TextConfig(max_tokens=50),
        embeddings=EmbeddingConfig(dim=8, min_count=1, epochs=2),
        epochs=1,
        batch_size=16,
        store=store,
        storage_path=str(tmp_path / "runs"),
        threads_per_worker=1,
    )
    result = run_training(cfg)
    assert result.model_dir == f"{store}/{result.model_id}"
    keys = s3.keys(prefix)
    names = {k.removeprefix(f"{prefix}/models/{result.model_id}/") for k in keys}
    assert {"config.json", "model.safetensors", "vocab.txt", "metrics.json"} <= names
    assert keys[f"{prefix}/models/LATEST"] == f"{result.model_id}\n".encode()
    assert not any(".tmp" in k for k in keys)
    assert load_model_dir(resolve_model("latest", store)).model_id == result.model_id


# --- (f) a cluster whose nodes share no disk --------------------------------------------------


@pytest.mark.ray
@pytest.mark.multinode
def test_worker_nodes_that_cannot_read_the_drivers_files_score_s3_to_s3(
    s3, prefix, models, private_home, tmp_path, tmp_path_factory
):
    """As on a cloud cluster: a CPU-less head and two worker nodes that see the tests'
    temporary folder empty (their own mount namespace), so no actor can open what the
    driver keeps there (its model cache under SENTIMENT_JOBS_HOME, the tests' files).
    Inputs only on the S3 server, the model from an S3 store, the output on S3: every
    row once, each node with its own checked model copy."""
    from tests.multinode import LocalCluster, can_hide

    hidden = str(tmp_path_factory.getbasetemp())
    assert private_home.is_relative_to(hidden) and tmp_path.is_relative_to(hidden)
    if not can_hide(hidden):
        pytest.skip("no mount namespaces here (needs root and unshare)")
    directory, model_id = models["a"]
    publish(directory, f"s3://bucket/{prefix}/models", model_id)
    expected = []
    for k in range(4):
        reviews = make_reviews(300, seed=20 + k)
        ids = [f"n{k}-{r['review_id']}" for r in reviews]
        path = tmp_path / f"part-{k}.parquet"
        table = pa.table({"review_id": ids, "text": [r["text"] for r in reviews]})
        pq.write_table(table, path, row_group_size=100)
        s3.put(f"{prefix}/in/part-{k}.parquet", path.read_bytes())
        path.unlink()  # only the S3 server has the inputs
        expected += ids
    with LocalCluster() as cluster:
        workers = [cluster.add_worker(cpus=1, hide=(hidden,)) for _ in range(2)]
        env = cluster.env(SENTIMENT_JOBS_HOME=str(private_home))
        command = [
            sys.executable, "-m", "sentiment", "score", f"s3://bucket/{prefix}/in/",
            "--output", f"s3://bucket/{prefix}/out", "--model", "latest",
            "--store", f"s3://bucket/{prefix}/models", "--address", cluster.address,
            "--rows-per-file", "300",
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert all(w.alive for w in workers)
    manifest, out = read_output(f"s3://bucket/{prefix}/out")
    assert sorted(out["review_id"].to_pylist()) == sorted(expected)  # every row once
    assert set(out["model_id"].to_pylist()) == {model_id}
    assert manifest["model_dir"] == f"s3://bucket/{prefix}/models/{model_id}"
    assert len({a["node"] for a in manifest["actors"]}) == 2  # both workers scored


# --- (g) the whole job with data, store and output on S3 --------------------------------------


def _cli(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI in its own process (its own local Ray, whose workers get the AWS_* settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["SENTIMENT_JOBS_HOME"] = str(home)
    command = [sys.executable, "-m", "sentiment", *args]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.ray
def test_prepare_train_ensemble_evaluate_score_and_incremental_all_on_s3(
    s3, prefix, private_home, tmp_path
):
    base = f"s3://bucket/{prefix}"
    pq.write_table(pa.Table.from_pylist(make_reviews(300)), tmp_path / "reviews.parquet")
    result, errors = run(
        "prepare", str(tmp_path / "reviews.parquet"), "--format", "parquet",
        "--id-column", "review_id", "-o", f"{base}/data",
    )  # fmt: skip
    assert result.exit_code == 0 and not errors, result.output

    done = _cli(
        "train", "--data", f"{base}/data", "--store", f"{base}/models", "--ensemble", "2",
        "--hidden-size", "8", "--epochs", "1", "--batch-size", "16", "--max-tokens", "50",
        "--w2v-dim", "8", "--w2v-min-count", "1", "--w2v-epochs", "2", "--threads", "1",
        "--storage-path", str(tmp_path / "runs"), home=private_home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    latest = s3.keys(f"{prefix}/models/LATEST")[f"{prefix}/models/LATEST"].decode().strip()
    assert latest.startswith("ensemble-")  # two members published, then their ensemble
    published = {k.split("/")[2] for k in s3.keys(f"{prefix}/models/") if k.count("/") >= 3}
    assert len(published) == 3 and latest in published

    result, errors = run(
        "evaluate", "--model", "latest", "--store", f"{base}/models", "--data", f"{base}/data"
    )
    assert result.exit_code == 0 and not errors, result.output
    assert latest in result.output

    expected = []
    for k in range(3):
        reviews = make_reviews(100, seed=40 + k)
        ids = [f"s{k}-{r['review_id']}" for r in reviews]
        pq.write_table(
            pa.table({"review_id": ids, "text": [r["text"] for r in reviews]}),
            tmp_path / "p.parquet",
        )
        s3.put(f"{prefix}/in/part-{k}.parquet", (tmp_path / "p.parquet").read_bytes())
        expected += ids
        score = (
            "score", f"{base}/in/", "--output", f"{base}/out", "--store", f"{base}/models",
            "--incremental", "--actors", "1",
        )  # fmt: skip
        if k == 0:
            continue  # two inputs, then one more
        done = _cli(*score, home=private_home)
        assert done.returncode == 0, done.stderr[-3000:]
        manifest, out = read_output(f"{base}/out")
        assert sorted(out["review_id"].to_pylist()) == sorted(expected)  # every row once
        assert set(out["model_id"].to_pylist()) == {latest}
        new = [f"{base}/in/part-{k}.parquet".removeprefix("s3://")]
        if k == 2:  # the incremental run scored only the new input
            assert [p.removeprefix("s3://") for p in manifest["this_run"]["inputs"]] == new
