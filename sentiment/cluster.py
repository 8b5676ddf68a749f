"""Connecting to Ray: the cluster a command runs on, or a private local one.

Addresses mean what they mean to Ray users:

- "" or "local": start a private Ray in this process (nothing to set up).
- "host:port" (the head's GCS, as `ray start` prints it) or "auto" (the cluster this
  machine belongs to): run here as a driver of that cluster.
- "http(s)://host:8265" (the dashboard): submit a Ray job there (sentiment.submit).

Inside a Ray job the supervisor sets RAY_ADDRESS to its cluster: `ray.init()` joins it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
from collections.abc import Iterator

from sentiment.config import SentimentError

log = logging.getLogger(__name__)
LOCAL, DRIVER, SUBMIT = "local", "driver", "submit"
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}")


def address_kind(address: str) -> str:
    """LOCAL, DRIVER or SUBMIT for an address as the user gave it (see the module doc)."""
    address = address.strip()
    if address in ("", "local"):
        return LOCAL
    if address.startswith(("http://", "https://")):
        return SUBMIT
    if address == "auto" or _HOST_PORT.fullmatch(address):
        return DRIVER
    if address.startswith("ray://"):
        raise SentimentError(
            f"{address} is a Ray Client address, which Ray Train and Ray Data do not support "
            "well: give the head's http://<head>:8265 to submit a job, or run on a cluster "
            "node with --address <head>:6379 (or auto)"
        )
    raise SentimentError(
        f"{address!r} is not a Ray address: use <head>:<port> or auto (run here as a driver "
        "of that cluster), http://<head>:8265 (submit a Ray job), or nothing (a local Ray)"
    )


class Stopped(BaseException):
    """The driver was sent SIGTERM or SIGINT. A BaseException, so that no `except
    Exception` on the way out takes it for a failure of the work, and every cleanup runs
    (a scoring run's staging area discarded, its lock released)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def stop_on_signals() -> None:
    """SIGTERM (what `timeout`, cron wrappers and Kubernetes send) and SIGINT raise
    `Stopped` in the main thread. Called once Ray is up: Ray's core worker installs a
    SIGTERM handler that dumps a crash report and aborts (exit 134), leaving the lock."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (and receives them)

    def stop(signum, frame):
        raise Stopped(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)


class _Drop(logging.Filter):
    """Drops the records whose message starts with `start`."""

    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def quiet_ray() -> None:
    """Ray's own INFO lines (the instance started, Ray Data's plan and progress log) only
    at debug level (-v); its warnings and errors always, but for its note that token
    authentication is on (the state this project asks for; that it is off still shows)."""
    if log.getEffectiveLevel() <= logging.DEBUG:
        return
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    token = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _Drop) for f in token.filters):
        token.addFilter(_Drop("Token authentication is enabled"))


def _ray_level() -> int:
    """Ray's own log level: INFO at debug level (-v), else WARNING (see `quiet_ray`)."""
    return logging.INFO if log.getEffectiveLevel() <= logging.DEBUG else logging.WARNING


def init_ray(address: str = "", num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join the cluster at `address` (or the job's own, inside a Ray job), else start a
    local Ray. Only a local Ray takes `num_cpus`/`num_gpus`. Then SIGTERM and SIGINT
    stop this driver cleanly (`stop_on_signals`)."""
    import ray

    if ray.is_initialized():
        return
    quiet_ray()
    _connect(address, num_cpus, num_gpus)
    quiet_ray()  # ray.init sets its loggers up again
    stop_on_signals()


def _connect(address: str, num_cpus: int | None, num_gpus: int | None) -> None:
    import ray

    if os.environ.get("RAY_JOB_ID") or (not address and os.environ.get("RAY_ADDRESS")):
        # The job's cluster, from RAY_ADDRESS.
        ray.init(log_to_driver=True, logging_level=_ray_level())
        return
    if address_kind(address) == DRIVER:
        log.info("joining the Ray cluster at %s", address)
        try:
            ray.init(address=address, log_to_driver=True, logging_level=_ray_level())
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                # What a token-auth cluster answers a driver without one, naming no token.
                reason += (
                    "; if it uses token authentication (on by default in recent Ray), set "
                    "RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN (or "
                    "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token)"
                )
            raise SentimentError(f"cannot join the Ray cluster at {address}: {reason}") from None
        return
    log.info("starting a local Ray (no cluster address given), on 127.0.0.1 only")
    with _loopback_only():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            log_to_driver=True,
            logging_level=_ray_level(),
            _node_ip_address="127.0.0.1",
            dashboard_host="127.0.0.1",
        )


# What Ray raises when a node, worker or object is lost: the work can be done again.
LOST = (
    "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "ObjectLostError",
    "OwnerDiedError", "ObjectFetchTimedOutError", "ObjectReconstructionFailed",
    "WorkerCrashedError", "ReferenceCountingAssertionError", "ExecutionTimeoutError",
    "RayActorError", "LocalRayletDiedError",
)  # fmt: skip
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Exit)\w*)(?:\(.*\))?: \S")


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """A private Ray serves this process alone: nothing of it should listen beyond loopback.

    Ray (2.5x-2.60) binds its GCS, raylet, worker and agent servers to every interface
    unless the node's address is loopback, and `ray.init` turns an explicit 127.0.0.1
    into the machine's outward address where multi-node clusters are enabled (Linux).
    Disabling them for the start (Ray's macOS/Windows default) keeps loopback.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray without the switch: its own defaults
        yield
        return
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def failure_reason(exc: BaseException) -> str:
    """One line from an error Ray raised for a remote task or worker: our own message
    when a `SentimentError` was raised remotely, else the last exception line of the
    remote traceback (not Ray's advice that follows it), else the last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if "SentimentError: " in line:
            return line.split("SentimentError: ", 1)[1]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line[:500]
    return (lines[-1] if lines else type(exc).__name__)[:500]


def lost_work(exc: BaseException) -> bool:
    """Whether Ray failed because a node, worker or object was lost (worth retrying), not
    because of the data or the code."""
    text = f"{type(exc).__name__}: {exc}"
    if "SentimentError" in text or "error raised in its creation task" in text:
        return False  # an actor's own constructor failed: the same on any node
    return any(name in text for name in LOST)


def alive_nodes() -> list[dict[str, float]]:
    """CPUs, GPUs and object store bytes of every alive node of the connected cluster."""
    import ray

    return [
        {
            "CPU": float(n["Resources"].get("CPU", 0)),
            "GPU": float(n["Resources"].get("GPU", 0)),
            "object_store_memory": float(n["Resources"].get("object_store_memory", 0)),
        }
        for n in ray.nodes()
        if n.get("Alive")
    ]


def describe(nodes: list[dict[str, float]]) -> str:
    """'3 nodes: CPU 0+1+1, GPU 0' for error messages."""

    def each(key: str) -> str:
        values = [n.get(key, 0) for n in nodes]
        text = "+".join(f"{v:g}" for v in values) if any(values) else "0"
        return f"{key} {text}"

    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}: {each('CPU')}, {each('GPU')}"


def can_place(bundles: list[dict[str, float]], timeout_s: float) -> bool:
    """Whether the cluster can host `bundles` (each on some node) within `timeout_s`.

    Asked with a placement group, removed at once: an autoscaler sees the request and may
    add nodes meanwhile, and a request no node can ever meet ends at the timeout instead
    of waiting forever, as Ray would.
    """
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([{k: v for k, v in b.items() if v > 0} for b in bundles], "SPREAD")
    try:
        return pg.wait(timeout_seconds=max(1, round(timeout_s)))
    finally:
        remove_placement_group(pg)
