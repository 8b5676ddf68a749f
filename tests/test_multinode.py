"""train and score on real multi-node Ray clusters, with nodes dying under them.

One cluster for the module: a head with no CPUs (as in cluster.yaml) and one-CPU worker
nodes, each a `ray start` process in its own session on 127.0.0.1 (tests/multinode.py).
The commands run as the installed `sentiment-jobs`, a driver joining the cluster by its
GCS address. Killing a node is SIGKILL to every one of its processes at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import make_reviews
from tests.multinode import LocalCluster

pytestmark = [pytest.mark.ray, pytest.mark.multinode]
CLI = str(Path(sys.executable).parent / "sentiment-jobs")
FILES, ROWS_PER_FILE = 12, 1_600  # the floor: 19,200 rows over 12 files


@pytest.fixture(scope="module")
def cluster():
    # Node death noticed in about 10 s rather than 30 (health checks every 2 s, 5 misses).
    with LocalCluster(
        head_env={"RAY_health_check_period_ms": "2000", "RAY_health_check_failure_threshold": "5"}
    ) as c:
        yield c


def workers(cluster: LocalCluster, n: int, cpus: float = 1, gpus: float = 0) -> list:
    """At least `n` alive worker nodes of this shape (killed ones are replaced)."""
    alive = [
        node for node in cluster.nodes[1:] if node.alive and (node.cpus, node.gpus) == (cpus, gpus)
    ]
    for _ in range(n - len(alive)):
        alive.append(cluster.add_worker(cpus, gpus))
    return alive


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, list[str]]:
    """12 Parquet files of 1,600 generated reviews each, with unique review ids."""
    root = tmp_path_factory.mktemp("collection")
    rows = make_reviews(FILES * ROWS_PER_FILE, seed=7)
    for i in range(FILES):
        part = rows[i * ROWS_PER_FILE : (i + 1) * ROWS_PER_FILE]
        pq.write_table(
            pa.Table.from_pylist(part), root / f"part-{i:02d}.parquet", row_group_size=400
        )
    return root, [r["review_id"] for r in rows]


def score(cluster, inputs: Path, output: Path, model: Path, *extra: str) -> subprocess.Popen:
    command = [CLI, "score", str(inputs), "--output", str(output), "--model", str(model)]
    command += ["--address", cluster.address, *extra]
    return subprocess.Popen(
        command, env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"did not finish in {timeout} s: {err[-3000:]}")
    return proc.returncode, out, err


def committed_ids(output: Path) -> list[str]:
    manifest = json.loads((output / "_manifest.json").read_text())
    assert (output / "_SUCCESS").read_text().strip() == manifest["run_id"]
    files = [output / f["name"] for f in manifest["files"]]
    assert sorted(p.name for p in output.glob("*.parquet")) == sorted(p.name for p in files)
    return [i for f in files for i in pq.read_table(f, columns=["review_id"]).column(0).to_pylist()]


def test_three_nodes_with_a_cpu_less_head_score_every_row_once(
    cluster, collection, tiny_model, tmp_path
):
    workers(cluster, 2)
    inputs, ids = collection
    code, _out, err = finish(score(cluster, inputs, tmp_path / "out", tiny_model))
    assert code == 0, err[-3000:]
    assert sorted(committed_ids(tmp_path / "out")) == sorted(ids)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["this_run"]["rows_in"] == manifest["this_run"]["rows_out"] == 19_200
    # One actor on each one-CPU worker, each leaving room there for reads and writes.
    assert manifest["resources"]["actors"] == 2 and manifest["resources"]["cpus"] == 0.75
    assert len({a["node"] for a in manifest["actors"]}) == 2
    assert "joining the Ray cluster at 127.0.0.1:" in err


def test_a_worker_node_killed_mid_score_loses_and_duplicates_no_row(
    cluster, collection, tiny_model, tmp_path
):
    victim, _ = workers(cluster, 2)
    inputs, ids = collection
    started = time.monotonic()
    proc = score(cluster, inputs, tmp_path / "out", tiny_model, "--rows-per-file", "400")
    # Scoring under way: an actor on the node, and a unit's file staged and done (three
    # staged by two actors: one of them has finished a file and started the next).
    while not (
        victim.runs("ScorerActor") and len(list(tmp_path.glob("out/_staging/*/part-*"))) >= 3
    ):
        assert proc.poll() is None and time.monotonic() - started < 240, "no actor scoring"
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before the node could be killed"
    victim.kill()
    code, _out, err = finish(proc)
    assert code == 0, err[-3000:]
    committed = committed_ids(tmp_path / "out")
    assert len(committed) == len(set(committed)) == 19_200
    assert set(committed) == set(ids)
    # The loss was noticed, and the failed attempt's actors are still on record.
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["retries"] and manifest["retries"][0]["attempt"] == 1
    # Units finished before the loss are kept, not scored again (their receipts outlive
    # the attempt's stream).
    assert manifest["retries"][0]["units_done"] >= 1, manifest["retries"]
    assert len(manifest["actors"]) >= 2


# A driver joining the cluster (a child process: in this one it would hold resources).
_REGISTRY_NODES = """
import sys, ray
from sentiment.score_job import start_registry
ray.init(address=sys.argv[1])
here = ray.get_runtime_context().get_node_id()
registries = [start_registry() for _ in range(8)]
nodes = ray.get([r.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
                 for r in registries], timeout=120)
print(sum(n == here for n in nodes), len(nodes))
"""


def test_the_scoring_registry_lives_on_the_drivers_node(cluster):
    """Not on a worker that may die with it: a lost registry left the failed attempt's
    surviving actors holding their CPUs, and the next attempt waited for room."""
    workers(cluster, 2)
    done = subprocess.run(
        [sys.executable, "-c", _REGISTRY_NODES, cluster.address],
        env=cluster.env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["8", "8"]


def test_a_worker_node_killed_mid_train_resumes_from_the_last_checkpoint(cluster, tmp_path):
    from sentiment.datasets import prepare
    from sentiment.readers import Columns

    nodes = workers(cluster, 3)  # two training workers and a spare node for their restart
    pq.write_table(pa.Table.from_pylist(make_reviews(24_000, seed=9)), tmp_path / "r.parquet")
    prepare([tmp_path / "r.parquet"], tmp_path / "data", columns=Columns(id="review_id"))
    runs, store = tmp_path / "runs", tmp_path / "store"
    command = [
        CLI, "train", "--data", str(tmp_path / "data"), "--address", cluster.address,
        "--workers", "2", "--max-failures", "2", "--epochs", "4", "--hidden-size", "32",
        "--w2v-dim", "32", "--w2v-epochs", "1", "--w2v-min-count", "1", "--name", "killed",
        "--store", str(store), "--storage-path", str(runs),
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    started = time.monotonic()
    # Ray Train lists a checkpoint in its snapshot once it is whole: then kill.
    while not (runs / "killed" / "checkpoint_manager_snapshot.json").exists():
        assert proc.poll() is None and time.monotonic() - started < 300, "no first checkpoint"
        time.sleep(0.2)
    victim = next(n for n in nodes if n.runs("RayTrainWorker"))
    victim.kill()
    assert proc.poll() is None and len(list(runs.glob("killed/checkpoint_*"))) < 4
    code, out, _ = finish(proc, timeout=420)
    assert code == 0, out[-4000:]
    metrics = json.loads(next(store.glob("gru-*/metrics.json")).read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert len(metrics["resumed_after"]) == 1 and 1 <= metrics["resumed_after"][0] < 4
    assert all(h["workers"] == 2 for h in metrics["history"])


@pytest.mark.parametrize("kind", ["score", "train"])
def test_a_request_no_node_can_meet_fails_in_bounded_time_naming_it(
    kind, cluster, collection, tiny_model, tiny_dataset, tmp_path
):
    workers(cluster, 1)
    if kind == "score":
        command = [CLI, "score", str(collection[0]), "--output", str(tmp_path / "out")]
        command += ["--model", str(tiny_model), "--gpus-per-actor", "1"]
    else:
        command = [CLI, "train", "--data", str(tiny_dataset), "--use-gpu", "--w2v-dim", "8"]
        command += ["--w2v-epochs", "1", "--store", str(tmp_path / "s")]
        command += ["--storage-path", str(tmp_path / "r")]
    command += ["--address", cluster.address, "--resource-timeout", "10"]
    done = subprocess.run(command, env=cluster.env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "1 GPU" in errors[0] and "within 10 s" in errors[0] and "GPU 0" in errors[0]
    assert "Traceback" not in done.stderr
    if kind == "score":  # nothing left behind: no lock, no staging, no data
        assert not list(tmp_path.glob("out/*"))


def test_gpu_nodes_host_one_actor_per_gpu(cluster, collection, tiny_model, tmp_path):
    """Logical GPUs (torch sees none here, so the model runs on CPU): one actor per GPU,
    only on the GPU node, beside one-CPU nodes without GPUs."""
    workers(cluster, 1)
    (gpu_node,) = workers(cluster, 1, cpus=1, gpus=1)
    inputs, ids = collection
    code, _out, err = finish(score(cluster, inputs, tmp_path / "out", tiny_model))
    assert code == 0, err[-3000:]
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["resources"]["gpus"] == 1.0 and manifest["resources"]["actors"] == 1
    assert {tuple(a["gpu_ids"]) for a in manifest["actors"]} == {("0",)}
    assert sorted(committed_ids(tmp_path / "out")) == sorted(ids)
    gpu_node.kill()  # the other tests' nodes have no GPUs


def test_a_driver_without_the_clusters_token_is_told_about_tokens(cluster, tiny_model, tmp_path):
    """Ray's own words name the cluster's outward address and no token: the error line
    says what to set."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    pq.write_table(pa.Table.from_pylist(make_reviews(20)), inputs / "a.parquet")
    env = cluster.env()
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(name)
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token
    command = [CLI, "score", str(inputs), "--output", str(tmp_path / "out")]
    command += ["--model", str(tiny_model), "--address", cluster.address]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert errors[0].startswith(f"error: cannot join the Ray cluster at {cluster.address}")
    assert "RAY_AUTH_MODE=token" in errors[0] and "RAY_AUTH_TOKEN" in errors[0]
