"""Fetch a dataset archive once into the local cache (`sentiment-jobs prepare --download`).

HTTPS only (plain HTTP only to this machine, for tests), a cap on the size, a progress
callback instead of printing, and an all-or-nothing cache: the archive is streamed to a
hidden temporary file and renamed into `<home>/cache/downloads/` only once the caller has
read and checked it. A broken-off or refused download leaves nothing behind, so the next
run starts over cleanly.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from sentiment.config import SentimentError, local_home
from sentiment.readers import one_line

__all__ = [
    "DATASETS",
    "MAX_DOWNLOAD_BYTES",
    "Progress",
    "cache_dir",
    "cached_archive",
    "check_url",
    "dataset_url",
    "fetched",
    "is_url",
]

log = logging.getLogger(__name__)

# name -> (official URL, environment variable that replaces it: a mirror, or a test server)
DATASETS = {
    "amazon-multi-domain": (
        "https://www.cs.jhu.edu/~mdredze/datasets/sentiment/domain_sentiment_data.tar.gz",
        "SENTIMENT_JOBS_AMAZON_URL",
    ),
}
MAX_DOWNLOAD_BYTES = 256 * 1024**2  # the Multi-Domain archive is about 30 MB
TIMEOUT_S = 30.0  # per connect and per read: a silent server fails the run, never hangs it
_CHUNK = 1 << 16
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

Progress = Callable[[int, "int | None"], None]  # (bytes so far, total bytes or None)


def dataset_url(name: str) -> str:
    """A named dataset's archive URL: its environment variable's value if set, else the official."""
    if name not in DATASETS:
        raise SentimentError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    url, variable = DATASETS[name]
    return os.environ.get(variable) or url


def is_url(source: str | Path) -> bool:
    """Whether a source names an http(s) URL rather than a local path."""
    return isinstance(source, str) and source.lower().startswith(("https://", "http://"))


def check_url(url: str) -> None:
    """Refuse anything but https, and plain http to anything but this machine."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return
    raise SentimentError(f"{url}: refused: downloads use https (plain http only to localhost)")


def cache_dir() -> Path:
    """`<home>/cache/downloads`; with a home that is a URI (s3://), under ~/.sentiment-jobs."""
    return local_home() / "cache" / "downloads"


def cached_archive(url: str) -> Path:
    """Where the archive of `url` is cached: its file name behind a digest of the whole URL."""
    name = Path(urllib.parse.urlsplit(url).path).name or "download"
    return cache_dir() / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


@contextlib.contextmanager
def fetched(
    url: str,
    *,
    progress: Progress | None = None,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    timeout: float = TIMEOUT_S,
) -> Iterator[Path]:
    """The archive at `url` as a local file, from the cache or downloaded now.

    A new download is committed to the cache (renamed into place) only when the `with`
    block ends without an error, so a caller that finds the archive wrong keeps nothing.
    A cached archive that the caller refuses is removed too: the next run fetches it anew.
    """
    check_url(url)
    target = cached_archive(url)
    if target.is_file():
        log.info("archive from the cache: %s", target)
        try:
            yield target
        except SentimentError:
            target.unlink(missing_ok=True)
            raise
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        _download(url, part, progress, max_bytes, timeout)
        yield part
        os.replace(part, target)
        log.info("archive cached: %s", target)
    finally:
        part.unlink(missing_ok=True)


class _HttpsRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URLs `check_url` accepts (never from https down to http)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(
    url: str, dest: Path, progress: Progress | None, max_bytes: int, timeout: float
) -> None:
    opener = urllib.request.build_opener(_HttpsRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": "sentiment-jobs"})
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise SentimentError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        name = Path(urllib.parse.urlsplit(url).path).name or "the archive"
        raise SentimentError(
            f"cannot reach {url}: {one_line(reason)}; download it on a machine with internet "
            f"and run `sentiment-jobs prepare path/to/{name} -o DATASET`"
        ) from None
    length = response.headers.get("Content-Length", "")
    total = int(length) if length.isdigit() else None
    if total is not None and total > max_bytes:
        response.close()
        raise SentimentError(
            f"{url}: refused: {total:,} bytes, more than the {max_bytes:,} allowed"
        )
    done = 0
    try:
        with response, dest.open("wb") as out:
            while chunk := response.read(_CHUNK):
                done += len(chunk)
                if done > max_bytes:
                    raise SentimentError(
                        f"{url}: refused: more than the {max_bytes:,} bytes allowed"
                    )
                out.write(chunk)
                if progress:
                    progress(done, total)
    except (OSError, http.client.HTTPException) as exc:
        raise SentimentError(
            f"{url}: the download broke off after {done:,} bytes ({one_line(exc)}); "
            "run again to start over"
        ) from None
    # http.client ends a short body quietly instead of raising: compare with the announced size.
    if total is not None and done != total:
        raise SentimentError(
            f"{url}: the download ended after {done:,} of {total:,} bytes; run again to start over"
        )
