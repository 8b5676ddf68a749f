"""Ray jobs end to end: a real Ray head on 127.0.0.1 with token authentication.

The module starts its own head (free ports, its own temp dir and token), reuses one
trained model, and at the end terminates that head's process group. It never runs
`ray stop`, which would end every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.job_submission  # noqa: F401  (see below)
import requests
from typer.testing import CliRunner

from sentiment import datasets
from sentiment.cli import app

# Ray is imported above, not first inside a CliRunner call: Ray's log handler keeps the
# sys.stderr of its first import, and CliRunner's is closed after that call.
pytestmark = [
    pytest.mark.ray,
    # Ray's own log streaming (ray.job_submission) passes aiohttp a deprecated ssl=None.
    pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning"),
]
BIN = Path(sys.executable).parent  # the venv: its `ray` and `sentiment-jobs`
REPO = Path(__file__).resolve().parents[1]
POSITIVE = ["great", "excellent", "love", "wonderful", "best", "amazing", "perfect", "happy"]
NEGATIVE = ["bad", "terrible", "awful", "worst", "hate", "poor", "broken", "boring"]
FILLER = ["the", "a", "this", "product", "book", "it", "was", "is", "and", "i", "my", "with", "for"]


@dataclass
class Head:
    address: str
    token: str


@pytest.fixture(scope="module")
def head():
    token = secrets.token_hex(16)
    # A head that dies while starting (a port another process took between our check and
    # its bind, which Ray's own randomly chosen ports can also hit) is started again.
    for attempt in range(3):
        temp = tempfile.mkdtemp(prefix="rayj", dir="/tmp")  # short: socket paths max 107 bytes
        proc, address, log = _start_head(token, temp)
        try:
            _wait_for_jobs_api(address, token, proc, log)
            break
        except _HeadExited:
            _end_process_group(proc)
            shutil.rmtree(temp, ignore_errors=True)
            if attempt == 2:
                raise
    try:
        yield Head(address, token)
    finally:
        _end_process_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


class _HeadExited(Exception):
    pass


def _start_head(token: str, temp: str) -> tuple[subprocess.Popen, str, Path]:
    gcs, dashboard, client, agent = _free_ports(4)  # never Ray's defaults: others may use them
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # end at SIGTERM, no 30 s drain
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        "--num-cpus=2", "--num-gpus=0", "--object-store-memory=200000000",
        f"--temp-dir={temp}", "--disable-usage-stats",
    ]  # fmt: skip
    log = Path(temp) / "head.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, f"http://127.0.0.1:{dashboard}", log


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A prepared dataset of 200 polar reviews, a Parquet file to score and a corrupt one."""
    root = tmp_path_factory.mktemp("jobs")
    rng = random.Random(0)

    def review(positive: bool) -> str:
        words = [rng.choice(POSITIVE if positive else NEGATIVE) for _ in range(3)]
        words += [rng.choice(FILLER) for _ in range(6)]
        rng.shuffle(words)
        return " ".join(words)

    lines = [f"__label__{'pos' if i % 2 else 'neg'} {review(i % 2 == 1)}" for i in range(200)]
    (root / "reviews.txt").write_text("\n".join(lines) + "\n")
    datasets.prepare([root / "reviews.txt"], root / "prepared", fmt="fasttext")
    texts = [review(i % 2 == 1) for i in range(38)] + [None, "   "]
    ids = [f"r{i:02d}" for i in range(len(texts))]
    (root / "in").mkdir()
    pq.write_table(pa.table({"review_id": ids, "text": texts}), root / "in" / "reviews.parquet")
    (root / "corrupt.parquet").write_bytes(b"PAR1 this is not a Parquet file")
    return {"root": root, "prepared": root / "prepared", "input": root / "in" / "reviews.parquet"}


@pytest.fixture(scope="module")
def trained(head, data) -> dict:
    """`sentiment-jobs train --address ...` through the installed command: one tiny model."""
    store, runs = data["root"] / "store", data["root"] / "runs"
    command = [
        str(BIN / "sentiment-jobs"), "train", "--address", head.address,
        "--data", str(data["prepared"]), "--epochs", "2", "--lr", "0.01", "--hidden-size", "8",
        "--w2v-dim", "16", "--w2v-min-count", "1", "--w2v-epochs", "2",
        "--store", str(store), "--storage-path", str(runs),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command, env=_env(head.token), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    model_id = (store / "LATEST").read_text().strip()
    # The job ran the CLI itself: its summary, streamed back, names the model.
    assert f"model {model_id} -> {store / model_id}" in done.stdout
    return {
        "model_id": model_id,
        "model_dir": str(store / model_id),
        "store": store,
        "stderr": done.stderr,
        "seconds": time.monotonic() - started,
    }


def test_train_job_writes_a_model_directory(head, trained):
    model_dir = Path(trained["model_dir"])
    for name in ("config.json", "model.safetensors", "vocab.txt", "metrics.json"):
        assert (model_dir / name).is_file(), name
    assert (trained["store"] / "LATEST").read_text().strip() == trained["model_id"]
    assert model_dir.parent == trained["store"]
    assert "submitted sentiment-train-" in trained["stderr"]
    job_id = trained["stderr"].split("submitted ")[1].split()[0]
    assert f"job {job_id} succeeded" in trained["stderr"]
    # The entrypoint ran with the cluster's own Python, told by the cluster itself.
    status = _cli(head, ["jobs", "list", "--address", head.address])
    assert f"{job_id}  SUCCEEDED" in status.output
    assert f"{BIN}/python" in status.output.split(job_id)[1].splitlines()[0]


def test_score_job_scores_parquet(head, data, trained):
    output = data["root"] / "scored"
    args = ["score", str(data["input"]), "--model", "latest", "--store", str(trained["store"])]
    result = _cli(head, [*args, "--output", str(output)], env={"RAY_ADDRESS": head.address})
    assert result.exit_code == 0, result.output[-3000:]
    assert "rows in 40  rows out 40" in result.stdout  # the CLI's summary, from the job
    manifest = json.loads((output / "_manifest.json").read_text())
    summary = manifest["this_run"]
    assert (summary["rows_in"], summary["rows_out"], summary["ok"]) == (40, 40, 38)
    assert (summary["null_text"], summary["empty_text"]) == (1, 1)
    assert f"run {manifest['run_id']} (full)" in result.stdout
    assert (output / "_SUCCESS").read_text().strip() == manifest["run_id"]
    table = pq.read_table(output, columns=["review_id", "text", "p_positive", "model_id"])
    table = table.sort_by("review_id")
    source = pq.read_table(data["input"])
    assert table.column("review_id").to_pylist() == source.column("review_id").to_pylist()
    assert set(table.column("model_id").to_pylist()) == {trained["model_id"]}
    # The job's scores are the model's: the same as a Scorer here gives (plain torch, no Ray).
    from sentiment.scoring import Scorer

    local = Scorer(trained["model_dir"], device="cpu").score_texts(
        source.column("text").to_pylist()
    )
    remote = table.column("p_positive").to_pylist()
    for mine, theirs in zip(local.p_positive.tolist(), remote, strict=True):
        assert (theirs is None and mine != mine) or abs(mine - theirs) < 1e-6


def test_a_job_that_fails_inside_exits_non_zero_with_its_reason(head, data, trained):
    bad = data["root"] / "corrupt.parquet"
    result = _cli(
        head, ["score", str(bad), "--store", str(trained["store"]), "--address", head.address]
    )
    assert result.exit_code == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr[-2000:]
    assert error[0].startswith("error: job sentiment-score-") and " failed: " in error[0]
    assert f"{bad}: not a readable Parquet file" in error[0]
    assert "Traceback" not in result.stderr


def test_token_errors_are_one_clear_line(head, data, tmp_path):
    args = ["score", str(data["input"]), "--address", head.address]
    wrong = _cli(head, args, env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert wrong.exit_code == 1
    assert wrong.stderr.strip() == (
        f"error: the Ray cluster at {head.address} rejected the token from RAY_AUTH_TOKEN"
    )
    missing = _cli(head, args, env={"RAY_AUTH_TOKEN": None, "HOME": str(tmp_path)})
    assert missing.exit_code == 1
    assert missing.stderr.strip() == (
        f"error: the Ray cluster at {head.address} requires a token: set RAY_AUTH_TOKEN or "
        "RAY_AUTH_TOKEN_PATH, or put it in ~/.ray/auth_token"
    )
    path = tmp_path / "token"
    path.write_text(head.token + "\n")
    listed = _cli(head, ["jobs", "list", "--address", head.address], env=_path_env(path))
    assert listed.exit_code == 0, listed.output
    path.write_text("stale")
    stale = _cli(head, ["jobs", "list", "--address", head.address], env=_path_env(path))
    assert stale.exit_code == 1
    assert f"rejected the token from RAY_AUTH_TOKEN_PATH ({path})" in stale.stderr


def test_no_wait_then_status_logs_and_stop(head, data, trained):
    result = _cli(head, [*_long_training(data, trained), "--no-wait", "--address", head.address])
    assert result.exit_code == 0, result.output[-2000:]
    job_id = result.stdout.strip().splitlines()[-1]
    assert job_id.startswith("sentiment-train-")
    _wait_until_running(head, job_id)
    deadline = time.monotonic() + 30  # Ray marks a job RUNNING just before it starts it
    while f"Running entrypoint for job {job_id}" not in (
        logs := _cli(head, ["jobs", "logs", job_id, "--address", head.address]).stdout
    ):
        assert time.monotonic() < deadline, logs
        time.sleep(0.5)
    listed = _cli(head, ["jobs", "list", "--address", head.address])
    assert f"{job_id}  RUNNING" in listed.stdout
    stopped = _cli(head, ["jobs", "stop", job_id, "--address", head.address])
    assert stopped.exit_code == 0 and stopped.stdout.strip() == f"{job_id} STOPPED"
    status = _cli(head, ["jobs", "status", job_id, "--address", head.address])
    assert status.stdout.startswith(f"{job_id} STOPPED")
    unknown = _cli(head, ["jobs", "status", "sentiment-train-nope", "--address", head.address])
    assert unknown.exit_code == 1
    assert unknown.stderr.strip() == (
        f"error: no job sentiment-train-nope on the Ray cluster at {head.address}"
    )


def test_a_waiting_command_exits_non_zero_when_its_job_is_stopped(head, data, trained):
    command = [
        str(BIN / "sentiment-jobs"),
        *_long_training(data, trained),
        "--address",
        head.address,
    ]
    proc = subprocess.Popen(
        command, env=_env(head.token), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("submitted ") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)[-2000:]
            time.sleep(0.2)
        job_id = next(line for line in lines if line.startswith("submitted ")).split()[1]
        _wait_until_running(head, job_id)
        assert _cli(head, ["jobs", "stop", job_id, "--address", head.address]).exit_code == 0
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    assert f"error: job {job_id} stopped: Job was intentionally stopped." in "".join(lines)


def test_ray_job_submit_runs_the_documented_entrypoint(head, data, trained):
    output = data["root"] / "scored-by-ray-job-submit"
    env = {**_env(head.token), "RAY_AUTH_MODE": "token"}  # `ray job submit` needs both

    def ray_job_submit(*entrypoint: str) -> subprocess.CompletedProcess:
        job_id = f"sentiment-score-{uuid.uuid4().hex[:8]}"
        command = [str(BIN / "ray"), "job", "submit", "--address", head.address]
        command += ["--working-dir", str(REPO), "--submission-id", job_id, "--", *entrypoint]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)

    first = ray_job_submit(
        sys.executable, "-m", "sentiment", "score", str(data["input"]),
        "--model", trained["model_dir"], "--output", str(output),
    )  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert json.loads((output / "_manifest.json").read_text())["this_run"]["rows_out"] == 40
    assert (output / "_SUCCESS").is_file()
    # The scheduled form (jobs/raycronjob.yaml): the CLI inside a Ray job scores there,
    # and an incremental re-run finds nothing new and keeps the committed rows.
    again = ray_job_submit(
        str(BIN / "sentiment-jobs"), "score", str(data["input"]), "--incremental",
        "--model", trained["model_dir"], "--output", str(output),
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    assert "submitted sentiment-" not in again.stdout
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["mode"] == "incremental" and manifest["this_run"]["rows_in"] == 0
    assert manifest["totals"]["rows_out"] == 40
    assert (output / "_SUCCESS").read_text().strip() == manifest["run_id"]


# --- helpers -------------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:  # all bound at once, so the ports differ
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_for_jobs_api(address: str, token: str, proc: subprocess.Popen, log: Path) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _HeadExited(f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{address}/api/jobs/", headers=headers, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"the Ray head did not answer at {address}:\n{log.read_text()[-3000:]}")


def _end_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the head's process group (ray start and what it started), SIGKILL if need be."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _env(token: str) -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_TOKEN": token}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(name, None)
    return env


def _path_env(path: Path) -> dict[str, str | None]:
    return {"RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": str(path)}


def _cli(head: Head, args: list[str], env: dict[str, str | None] | None = None):
    base = {"RAY_AUTH_TOKEN": head.token, "RAY_AUTH_TOKEN_PATH": None, "RAY_ADDRESS": None}
    return CliRunner().invoke(app, args, env={**base, **(env or {})})


def _long_training(data: dict, trained: dict) -> list[str]:
    return [
        "train", "--data", str(data["prepared"]), "--epochs", "5000", "--hidden-size", "8",
        "--w2v-dim", "8", "--w2v-min-count", "1", "--w2v-epochs", "1", "--store", str(trained["store"]),
        "--storage-path", str(data["root"] / "runs"),
    ]  # fmt: skip


def _wait_until_running(head: Head, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        status = _cli(head, ["jobs", "status", job_id, "--address", head.address]).stdout
        if status.startswith(f"{job_id} RUNNING"):
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
