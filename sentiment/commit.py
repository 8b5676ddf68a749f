"""Committing a scoring run's output so that scheduled re-runs are safe.

Layout of an output directory (a local path or a URI pyarrow understands):

    _SUCCESS              written last; names the run that committed
    _manifest.json        the committed state: which data files, which inputs, counts
    part-<run>-NNNNN.parquet
    _staging/<run>/       a run in progress (readers skip `_`-prefixed paths)
    _LOCK                 while a run is writing: its id, host and pid

A run writes only under `_staging/<run>/` until it commits. Commit = delete
`_SUCCESS`, move the new files in, replace `_manifest.json` (a rename), delete the
data files the new manifest no longer lists, write `_SUCCESS`. A run that fails
before committing leaves the previous output, manifest and `_SUCCESS` untouched. A
commit cut off half-way is repaired by the next run: data files the manifest does
not list are debris and are deleted, so the manifest is always the truth.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

from sentiment.config import SentimentError
from sentiment.storage import filesystem, s3_client, storage_error

log = logging.getLogger(__name__)
SUCCESS, MANIFEST, STAGING, LOCK = "_SUCCESS", "_manifest.json", "_staging", "_LOCK"
LOCK_GRACE_S = 10.0  # an unreadable lock younger than this may be mid-write: it is held
LOCK_ATTEMPTS = 20  # each failed attempt means the lock changed hands meanwhile


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
        host is taken over; any other one stops this run with a clear message. Taking
        and taking over are atomic, so that of any number of runs starting together
        exactly one proceeds, on a local (or NFS) disk (see `_acquire_local`) and on S3
        and stores that answer S3's conditional PUT (`If-None-Match: *`, `If-Match`):
        AWS S3, MinIO, Ceph RGW (see `_acquire_s3`). On other object stores (gs://, ...)
        pyarrow offers no conditional create: the check there is best effort.
        """
        mine = {
            "run_id": run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.time(),
        }
        body = json.dumps(mine).encode()
        local = isinstance(self.fs, pafs.LocalFileSystem)
        s3 = type(self.fs).__name__ == "S3FileSystem"
        try:
            if not s3:  # S3 has no directories: a marker object would only be debris
                self.fs.create_dir(self.root, recursive=True)
            if local:
                self._acquire_local(body)
            elif s3:
                self._acquire_s3(body)
            else:
                self._acquire_remote(body)
        except OSError as exc:  # e.g. no permission to write the output
            raise storage_error(exc) or SentimentError(
                f"{self.path(LOCK)}: cannot take the lock ({exc})"
            ) from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                if s3:
                    self._release_s3(body)
                elif not local or _read_bytes(self.path(LOCK)) == body:  # never someone else's
                    self.fs.delete_file(self.path(LOCK))

    def _acquire_local(self, body: bytes) -> None:
        """Take `_LOCK` on a local (or NFS) disk, or raise SentimentError naming its holder.

        The lock is written whole to a private file and hard-linked into place, so
        `_LOCK` never exists empty or half-written; `link` fails if it exists, so
        one of several runs gets it. A stale lock is replaced by the one run that
        creates its takeover marker (named after the stale lock's exact bytes,
        inode and time), after checking under the marker that it is still that lock.
        """
        path = self.path(LOCK)
        tmp = f"{path}.{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(body)
        try:
            for _ in range(LOCK_ATTEMPTS):
                if _create_exclusive(tmp, path, body):
                    return
                try:
                    seen = _lock_state(path)
                except FileNotFoundError:
                    continue  # released between our attempt and the read: try again
                holder = _parse_lock(seen[0])
                if not _stale(holder, seen):
                    raise self._held(holder)
                log.warning("taking over the lock of dead run %s", holder.get("run_id"))
                if self._take_over(path, tmp, seen):
                    return
            raise SentimentError(f"{path}: the lock keeps changing hands; try again")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _take_over(self, path: str, tmp: str, seen: tuple[bytes, int, int]) -> bool:
        """Replace the stale lock `seen` by ours; False if it is no longer that lock."""
        digest = hashlib.sha256(repr(seen).encode()).hexdigest()[:16]
        marker = f"{path}.takeover-{digest}"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            try:
                age = time.time() - os.stat(marker).st_mtime
            except FileNotFoundError:
                age = 0.0
            if age > LOCK_GRACE_S:  # its creator died in the middle of a takeover
                raise SentimentError(
                    f"{path}: an earlier takeover of a stale lock did not finish; if no run "
                    f"is active, delete {path} and {marker}"
                ) from None
            raise SentimentError(
                f"{self.location} is being written by another run (it is taking over the "
                f"stale lock {path})"
            ) from None
        try:
            try:
                now = _lock_state(path)
            except FileNotFoundError:
                return False
            # Only the marker's holder replaces this stale lock and its dead owner cannot
            # release it, so what is read here is what the rename replaces.
            if now != seen or not _stale(_parse_lock(now[0]), now):
                return False
            os.replace(tmp, path)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)

    def _s3_lock(self) -> tuple[Any, str, str, str]:
        """(boto3 client, bucket, key, URI) of `_LOCK` on S3."""
        bucket, _, prefix = self.root.partition("/")
        key = f"{prefix.rstrip('/')}/{LOCK}" if prefix else LOCK
        return s3_client(self.fs), bucket, key, f"s3://{bucket}/{key}"

    def _acquire_s3(self, body: bytes) -> None:
        """Take `_LOCK` on S3 with a conditional create, or raise SentimentError naming
        its holder.

        `PUT If-None-Match: *` creates the lock only where there is none: of runs starting
        together exactly one gets 200, the others 412 and then read who holds it. A stale
        lock (a dead process on this host) is replaced by `PUT If-Match: <its ETag>`,
        which only one of several runs taking it over wins. The lock is one PUT: never
        seen half-written.
        """
        import botocore.exceptions as bce

        client, bucket, key, uri = self._s3_lock()
        try:
            for _ in range(LOCK_ATTEMPTS):
                if _put_if(client, bucket, key, body, IfNoneMatch="*"):
                    return
                try:
                    got = client.get_object(Bucket=bucket, Key=key)
                    raw = got["Body"].read(65536)
                except bce.ClientError as exc:
                    if _s3_code(exc) in ("NoSuchKey", "404"):
                        continue  # released between our attempt and the read: try again
                    raise
                mtime_ns = int(got["LastModified"].timestamp() * 1e9)
                holder = _parse_lock(raw)
                if not _stale(holder, (raw, 0, mtime_ns)):
                    raise self._held(holder)
                log.warning("taking over the lock of dead run %s", holder.get("run_id"))
                if _put_if(client, bucket, key, body, IfMatch=got["ETag"]):
                    return
            raise SentimentError(f"{uri}: the lock keeps changing hands; try again")
        except (bce.BotoCoreError, bce.ClientError) as exc:
            raise storage_error(exc, uri) or SentimentError(
                f"{uri}: cannot take the lock ({exc})"
            ) from None

    def _release_s3(self, body: bytes) -> None:
        """Delete `_LOCK` if it is still ours (a run that took over a lock it thought
        stale must keep it): the delete is conditional on the ETag read."""
        import botocore.exceptions as bce

        client, bucket, key, _ = self._s3_lock()
        try:
            got = client.get_object(Bucket=bucket, Key=key)
            if got["Body"].read(65536) != body:
                return
            try:
                client.delete_object(Bucket=bucket, Key=key, IfMatch=got["ETag"])
            except bce.ClientError as exc:
                if _s3_code(exc) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                    return  # someone else's now, or gone
                # a store without conditional deletes: it was ours a moment ago
                client.delete_object(Bucket=bucket, Key=key)
        except (bce.BotoCoreError, bce.ClientError) as exc:
            log.warning("could not release the lock %s: %s", key, exc)

    def _acquire_remote(self, body: bytes) -> None:
        """Best effort, for object stores without a conditional create (gs://, ...):
        two runs starting at the same moment may both see no lock and both proceed."""
        path = self.path(LOCK)
        info = self.fs.get_file_info(path)
        if info.type != pafs.FileType.NotFound:
            try:
                with self.fs.open_input_stream(path) as f:
                    raw = f.read(65536)
            except OSError:
                raw = b""
            holder = _parse_lock(raw)
            if not _stale(holder, (raw, 0, info.mtime_ns or time.time_ns())):
                raise self._held(holder)
            log.warning("taking over the lock of dead run %s", holder.get("run_id"))
            self.fs.delete_file(path)
        with self.fs.open_output_stream(path) as f:
            f.write(body)

    def _held(self, holder: dict[str, Any]) -> SentimentError:
        return SentimentError(
            f"{self.location} is being written by run {holder.get('run_id')} "
            f"(host {holder.get('host')}, pid {holder.get('pid')}); if no such run is "
            f"active, delete {self.path(LOCK)}"
        )

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
        # _SUCCESS goes first: a reader trusting it must never see files the manifest
        # does not list (a run killed between two moves leaves them until the next run).
        if self._exists(SUCCESS):
            self.fs.delete_file(self.path(SUCCESS))
        for i, src in enumerate(staged):
            self._move(src, self.path(staged_name(run_id, i)))
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

    def _move(self, src: str, dst: str) -> None:
        self.fs.move(src, dst)

    def _exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def _write(self, name: str, text: str) -> None:
        # Write aside and rename: on a local disk readers see the old file or the new one.
        tmp = self.path(f"_tmp-{name.lstrip('_')}")
        with self.fs.open_output_stream(tmp) as f:
            f.write(text.encode("utf-8"))
        self.fs.move(tmp, self.path(name))


def _stale(holder: dict[str, Any], seen: tuple[bytes, int, int]) -> bool:
    """A lock whose process is gone: same host and no such pid. One that cannot be read
    is stale only when older than LOCK_GRACE_S (its writer may be writing it now)."""
    if not {"host", "pid"} <= holder.keys():
        return time.time() - seen[2] / 1e9 > LOCK_GRACE_S
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError, OverflowError):
        return False
    return False


def _put_if(client: Any, bucket: str, key: str, body: bytes, **condition: str) -> bool:
    """PUT `body` under a condition (`IfNoneMatch="*"`, `IfMatch=etag`); False if the
    condition failed (412), or another conditional write to the key raced it (409)."""
    import botocore.exceptions as bce

    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, **condition)
    except bce.ClientError as exc:
        code = _s3_code(exc)
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            return False
        if code in ("NoSuchKey", "404") and "IfMatch" in condition:
            return False  # the stale lock went meanwhile
        raise
    return True


def _s3_code(exc: Any) -> str:
    """S3's error code of a boto3 ClientError (or the HTTP status where it gives none)."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    return str(error.get("Code") or status)


def _create_exclusive(tmp: str, path: str, body: bytes) -> bool:
    """Put the complete lock file `tmp` at `path` unless something is there already."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem: an exclusive create instead
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return True


def _lock_state(path: str) -> tuple[bytes, int, int]:
    """(bytes, inode, mtime in ns) of a lock file: what identifies one lock."""
    with open(path, "rb") as f:
        raw = f.read(65536)
        st = os.fstat(f.fileno())
    return raw, st.st_ino, st.st_mtime_ns


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(65536)


def _parse_lock(raw: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(raw.decode())
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def staged_name(run_id: str, index: int) -> str:
    return f"part-{run_id}-{index:05d}.parquet"
