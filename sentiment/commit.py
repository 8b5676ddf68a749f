"""Committing a scoring run's output so that scheduled re-runs are safe.

Layout of an output directory (a local path or a URI pyarrow understands):

    _SUCCESS              written last; names the run that committed
    _manifest.json        the committed state: which data files, which inputs, counts
    part-<run>-NNNNN.parquet
    _staging/<run>/       a run in progress (readers skip `_`-prefixed paths)
    _LOCK                 while a run is writing: its id, host and pid

A run writes only under `_staging/<run>/` until it commits. Commit = move the
new files in, replace `_manifest.json` (a rename), delete the data files the new
manifest no longer lists, write `_SUCCESS`. A run that fails before committing
leaves the previous output, manifest and `_SUCCESS` untouched. A commit cut off
half-way is repaired by the next run: data files the manifest does not list are
debris and are deleted, so the manifest is always the truth.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

from sentiment.artifacts import filesystem
from sentiment.config import SentimentError

log = logging.getLogger(__name__)
SUCCESS, MANIFEST, STAGING, LOCK = "_SUCCESS", "_manifest.json", "_staging", "_LOCK"


class OutputDir:
    """The committed output of `sentiment-jobs score` at one location."""

    def __init__(self, location: str):
        self.fs, self.root = filesystem(location)
        # Local paths are made absolute, so they compare equal to resolved input paths.
        self.location = location.rstrip("/") if "://" in location else self.root

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def staging(self, run_id: str) -> str:
        return self.path(f"{STAGING}/{run_id}")

    def committed_manifest(self) -> dict[str, Any] | None:
        """The manifest of the last successful run, or None for a fresh output."""
        if not self._exists(MANIFEST):
            return None
        try:
            with self.fs.open_input_stream(self.path(MANIFEST)) as f:
                return json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise SentimentError(f"{self.path(MANIFEST)}: unreadable manifest ({exc})") from None

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Only one run writes an output at a time (a schedule can overlap a slow run).

        `_LOCK` names the run, host and pid. A lock left by a dead process on this
        host is taken over; any other one stops this run with a clear message.
        On object stores there is no atomic create: the check is best effort.
        """
        path = self.path(LOCK)
        mine = {
            "run_id": run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.time(),
        }
        if self._exists(LOCK):
            holder = self._read_lock()
            if not _stale(holder):
                raise SentimentError(
                    f"{self.location} is being written by run {holder.get('run_id')} "
                    f"(host {holder.get('host')}, pid {holder.get('pid')}); if no such run is "
                    f"active, delete {path}"
                )
            log.warning("taking over the lock of dead run %s", holder.get("run_id"))
            self.fs.delete_file(path)
        self.fs.create_dir(self.root, recursive=True)
        if isinstance(self.fs, pafs.LocalFileSystem):
            try:  # O_EXCL: of two runs starting together, exactly one gets the lock
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise SentimentError(f"{self.location} is being written by another run") from None
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
        else:
            with self.fs.open_output_stream(path) as f:
                f.write(json.dumps(mine).encode())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                self.fs.delete_file(path)

    def _read_lock(self) -> dict[str, Any]:
        try:
            with self.fs.open_input_stream(self.path(LOCK)) as f:
                return json.loads(f.read().decode() or "{}")
        except (OSError, ValueError):
            return {}

    def prepare(self) -> None:
        """Create the directory if needed, repair a cut-off commit, clear old staging runs."""
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.File:
            raise SentimentError(f"{self.location}: output exists and is a file, not a directory")
        self.fs.create_dir(self.root, recursive=True)
        manifest = self.committed_manifest()
        listed = {f["name"] for f in manifest["files"]} if manifest else set()
        for name in self.data_files():
            if name not in listed:
                log.warning("removing %s: not in the committed manifest (a cut-off commit)", name)
                self.fs.delete_file(self.path(name))
        if manifest and not self._exists(SUCCESS):
            self._write(SUCCESS, manifest["run_id"] + "\n")  # the manifest's files are complete
        if self._exists(STAGING):
            self.fs.delete_dir(self.path(STAGING))

    def data_files(self) -> list[str]:
        """Names of the committed-looking Parquet files at the top of the directory."""
        selector = pafs.FileSelector(self.root, allow_not_found=True, recursive=False)
        return sorted(
            info.base_name
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
        )

    def commit(self, run_id: str, staged: list[str], manifest: dict[str, Any]) -> None:
        """Make a staged run the committed output. `staged`: file paths under staging(run_id).

        `manifest["files"]` must list every data file of the new output: the
        staged ones under their final names and any earlier ones kept (incremental).
        """
        for i, src in enumerate(staged):
            self.fs.move(src, self.path(staged_name(run_id, i)))
        if self._exists(SUCCESS):
            self.fs.delete_file(self.path(SUCCESS))
        self._write(MANIFEST, json.dumps(manifest, indent=2) + "\n")
        keep = {f["name"] for f in manifest["files"]}
        for name in self.data_files():
            if name not in keep:
                self.fs.delete_file(self.path(name))
        self._write(SUCCESS, run_id + "\n")
        self.discard(run_id)
        log.info("committed run %s to %s", run_id, self.location)

    def discard(self, run_id: str) -> None:
        """Remove a run's staging area (after a commit, or after a failure)."""
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_dir(self.staging(run_id))
        selector = pafs.FileSelector(self.path(STAGING), allow_not_found=True)
        if self._exists(STAGING) and not self.fs.get_file_info(selector):
            self.fs.delete_dir(self.path(STAGING))

    def _exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def _write(self, name: str, text: str) -> None:
        # Write aside and rename: on a local disk readers see the old file or the new one.
        tmp = self.path(f"_tmp-{name.lstrip('_')}")
        with self.fs.open_output_stream(tmp) as f:
            f.write(text.encode("utf-8"))
        self.fs.move(tmp, self.path(name))


def _stale(holder: dict[str, Any]) -> bool:
    """A lock whose process is gone: same host and no such pid (or an unreadable lock)."""
    if not holder:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def staged_name(run_id: str, index: int) -> str:
    return f"part-{run_id}-{index:05d}.parquet"
