"""Real multi-node Ray clusters on one machine, for tests and benchmarks.

Every node is a `ray start --block` process in its own process group (its raylet, object
store and workers are its children), bound to 127.0.0.1, with ports chosen free and a
private temp dir. Killing a node is SIGKILL to its process group: the way a machine dies.
Nothing here runs `ray stop`, which would end every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's `ray`


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Node:
    proc: subprocess.Popen
    cpus: float
    gpus: float
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def processes(self) -> list[tuple[int, str]]:
        """(pid, command line) of every process of the node: its session, which holds
        the raylet's process group and the workers, each in a group of its own."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == self.proc.pid:
                        cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                        found.append((int(entry.name), cmd))
                except (OSError, ValueError):
                    pass
        return found

    def runs(self, text: str) -> bool:
        """Whether one of the node's processes has `text` in its command line."""
        return any(text in cmd for _, cmd in self.processes())

    def kill(self) -> None:
        """SIGKILL every process of the node at once, as when its machine dies (again
        until none is left: a worker may be forked while the first round is sent)."""
        for _ in range(20):
            self.proc.poll()  # reap the node's own process once it is killed
            found = self.processes()
            if not found:
                break
            for pid, _ in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        self.proc.wait(timeout=30)


@dataclass
class LocalCluster:
    """A head (by default with no CPUs, as on a real cluster) and worker nodes."""

    head_cpus: float = 0
    object_store_mb: int = 100
    head_env: dict[str, str] = field(default_factory=dict)  # e.g. RAY_<system config>
    temp: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="raym", dir="/tmp"))
    nodes: list[Node] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def address(self) -> str:
        """The GCS address a driver on a cluster node joins (`ray.init(address=...)`)."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the nodes, and of drivers and clients of this cluster: its
        own token (never ~/.ray/auth_token, which other Rays on the machine share)."""
        env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, **extra)
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            if name not in extra:
                env.pop(name, None)
        return env

    def start(self) -> LocalCluster:
        gcs, dash, client, agent, grpc, renv, metrics = free_ports(7)
        self.gcs_port, self.dashboard_port = gcs, dash
        try:
            head = [
                "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
                f"--temp-dir={self.temp}",
            ]  # fmt: skip
            self._launch(head, self.head_cpus, 0, (agent, grpc, renv, metrics), env=self.head_env)
            self.wait_for_nodes(1)
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(
        self, cpus: float = 1, gpus: float = 0, wait: bool = True, hide: tuple[str, ...] = ()
    ) -> Node:
        """A worker node; `hide`: directories it sees empty (its own mount namespace, an
        empty tmpfs over each), so that, as on a real cluster, it cannot read what the
        driver keeps there (its files, model cache, outputs): an actor given a
        driver-local path fails."""
        for tries_left in (1, 0):
            node = self._launch(
                [f"--address={self.address}"], cpus, gpus, tuple(free_ports(4)), hide
            )
            if not wait:
                return node
            try:
                self.wait_for_nodes(sum(n.alive for n in self.nodes))
                return node
            except RuntimeError as exc:
                # On 2 busy cores `ray start` can give up waiting for the GCS ("timed
                # out during startup"): a slow start, not what a test is about; once more.
                if not tries_left or "timed out during startup" not in str(exc):
                    raise
                self.nodes.remove(node)
        raise AssertionError("unreachable")

    def _launch(
        self,
        args: list[str],
        cpus: float,
        gpus: float,
        ports: tuple,
        hide: tuple[str, ...] = (),
        env: dict | None = None,
    ) -> Node:
        agent, grpc, renv, metrics = ports
        log = Path(self.temp) / f"node{len(self.nodes)}.log"
        command = [
            str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", *args,
            f"--num-cpus={cpus}", f"--num-gpus={gpus}",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
            f"--runtime-env-agent-port={renv}", f"--metrics-export-port={metrics}",
            "--disable-usage-stats",
        ]  # fmt: skip
        if hide:
            command = [*hiding(hide), *command]
        with log.open("w") as out:
            proc = subprocess.Popen(
                command, env=self.env(**(env or {})), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        node = Node(proc, cpus, gpus, log)
        self.nodes.append(node)
        return node

    def wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        """Until the GCS counts `n` alive nodes (asked through `ray status`-free GCS calls)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.alive and node.proc.returncode not in (None, -9):
                    raise RuntimeError(f"a Ray node exited: {node.log.read_text()[-2000:]}")
            if self.alive_nodes() >= n:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{n} Ray nodes did not come up in {timeout} s")

    def alive_nodes(self) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _COUNT_NODES, self.address],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        try:
            return int(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def stop(self) -> None:
        for node in reversed(self.nodes):
            _end_group(node.proc, signal.SIGTERM)
        for node in self.nodes:  # whatever outlived its node's shutdown
            node.kill()
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def hiding(directories: tuple[str, ...]) -> list[str]:
    """A command prefix: a new mount namespace with an empty tmpfs over each directory,
    then the command (needs root, or a user namespace)."""
    mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(d)}" for d in directories)
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'{mounts} && exec "$@"',
        "hide",
    ]


def can_hide(directory: str) -> bool:
    """Whether this machine lets a node run with `directory` hidden (see `hiding`)."""
    try:
        done = subprocess.run([*hiding((directory,)), "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# Counted in a child process: a driver here would hold the cluster's resources.
_COUNT_NODES = """
import sys
from ray._raylet import GcsClient
try:
    nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=5)
    print(sum(1 for n in nodes.values() if n.state == 0))
except Exception:
    print(0)
"""


def _end_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
