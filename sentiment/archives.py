"""Unpack a dataset archive safely, and check that it is the Multi-Domain Sentiment Dataset.

`safe_extract` unpacks only regular files and folders, inside the target folder, within
caps on the total size and the number of entries; everything else refuses the whole
archive with one line. `read_amazon_archive` unpacks only the `.review` files, each within
a cap for its name checked at its header, then checks the contents (the four categories,
1,000 positive and 1,000 negative reviews each) and reads them with the Amazon reader, so
an archive is prepared exactly as the unpacked folder would be.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pyarrow as pa

from sentiment.config import SentimentError
from sentiment.readers import AMAZON_LABELS, amazon_reviews, amazon_text, one_line, read_amazon

__all__ = [
    "AMAZON_CATEGORIES",
    "MAX_MEMBERS",
    "MAX_UNPACKED_BYTES",
    "UNLABELED_SCHEMA",
    "AmazonArchive",
    "is_tar_archive",
    "read_amazon_archive",
    "safe_extract",
]

MAX_UNPACKED_BYTES = 1024**3  # the Multi-Domain archive unpacks to a few hundred MB at most
MAX_MEMBERS = 10_000  # it holds a dozen files
# The review files are read into memory (their reviews, then an Arrow copy), so they are
# capped by name, at each one's header, before anything of them is unpacked. A labelled file
# of 1,000 reviews is about 1.5 MB; all of them, unlabeled ones included, about three times
# the 30 MB download. At these caps `prepare` peaks at about 800 MB.
MAX_LABELLED_BYTES = 16 * 1024**2  # a positive.review or negative.review (any but unlabeled)
MAX_REVIEW_BYTES = 256 * 1024**2  # all .review files together
# The archive's folders → the category names of the well-formed copy, so that review ids,
# group ids and per-category figures are the same whichever of the two was prepared.
AMAZON_CATEGORIES = {
    "books": "books",
    "dvd": "dvd",
    "electronics": "electronics",
    "kitchen_&_housewares": "kitchen",
}
REVIEWS_PER_FILE = 1_000
UNLABELED_SCHEMA = pa.schema(
    [("review_id", pa.string()), ("text", pa.string()), ("category", pa.string())]
)
_CHUNK = 1 << 20
_BATCH_ROWS = 10_000  # unlabeled reviews turned into Arrow at a time
# Headers and padding around the members: a bound for the stream, generous for real archives.
_OVERHEAD_PER_MEMBER = 4 * 512
# Python's own checks as well as ours where it has them (3.10.12+, 3.11.4+).
_DATA_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERROR = getattr(tarfile, "FilterError", ())


class _TooLarge(Exception):
    pass


class _Capped:
    """A reader that refuses to hand out more than `limit` bytes in all (pax headers and
    end-of-stream checks included, which tarfile reads outside the members' declared sizes)."""

    def __init__(self, f: BinaryIO, limit: int):
        self.f, self.limit, self.count = f, limit, 0

    def read(self, size: int = -1) -> bytes:
        room = self.limit - self.count + 1
        data = self.f.read(room if size is None or size < 0 else min(size, room))
        self.count += len(data)
        if self.count > self.limit:
            raise _TooLarge
        return data


def is_tar_archive(path: Path) -> bool:
    """Whether `path` is a tar archive (gzip'd or not); a DLStudio pickle is not."""
    try:
        return path.is_file() and tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error):
        return False


def safe_extract(
    archive: Path,
    target: Path,
    *,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
    select: Callable[[tarfile.TarInfo], bool] | None = None,
) -> None:
    """Unpack the tar (optionally gzip'd) `archive` into the existing folder `target`.

    Refused, before anything of the entry is written: links, devices and pipes, absolute
    names, names with `..` or that resolve outside `target`, more than `max_members`
    entries or `max_bytes` in all. `select`, given each file that passes, may refuse it
    (raise) or leave it out (False). The gzip stream is read to its end, so a truncated
    or corrupt archive is refused even where the tar part looks whole.
    """
    target = target.resolve()
    limit = max_bytes + max_members * _OVERHEAD_PER_MEMBER + _CHUNK
    try:
        with archive.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = _Capped(gzip.GzipFile(fileobj=raw) if gzipped else raw, limit)
            # "r|": one forward pass, so each entry is checked before its data is read.
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                total = 0
                for count, member in enumerate(tar, start=1):
                    total += member.size
                    if count > max_members:
                        raise _refused(archive, f"more than {max_members:,} entries (a bomb?)")
                    if total > max_bytes:
                        raise _refused(
                            archive, f"unpacks to more than {max_bytes:,} bytes (a bomb?)"
                        )
                    _check_member(archive, member, target)
                    if select is None or member.isdir() or select(member):
                        tar.extract(member, target, **_DATA_FILTER)
            while stream.read(_CHUNK):  # the rest: gzip checks its length and CRC at the end
                pass
    except _TooLarge:
        raise _refused(archive, f"unpacks to more than {limit:,} bytes (a bomb?)") from None
    except _FILTER_ERROR as exc:  # Python's own checks, should ours ever miss a case
        raise _refused(archive, one_line(exc)) from None
    except gzip.BadGzipFile as exc:
        raise SentimentError(f"{archive}: not a valid gzip file ({one_line(exc)})") from None
    except (EOFError, zlib.error, tarfile.TarError) as exc:
        raise SentimentError(
            f"{archive}: truncated, corrupt or not a tar archive ({one_line(exc)}); "
            "download it again"
        ) from None
    except OSError as exc:
        raise SentimentError(f"{archive}: cannot unpack: {one_line(exc)}") from None


def _refused(archive: Path, reason: str) -> SentimentError:
    return SentimentError(f"{archive}: refused: {reason}")


def _check_member(archive: Path, member: tarfile.TarInfo, target: Path) -> None:
    name = member.name
    kind = None
    if member.issym():
        kind = f"a symbolic link (to {member.linkname!r})"
    elif member.islnk():
        kind = f"a hard link (to {member.linkname!r})"
    elif member.isdev():
        kind = "a device or pipe"
    elif member.issparse() or not (member.isreg() or member.isdir()):
        kind = "not a plain file or folder"
    if kind:
        raise _refused(
            archive, f"the entry {name!r} is {kind}; only files and folders are unpacked"
        )
    path = PurePosixPath(name)
    if not name or path.is_absolute() or name.startswith("\\") or ".." in path.parts:
        raise _refused(archive, f"the entry {name!r} would leave the folder it is unpacked into")
    if not (target / name).resolve().is_relative_to(target):
        raise _refused(archive, f"the entry {name!r} would leave the folder it is unpacked into")


@dataclass(frozen=True)
class AmazonArchive:
    """The Multi-Domain archive's reviews: labelled (canonical split) and unlabeled."""

    labelled: pa.Table  # readers.SCHEMA
    unlabeled: pa.Table  # UNLABELED_SCHEMA; empty when the archive has no unlabeled.review
    unlabeled_left_out: int  # unlabeled reviews with no text, or the text of a labelled one


def read_amazon_archive(
    archive: Path,
    workdir: Path,
    *,
    test_from: int = 800,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> AmazonArchive:
    """Unpack `archive` into a temporary folder under `workdir`, check it and read it.

    The archive must hold `<category>/{positive,negative}.review` for exactly the four
    categories of `AMAZON_CATEGORIES` (under any one folder, `sorted_data_acl/` in the
    original), 1,000 reviews in each file; `unlabeled.review` files are read when present.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=workdir))
    try:
        select = _ReviewFiles(archive)
        safe_extract(archive, tmp, max_bytes=max_bytes, max_members=max_members, select=select)
        root = _dataset_root(archive, tmp)
        labelled = _read_labelled(archive, root, test_from)
        unlabeled, left_out = _read_unlabeled(archive, root, set(labelled["text"].to_pylist()))
        return AmazonArchive(labelled, unlabeled, left_out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _ReviewFiles:
    """`safe_extract`'s choice for the Multi-Domain archive: its `.review` files, within
    MAX_LABELLED_BYTES each (unlabeled.review excepted) and MAX_REVIEW_BYTES in all; nothing
    else of it is ever read, so nothing else is unpacked."""

    def __init__(self, archive: Path):
        self.archive, self.total = archive, 0

    def __call__(self, member: tarfile.TarInfo) -> bool:
        name = PurePosixPath(member.name).name
        if not name.endswith(".review"):
            return False
        if name != "unlabeled.review" and member.size > MAX_LABELLED_BYTES:
            raise _refused(
                self.archive,
                f"the entry {member.name!r} is {member.size:,} bytes; the dataset's labelled "
                f"review files hold 1,000 reviews, under {MAX_LABELLED_BYTES:,} bytes",
            )
        self.total += member.size
        if self.total > MAX_REVIEW_BYTES:
            raise _refused(
                self.archive,
                f"its .review files come to more than {MAX_REVIEW_BYTES:,} bytes (at "
                f"{member.name!r}); the dataset's are far smaller",
            )
        return True


_EXPECTED = (
    f"expected the folders {', '.join(AMAZON_CATEGORIES)}, each with {REVIEWS_PER_FILE:,} "
    f"positive and {REVIEWS_PER_FILE:,} negative reviews"
)


def _not_the_dataset(archive: Path, found: str) -> SentimentError:
    return SentimentError(
        f"{archive}: not the Multi-Domain Sentiment Dataset: {_EXPECTED}; found {found}"
    )


def _dataset_root(archive: Path, tmp: Path) -> Path:
    """The one folder whose subfolders hold the `.review` files."""
    roots = {f.parent.parent for f in tmp.rglob("*.review") if f.is_file()}
    if not roots:
        raise _not_the_dataset(archive, "no .review files")
    if len(roots) > 1:
        where = ", ".join(sorted(str(r.relative_to(tmp)) or "." for r in roots))
        raise _not_the_dataset(archive, f".review files under several folders ({where})")
    return roots.pop()


def _read_labelled(archive: Path, root: Path, test_from: int) -> pa.Table:
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.review")))
    counts, tables = {}, []
    for folder in folders:
        category = AMAZON_CATEGORIES.get(folder, folder)
        if category != folder and not (root / category).exists():
            (root / folder).rename(root / category)  # ids and groups as in the well-formed copy
        counts[folder] = []
        for label in AMAZON_LABELS:
            path = root / category / f"{label}.review"
            table = _read_member(archive, root, path, test_from) if path.is_file() else None
            counts[folder].append(table.num_rows if table is not None else 0)
            if table is not None:
                tables.append(table)
    expected = {folder: [REVIEWS_PER_FILE] * len(AMAZON_LABELS) for folder in AMAZON_CATEGORIES}
    if counts != expected:
        found = ", ".join(f"{f} {p:,}/{n:,}" for f, (p, n) in counts.items())
        raise _not_the_dataset(archive, f"{found} (positive/negative)")
    return pa.concat_tables(tables)


def _read_member(archive: Path, root: Path, path: Path, test_from: int) -> pa.Table | None:
    """A labelled file's reviews; None for one with no `<review>` (counted as 0)."""
    try:
        return read_amazon(path, test_from)
    except SentimentError as exc:
        if "no <review> elements" in str(exc):
            return None
        raise _in_archive(exc, archive, root, path) from None


def _in_archive(exc: SentimentError, archive: Path, root: Path, path: Path) -> SentimentError:
    """The reader names the temporary copy; name the file inside the archive instead."""
    member = path.relative_to(root)
    return SentimentError(str(exc).replace(str(path), f"{archive}: {member}"))


def _read_unlabeled(archive: Path, root: Path, labelled: set[str]) -> tuple[pa.Table, int]:
    batches, left_out = [], 0
    for category in sorted(set(AMAZON_CATEGORIES.values())):
        path = root / category / "unlabeled.review"
        if not path.is_file():
            continue
        rows: list[tuple[str, str]] = []
        try:
            for i, fields in enumerate(amazon_reviews(path)):
                text = amazon_text(fields)
                # A labelled review's text here would let word2vec see test reviews.
                if not text or text in labelled:
                    left_out += 1
                    continue
                rows.append((f"amazon/{category}/unlabeled/{i}", text))
                if len(rows) == _BATCH_ROWS:  # held as Arrow, not as Python strings and Arrow
                    batches.append(_unlabeled_batch(rows, category))
                    rows = []
        except SentimentError as exc:
            raise _in_archive(exc, archive, root, path) from None
        if rows:
            batches.append(_unlabeled_batch(rows, category))
    return pa.Table.from_batches(batches, schema=UNLABELED_SCHEMA), left_out


def _unlabeled_batch(rows: list[tuple[str, str]], category: str) -> pa.RecordBatch:
    ids, texts = zip(*rows, strict=True)
    columns = [pa.array(c, pa.string()) for c in (ids, texts, [category] * len(rows))]
    return pa.record_batch(columns, schema=UNLABELED_SCHEMA)
