"""A local Ray started by `init_ray` (no cluster address): reachable from this machine only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]

LISTENERS = textwrap.dedent(
    """
    import json, os, time
    from sentiment.cluster import init_ray
    init_ray(num_cpus=1, num_gpus=0)
    import ray
    import psutil  # Ray ships it (ray/thirdparty_files, on sys.path once ray is imported)

    @ray.remote
    def pid():
        return os.getpid()

    ray.get(pid.remote())  # a worker process too

    def listening():
        me = psutil.Process()
        found = []
        for p in [me, *me.children(recursive=True)]:
            try:
                found += [
                    [p.name(), c.laddr.ip, c.laddr.port]
                    for c in p.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN
                ]
            except psutil.Error:
                pass
        return found

    # the agents start after ray.init returns: wait until every kind of server is up
    for _ in range(60):
        names = " ".join(n for n, _, _ in listening())
        if all(k in names for k in ("gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent")):
            break
        time.sleep(0.5)
    found = listening()
    ray.shutdown()
    print(json.dumps(found))
    """
)


def test_local_ray_listens_on_loopback_only():
    """Every listening socket of the run's own Ray processes (driver, GCS, raylet, agents,
    workers) is bound to 127.0.0.1, none to 0.0.0.0, :: or the machine's address."""
    tmp = tempfile.mkdtemp(prefix="rayl", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID")}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", LISTENERS],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=REPO,
            env={**env, "RAY_TMPDIR": tmp},
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    names = {name for name, _, _ in found}
    assert {"gcs_server", "raylet"} <= names and any("Agent" in n for n in names), found
    exposed = [f for f in found if f[1] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert exposed == [], exposed
