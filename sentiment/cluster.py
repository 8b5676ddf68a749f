"""Connecting to Ray: the cluster a job runs in, or a private local one.

Inside a Ray job the supervisor sets RAY_ADDRESS and `ray.init()` joins that
cluster. Anywhere else, `address="local"` starts a fresh in-process cluster
rather than joining whatever local Ray happens to be running.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


def init_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join the job's cluster (RAY_ADDRESS set by Ray Jobs) or start a local Ray once."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    log.info("starting a local Ray (no cluster address given), on 127.0.0.1 only")
    with _loopback_only():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            log_to_driver=True,
            _node_ip_address="127.0.0.1",
            dashboard_host="127.0.0.1",
        )


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
    when a `SentimentError` was raised remotely, else the last line of the error text."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if "SentimentError: " in line:
            return line.split("SentimentError: ", 1)[1]
    return (lines[-1] if lines else type(exc).__name__)[:500]


def cluster_resources() -> dict[str, float]:
    """CPUs and GPUs the connected cluster has in total."""
    import ray

    res = ray.cluster_resources()
    return {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0))}
