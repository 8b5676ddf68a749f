"""Submitting `train` and `score` as Ray jobs, and managing them, through the Ray Jobs API.

A job runs this very command line, `<python> -m sentiment train|score --config <JSON>`,
with the cluster's own Python; a checkout's code travels as the job's `working_dir`.
Ray 2.52+ clusters may require a token: it is read from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
or ~/.ray/auth_token and sent only to clusters that say they use token authentication.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shlex
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sentiment.config import (
    ScoreConfig,
    SentimentError,
    TrainConfig,
    absolute,
    is_model_id,
    to_dict,
)

log = logging.getLogger(__name__)
PROJECT = Path(__file__).resolve().parents[1]  # holds pyproject.toml in a checkout
DEFAULT_TOKEN = Path("~/.ray/auth_token")
# gitignore-style patterns left out of the upload (Ray caps a working_dir package's size)
EXCLUDES = [
    ".git", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
    "*.egg-info", "build", "dist", "tests", "runs", "demo", "*.parquet", "*.tar.gz",
]  # fmt: skip
# CPUs reserved for the driver. train builds the word2vec embeddings on the driver, so it
# gets a CPU (and so runs on a worker, not on a head with CPU 0); score only coordinates
# Ray Data, whose plan counts every CPU of the cluster: a reserved one could starve it.
# No GPUs: neither driver touches one, and a reserved GPU would sit idle.
DRIVER_CPUS = {"train": 1.0, "score": 0.0}
TIMEOUT_S = 10


@dataclass
class Cluster:
    """A connected Ray Jobs API: its dashboard address and a client with the right headers."""

    address: str
    client: Any  # ray.job_submission.JobSubmissionClient
    headers: dict[str, str]


@dataclass
class JobState:
    """A job as Ray reports it."""

    job_id: str
    status: str  # PENDING | RUNNING | STOPPED | SUCCEEDED | FAILED
    message: str
    entrypoint: str = ""
    start_time: float | None = None  # seconds since the epoch

    @property
    def finished(self) -> bool:
        return self.status in ("STOPPED", "SUCCEEDED", "FAILED")


def inside_ray_job() -> bool:
    """True in the driver of a Ray job, where RAY_ADDRESS points at the job's own cluster."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def read_token() -> tuple[str, str]:
    """(token, source) by Ray's order: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    path = Path(named or DEFAULT_TOKEN).expanduser()
    source = f"RAY_AUTH_TOKEN_PATH ({path})" if named else str(DEFAULT_TOKEN)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        if named:
            raise SentimentError(f"RAY_AUTH_TOKEN_PATH names {path}: no such file") from None
        return "", ""
    except OSError as exc:
        raise SentimentError(f"cannot read the Ray token in {path}: {exc.strerror}") from None
    if not token and named:
        raise SentimentError(f"RAY_AUTH_TOKEN_PATH names {path}, which is empty")
    return token, source if token else ""


def connect(address: str) -> Cluster:
    """Check that a Ray dashboard answers at `address` and accepts us; one-line errors if not."""
    from ray.job_submission import JobSubmissionClient

    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise SentimentError(f"{address} is a Ray Client address; give the dashboard's http:// one")
    if "://" not in address:
        address = f"http://{address}"
    mode = _get(address, "/api/authentication_mode", {})
    mode = mode.json().get("authentication_mode") if _is_json(mode) else None
    token, source = read_token()
    if mode == "token" and not token:
        raise SentimentError(
            f"the Ray cluster at {address} requires a token: set RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH, or put it in ~/.ray/auth_token"
        )
    # Only a cluster that says it uses tokens gets one: a server that does not say so
    # (not Ray, or a Ray too old to say) never sees it.
    headers = {"Authorization": f"Bearer {token}"} if token and mode == "token" else {}
    r = _get(address, "/api/version", headers)
    if r.status_code == 401 and mode != "token" and token:
        raise SentimentError(
            f"{address} asks for credentials but does not say it uses Ray tokens "
            "(/api/authentication_mode): the token was not sent; is it a Ray dashboard "
            "of Ray 2.52 or later?"
        )
    if r.status_code == 401:
        raise SentimentError(
            f"the Ray cluster at {address} requires a token: set RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH, or put it in ~/.ray/auth_token"
        )
    if r.status_code == 403 and headers:
        raise SentimentError(f"the Ray cluster at {address} rejected the token from {source}")
    if r.status_code != 200 or not _is_json(r) or "ray_version" not in r.json():
        raise SentimentError(
            f"{address} is not a Ray dashboard (HTTP {r.status_code}); "
            "give the dashboard address, usually http://<head>:8265"
        )
    if token and mode != "token" and os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        # Ray's job client adds the token itself wherever RAY_AUTH_MODE=token is set here,
        # whatever the server: it is not created for one that did not say it uses tokens.
        raise SentimentError(
            f"{address} does not say it uses Ray tokens, but RAY_AUTH_MODE=token is set "
            f"here, so Ray's job client would send it the token from {source}: unset "
            "RAY_AUTH_MODE for this cluster, or check the address"
        )
    with ray_errors(address):
        client = JobSubmissionClient(address, headers=dict(headers))
    return Cluster(address=address, client=client, headers=headers)


def absolute_paths(cfg: TrainConfig | ScoreConfig) -> TrainConfig | ScoreConfig:
    """The config with local paths made absolute (URIs kept): the job runs in another directory."""
    if isinstance(cfg, TrainConfig):
        emb = cfg.embeddings
        source = emb.source if emb.source == "train" else absolute(emb.source)
        return dataclasses.replace(
            cfg,
            data=absolute(cfg.data),
            store=absolute(cfg.store),
            storage_path=absolute(cfg.storage_path),
            embeddings=dataclasses.replace(emb, source=source),
        )
    return dataclasses.replace(
        cfg,
        inputs=tuple(absolute(i) for i in cfg.inputs),
        output=absolute(cfg.output) if cfg.output else "",
        # "latest" and model ids name models in the store, on the cluster: kept as they are
        model=cfg.model if _in_store(cfg.model) else absolute(cfg.model),
        store=absolute(cfg.store),
    )


def _in_store(model: str) -> bool:
    """Whether `--model` names a model of the store (as `artifacts.locate_model` reads it)."""
    return model == "latest" or (is_model_id(model) and not Path(model).exists())


def entrypoint(kind: str, cfg: TrainConfig | ScoreConfig, python: str) -> str:
    """The shell command a job runs: the CLI with every setting as `--config` JSON, quoted."""
    settings = json.dumps(to_dict(absolute_paths(cfg)), separators=(",", ":"))
    return shlex.join([python, "-m", "sentiment", kind, "--config", settings])


def submit(cluster: Cluster, kind: str, cfg: TrainConfig | ScoreConfig, python: str = "") -> str:
    """Submit `sentiment-jobs <kind>` with `cfg`; returns the id (sentiment-<kind>-<time>-<random>).

    `python`: the interpreter on the cluster; default: the one the cluster runs Ray with.
    From a checkout its code is uploaded with the job; an installed package expects the
    cluster to have sentiment-jobs installed too.
    """
    python = python or cluster_python(cluster) or "python"
    job_id = f"sentiment-{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    command = entrypoint(kind, cfg, python)
    log.info("submitting %s to %s: %s", job_id, cluster.address, command)
    # Ray 2.60 warns on every upload that it skips .git and .venv (as we want) and names
    # each .gitignore it honours: noise to someone watching a submission.
    logging.getLogger("ray._private.runtime_env.working_dir").setLevel(logging.ERROR)
    logging.getLogger("ray._private.runtime_env.packaging").setLevel(logging.WARNING)
    checkout = (PROJECT / "pyproject.toml").is_file()
    with ray_errors(cluster.address):
        return cluster.client.submit_job(
            entrypoint=command,
            submission_id=job_id,
            runtime_env={"working_dir": str(PROJECT), "excludes": EXCLUDES} if checkout else None,
            entrypoint_num_cpus=DRIVER_CPUS[kind] or None,
            metadata={"sentiment_job": kind},
        )


def cluster_python(cluster: Cluster, wait_s: float = 60.0) -> str:
    """The Python the cluster's head runs its Ray workers with, or "" when it cannot be told.

    Read from the raylet's `--python_worker_command` in the dashboard's node summary. A
    head that has just started serves its Jobs API before the summary knows that: first
    the summary is empty (seen here: from 2.7 s to 4.8 s after start), then the head node
    is listed from the GCS before its reporter agent has sent the command line (seen in
    CI: the head listed, no `cmdline`). Until the command line is there, or a client error
    says it never will be, the summary is asked again for up to `wait_s` seconds.
    """
    deadline = time.monotonic() + wait_s
    python = ""
    while True:
        try:
            r = requests.get(
                f"{cluster.address}/nodes?view=summary", headers=cluster.headers, timeout=TIMEOUT_S
            )
            if 400 <= r.status_code < 500:  # not found, not allowed: asking again won't help
                break
            python = _worker_python(r.json()["data"]["summary"])
        except (requests.RequestException, ValueError, KeyError, TypeError, IndexError):
            pass  # a dashboard still starting: asked again until the deadline
        if python or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not python:
        log.warning("could not tell the cluster's Python; using `python` (set --python to choose)")
    return python


def _worker_python(nodes: list[dict[str, Any]]) -> str:
    """The interpreter in the head node's `--python_worker_command`, or ""."""
    for node in nodes:
        if node.get("raylet", {}).get("isHeadNode"):
            for arg in node.get("cmdline") or []:
                if arg.startswith("--python_worker_command="):
                    return shlex.split(arg.split("=", 1)[1])[0]
    return ""


def status(cluster: Cluster, job_id: str) -> JobState:
    """Where a job stands: status, Ray's message, entrypoint."""
    with ray_errors(cluster.address, job_id):
        info = cluster.client.get_job_info(job_id)
    return _state(info)


def list_jobs(cluster: Cluster) -> list[JobState]:
    """Submitted jobs on the cluster, oldest first."""
    with ray_errors(cluster.address):
        jobs = cluster.client.list_jobs()
    return sorted((_state(j) for j in jobs if j.submission_id), key=lambda s: s.start_time or 0)


def logs(cluster: Cluster, job_id: str) -> str:
    """The job's logs so far."""
    with ray_errors(cluster.address, job_id):
        return cluster.client.get_job_logs(job_id)


def follow(cluster: Cluster, job_id: str, write: Callable[[str], None]) -> JobState:
    """Pass the job's logs to `write` as they come until it ends; returns its final state."""

    async def tail() -> None:
        async for text in cluster.client.tail_job_logs(job_id):
            write(text)

    status(cluster, job_id)  # a clear error for an unknown job, before the websocket's
    with ray_errors(cluster.address, job_id):
        asyncio.run(tail())
    return wait(cluster, job_id)


def wait(cluster: Cluster, job_id: str, timeout_s: float = float("inf")) -> JobState:
    """Poll until the job has finished (or `timeout_s` passed); returns its last state."""
    deadline = time.monotonic() + timeout_s
    while not (state := status(cluster, job_id)).finished and time.monotonic() < deadline:
        time.sleep(0.5)
    return state


def stop(cluster: Cluster, job_id: str, timeout_s: float = 60.0) -> JobState:
    """Ask Ray to stop the job and wait for it to end."""
    with ray_errors(cluster.address, job_id):
        cluster.client.stop_job(job_id)
    return wait(cluster, job_id, timeout_s)


def job_failure_reason(cluster: Cluster, state: JobState) -> str:
    """One line: Ray's message (its first line) and the last `error:` line of the job's logs."""
    message = state.message.splitlines()[0] if state.message else state.status.lower()
    message = message.split(", last available logs")[0]
    lines = [line.strip() for line in logs(cluster, state.job_id).splitlines() if line.strip()]
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    detail = errors[-1] if errors else (lines[-1] if lines and state.status == "FAILED" else "")
    return f"{message}: {detail}" if detail else message


@contextmanager
def ray_errors(address: str, job_id: str = "") -> Iterator[None]:
    """Turn what the Ray Jobs client raises into one-line `SentimentError`s."""
    import aiohttp  # log streaming's client (a dependency of ray[default])
    from ray.exceptions import AuthenticationError

    try:
        yield
    except (requests.RequestException, aiohttp.ClientError):
        raise SentimentError(f"no Ray cluster answers at {address}") from None
    except AuthenticationError:
        raise SentimentError(f"the Ray cluster at {address} did not accept the token") from None
    except RuntimeError as exc:
        text = str(exc)
        if job_id and "does not exist" in text:
            raise SentimentError(f"no job {job_id} on the Ray cluster at {address}") from None
        raise SentimentError(f"Ray at {address}: {text.splitlines()[0]}") from None


def _get(address: str, path: str, headers: dict[str, str]) -> requests.Response:
    try:
        return requests.get(address + path, headers=headers, timeout=TIMEOUT_S)
    except requests.RequestException:
        raise SentimentError(f"no Ray cluster answers at {address}") from None


def _is_json(r: requests.Response) -> bool:
    return r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json")


def _state(info: Any) -> JobState:
    return JobState(
        job_id=info.submission_id or info.job_id,
        status=str(info.status.value if hasattr(info.status, "value") else info.status),
        message=info.message or "",
        entrypoint=info.entrypoint or "",
        start_time=info.start_time / 1000 if info.start_time else None,
    )
