"""Where files live: local paths and object stores (pyarrow filesystems), and their errors.

`filesystem` opens a path or URI (s3://, gs://, file://) as a pyarrow filesystem; on S3 it
checks the bucket once, so that a missing bucket or an unreachable endpoint is one error
naming the URI. `storage_error` turns what an object store answers (through pyarrow or
boto3) into one line: the URI and the reason (access denied, no such bucket, ...). Light
on purpose (no torch): the CLI's error boundary imports it for every command.
"""

from __future__ import annotations

import os
import re

from sentiment.config import SentimentError


def filesystem(uri_or_path: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI.

    pyarrow's S3 filesystem takes its endpoint (AWS_ENDPOINT_URL), region and credentials
    from the environment as the AWS tools do. The first use of an S3 bucket checks that it
    exists and answers, so that a missing bucket or an unreachable endpoint is one error
    naming the URI, not a "no such file" further on.
    """
    import pyarrow.fs as pafs

    if "://" in uri_or_path:
        try:
            fs, path = pafs.FileSystem.from_uri(uri_or_path)
        except Exception as exc:
            error = storage_error(exc, uri_or_path) if isinstance(exc, OSError) else None
            raise error or SentimentError(
                f"{uri_or_path}: cannot open storage ({_one_line(exc)})"
            ) from None
        if type(fs).__name__ == "S3FileSystem":
            _check_bucket(fs, path, uri_or_path)
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri_or_path))


_BUCKETS_SEEN: set[tuple[str, str]] = set()  # (endpoint, bucket) found to exist


def _check_bucket(fs, path: str, uri: str) -> None:
    """Raise SentimentError naming `uri` if its bucket does not exist or cannot be reached.

    A refused look at the bucket itself (HeadBucket wants s3:ListBucket, which a role
    allowed only some objects may lack) is left to the operations that follow: they
    either work or fail with their own access-denied error.
    """
    import pyarrow.fs as pafs

    bucket = path.split("/", 1)[0]
    seen = (_endpoint(fs), bucket)
    if not bucket or seen in _BUCKETS_SEEN:
        return
    try:
        info = fs.get_file_info(bucket)
    except OSError as exc:
        if error_code(exc) in (None, "ACCESS_DENIED"):
            return
        raise storage_error(exc, uri) from None
    if info.type == pafs.FileType.NotFound:
        raise SentimentError(f"{uri}: no such bucket ({bucket})")
    _BUCKETS_SEEN.add(seen)


def _endpoint(fs) -> str:
    """The endpoint an S3 filesystem talks to ("" for AWS's own)."""
    try:  # pyarrow exposes its settings only through pickling
        options = fs.__reduce__()[1][0]
        return f"{options.get('scheme', '')}://{options.get('endpoint_override', '')}"
    except (AttributeError, IndexError, KeyError, TypeError):
        return ""


def s3_client(fs):
    """A boto3 S3 client for what pyarrow's S3 filesystem `fs` talks to: its endpoint
    (AWS_ENDPOINT_URL, or one given in the URI), region and any credentials given in the
    URI; otherwise boto3's own lookup, which reads the same environment and files."""
    import boto3

    options = fs.__reduce__()[1][0]
    endpoint = options.get("endpoint_override") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme') or 'https'}://{endpoint}"
    # A session of its own: boto3's default one keeps the credentials it first found.
    session = boto3.session.Session(
        aws_access_key_id=options.get("access_key") or None,
        aws_secret_access_key=options.get("secret_key") or None,
        aws_session_token=options.get("session_token") or None,
    )
    return session.client("s3", endpoint_url=endpoint, region_name=options.get("region") or None)


# --- object-store errors as one line ------------------------------------------------------

CREDENTIALS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
# pyarrow's names for AWS errors (and S3's own codes, as boto3 reports them) → the reason
_REASONS = {
    "ACCESS_DENIED": f"access denied (check the AWS credentials, {CREDENTIALS}, "
    "and that they may use this bucket)",
    "INVALID_ACCESS_KEY_ID": f"the AWS access key is not known there (check {CREDENTIALS})",
    "SIGNATURE_DOES_NOT_MATCH": "the AWS secret key does not match the access key (check "
    "AWS_SECRET_ACCESS_KEY)",
    "EXPIRED_TOKEN": "the AWS credentials have expired (renew the session token)",
    "NO_SUCH_BUCKET": "no such bucket",
    "NO_SUCH_KEY": "no such file",
    "SLOW_DOWN": "the storage service asks to slow down; try again later",
    "SERVICE_UNAVAILABLE": "the storage service is unavailable; try again later",
}
_S3_CODES = {
    "AccessDenied": "ACCESS_DENIED",
    "Forbidden": "ACCESS_DENIED",
    "403": "ACCESS_DENIED",
    "AllAccessDisabled": "ACCESS_DENIED",
    "InvalidAccessKeyId": "INVALID_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "SIGNATURE_DOES_NOT_MATCH",
    "ExpiredToken": "EXPIRED_TOKEN",
    "TokenRefreshRequired": "EXPIRED_TOKEN",
    "NoSuchBucket": "NO_SUCH_BUCKET",
    "NoSuchKey": "NO_SUCH_KEY",
    "404": "NO_SUCH_KEY",
    "SlowDown": "SLOW_DOWN",
    "ServiceUnavailable": "SERVICE_UNAVAILABLE",
}
_AWS_ERROR = re.compile(r"AWS Error (\w+)(?: \(HTTP status (\d+)\))? during (\w+) operation")
_KEY_IN_BUCKET = re.compile(r"key '([^']*)' in bucket '([^']*)'")
_BUCKET = re.compile(r"[Bb]ucket '([^']*)'")
_CONNECT = re.compile(r"(?:Failed to connect to|Could not resolve host:?) ([^\s:]+(?::\d+)?)")


def storage_error(exc: BaseException, uri: str | None = None) -> SentimentError | None:
    """One line for an error of an object store (pyarrow's S3 filesystem, or boto3):
    `<uri>: <reason>`, naming `uri`, else the bucket and key the error names. None when
    `exc` is not such an error. The CLI's error boundary turns them into `error:` lines
    (Ray's wrapped errors too: their text holds pyarrow's); code that wraps an OSError in
    a SentimentError of its own can use it for the reason."""
    text = str(exc)
    code = error_code(exc)
    if code is None:
        return None
    where = uri  # the caller's URI first: the one the user gave
    if where is None and (found := _KEY_IN_BUCKET.search(text)):
        where = f"s3://{found.group(2)}/{found.group(1).rstrip('/')}".rstrip("/")
    elif where is None and (found := _BUCKET.search(text)):
        where = f"s3://{found.group(1)}"
    if code == "NETWORK_CONNECTION":
        endpoint = _CONNECT.search(text)
        name = endpoint.group(1) if endpoint else os.environ.get("AWS_ENDPOINT_URL", "")
        reason = (
            f"cannot connect to the storage endpoint{' ' + name if name else ''} "
            "(check AWS_ENDPOINT_URL and the network)"
        )
    elif code == "NO_CREDENTIALS":
        reason = f"no AWS credentials found (set {CREDENTIALS})"
    else:
        reason = _REASONS.get(code, f"storage error {code}: {_one_line(exc)[:300]}")
    return SentimentError(f"{where}: {reason}" if where else reason)


def error_code(exc: BaseException) -> str | None:
    """pyarrow's name for an object store's error (ACCESS_DENIED, NO_SUCH_BUCKET,
    NETWORK_CONNECTION, ...; boto3's errors mapped to them), or None for other errors."""
    text = str(exc)
    if found := _AWS_ERROR.search(text):
        code, status = found.group(1), found.group(2)
        return _S3_CODES[status] if code == "UNKNOWN" and status in ("403", "404") else code
    if re.search(r"Bucket '[^']*' not found", text):  # pyarrow's create_dir
        return "NO_SUCH_BUCKET"
    return _botocore_code(exc)


def _botocore_code(exc: BaseException) -> str | None:
    """The error's pyarrow-style code, for the boto3 errors this package meets."""
    try:
        import botocore.exceptions as bce
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        code = _S3_CODES.get(str(error.get("Code", ""))) or _S3_CODES.get(status)
        return code or f"S3 {error.get('Code') or status}"
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError)):
        return "NETWORK_CONNECTION"
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return "NO_CREDENTIALS"
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
