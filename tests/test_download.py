"""`prepare --download` and archives: a local HTTP server, the cache, hostile archives.

Every download goes to a server on 127.0.0.1 started here (no network needed). Archives
are built by the tests in the official layout (`sorted_data_acl/<category>/...`, the
authors' non-well-formed form): from generated reviews always, from the real reviews in
../shared when present.
"""

from __future__ import annotations

import gzip
import http.server
import io
import os
import re
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentiment.archives import safe_extract
from sentiment.cli import app
from sentiment.config import SentimentError
from sentiment.datasets import prepare
from sentiment.download import DATASETS, cached_archive
from sentiment.embeddings import read_corpus

from .conftest import free_port

CATEGORIES = ("books", "dvd", "electronics", "kitchen_&_housewares")
ARCHIVE = "/sentiment/domain_sentiment_data.tar.gz"
URL_VARIABLE = DATASETS["amazon-multi-domain"][1]

# --- building archives ------------------------------------------------------------------


def review_file(category: str, label: str, n: int) -> bytes:
    """n reviews in the authors' form: no root element, a raw "&" in the text."""
    word = "great" if label == "positive" else "awful"
    blocks = [
        f"<review>\n<asin>\nB{category[:3]}{i // 3:04d}\n</asin>\n<rating>\n"
        f"{5.0 if label == 'positive' else 1.0}\n</rating>\n<title>\n{word} {i}\n</title>\n"
        f"<review_text>\n{category} item {i} is {word} & {label}\n</review_text>\n</review>\n"
        for i in range(n)
    ]
    return "".join(blocks).encode()


def layout(
    categories: tuple[str, ...] = CATEGORIES, n: int = 1000, unlabeled: bool = True
) -> dict[str, bytes]:
    """Member name → bytes of a Multi-Domain archive of generated reviews."""
    files = {}
    for category in categories:
        for label in ("positive", "negative"):
            files[f"sorted_data_acl/{category}/{label}.review"] = review_file(category, label, n)
        if unlabeled:
            texts = [f"spare words {category} {i} & more" for i in range(5)]
            texts.append("great 0 books item 0 is great & positive")  # a labelled review's text
            files[f"sorted_data_acl/{category}/unlabeled.review"] = "".join(
                f"<review>\n<review_text>\n{t}\n</review_text>\n</review>\n" for t in texts
            ).encode()
    return files


def tar_gz(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    """A gzip'd tar of regular files, then `extra` entries (links, devices) without data."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.size else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


def declared_bomb() -> bytes:
    """A header that declares a 1 TiB member, and nothing after it: refused at the header."""
    info = tarfile.TarInfo("sorted_data_acl/books/positive.review")
    info.size = 1 << 40
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT))


# --- a local HTTP server ------------------------------------------------------------------


@dataclass
class Server:
    """Serves `routes` (path → (bytes, mode)); counts requests per path."""

    url: str
    routes: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            data, mode = state.routes.get(self.path, (b"", "missing"))
            if mode == "missing":
                self.send_error(404, "Not Found")
                return
            if mode.startswith("redirect:"):
                self.send_response(302)
                self.send_header("Location", mode.removeprefix("redirect:"))
                self.end_headers()
                return
            self.send_response(200)
            if mode != "no-length":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            # "short": announce the whole archive, send half of it, close the connection
            self.wfile.write(data[: len(data) // 2] if mode == "short" else data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SENTIMENT_JOBS_HOME", str(home))
    return home


def serve(server: Server, data: bytes, mode: str = "full", path: str = ARCHIVE) -> str:
    server.routes[path] = (data, mode)
    return server.url + path


def run(*args: str):
    return CliRunner().invoke(app, ["prepare", *args])


def entries(root: Path) -> set[str]:
    """Every file, folder and link under root, links not followed."""
    found = set()
    for folder, dirs, files in os.walk(root):
        found.update(os.path.relpath(os.path.join(folder, n), root) for n in dirs + files)
    return found


def split_counts(dataset: Path) -> Counter:
    return Counter(pq.read_table(dataset, columns=["split"])["split"].to_pylist())


# --- downloads that work ------------------------------------------------------------------


def test_download_prepares_the_canonical_split_once(
    tmp_path: Path, home: Path, server: Server, monkeypatch
) -> None:
    url = serve(server, tar_gz(layout()))
    monkeypatch.setenv(URL_VARIABLE, url)
    first = run("--download", "amazon-multi-domain", "-o", str(tmp_path / "ds"))
    assert first.exit_code == 0, first.output
    assert "downloading domain_sentiment_data.tar.gz" in first.stderr  # the progress bar
    assert "train  (all)           6,400     3,200     3,200" in first.stdout
    assert "test   (all)           1,600       800       800" in first.stdout
    assert split_counts(tmp_path / "ds") == {"train": 6400, "test": 1600}
    table = pq.read_table(tmp_path / "ds")
    assert set(table["category"].to_pylist()) == {"books", "dvd", "electronics", "kitchen"}
    assert "amazon/kitchen/positive/0" in table["review_id"].to_pylist()
    assert table["group_id"].to_pylist()[0] == "amazon/books/Bboo0000"
    assert "& positive" in table["text"].to_pylist()[0]  # the raw "&" of the original form
    # the archive is in the cache, whole, and nothing else is
    assert sorted(p.name for p in (home / "cache" / "downloads").iterdir()) == [
        cached_archive(url).name
    ]
    assert cached_archive(url).read_bytes() == server.routes[ARCHIVE][0]
    # unlabeled reviews: a Parquet collection with a text column, test reviews left out
    unlabeled = pq.read_table(tmp_path / "ds.unlabeled")
    assert unlabeled.column_names == ["review_id", "text", "category"]
    assert unlabeled.num_rows == 4 * 5
    assert not set(unlabeled["text"].to_pylist()) & set(table["text"].to_pylist())
    line = f"wrote 20 unlabeled reviews (text for word2vec) to {tmp_path / 'ds.unlabeled'}"
    assert f"{line}; left out 4 empty or also labelled" in first.stdout
    # ... which `train --corpus` reads as word2vec text (the quick start passes it)
    texts, left_out = read_corpus([str(tmp_path / "ds.unlabeled")])
    assert sorted(texts) == sorted(unlabeled["text"].to_pylist()) and left_out == 0

    again = run("--download", "amazon-multi-domain", "-o", str(tmp_path / "ds2"))
    assert again.exit_code == 0, again.output
    assert server.hits[ARCHIVE] == 1  # the second run read the cache
    assert "downloading" not in again.stderr
    assert pq.read_table(tmp_path / "ds2").equals(table)


def test_a_local_archive_and_its_url_give_the_same_dataset(
    tmp_path: Path, home: Path, server: Server
) -> None:
    data = tar_gz(layout(unlabeled=False))
    (tmp_path / "domain_sentiment_data.tar.gz").write_bytes(data)
    local = run(str(tmp_path / "domain_sentiment_data.tar.gz"), "-o", str(tmp_path / "a"))
    assert local.exit_code == 0, local.output
    assert not (home / "cache" / "downloads").exists() or not any(
        (home / "cache" / "downloads").iterdir()
    )  # a local archive is unpacked in the cache and not kept there
    other = tmp_path / "x"
    remote = run(serve(server, data), "-o", str(tmp_path / "b"), "--unlabeled-output", str(other))
    assert remote.exit_code == 0, remote.output
    assert pq.read_table(tmp_path / "a").equals(pq.read_table(tmp_path / "b"))
    assert not (tmp_path / "a.unlabeled").exists() and not other.exists()  # none to write
    assert "unlabeled" not in local.stdout


@pytest.mark.real_data
def test_the_real_reviews_in_the_official_layout(
    amazon_dir: Path, tmp_path: Path, home: Path, server: Server
) -> None:
    """An archive built from ../shared as the authors ship it gives the shared copy's dataset."""
    files = {}
    for category in CATEGORIES:
        folder = "kitchen" if category.startswith("kitchen") else category
        for label in ("positive", "negative"):
            text = (amazon_dir / folder / f"{label}.review").read_text(encoding="utf-8")
            text = re.sub(r"<\?xml[^>]*\?>\s*|</?reviews>\n", "", text)  # no root element
            # raw "&" where the well-formed copy escaped a bare one
            text = re.sub(r"&amp;(?!#?[A-Za-z0-9]+;)", "&", text)
            files[f"sorted_data_acl/{category}/{label}.review"] = text.encode()
    files["sorted_data_acl/dvd/unlabeled.review"] = layout(("dvd",))[
        "sorted_data_acl/dvd/unlabeled.review"
    ]
    result = run(serve(server, tar_gz(files)), "-o", str(tmp_path / "ds"))
    assert result.exit_code == 0, result.output
    assert split_counts(tmp_path / "ds") == {"train": 6400, "test": 1600}
    prepare([amazon_dir], tmp_path / "shared")
    key = "review_id"
    expected = pq.read_table(tmp_path / "shared").sort_by(key)
    assert pq.read_table(tmp_path / "ds").sort_by(key).equals(expected)
    assert pq.read_table(tmp_path / "ds.unlabeled").num_rows == 6


# --- downloads and archives that are refused ----------------------------------------------

TRAVERSAL = "sorted_data_acl/../../evil.txt"


def hostile(tmp_path: Path) -> dict[str, tuple[bytes, str, list[str]]]:
    """case → (archive bytes, server mode, substrings of the one error line)."""
    good = layout(n=3)
    outside = str(tmp_path / "evil.txt")
    return {
        "path traversal": (
            tar_gz({**good, TRAVERSAL: b"x"}),
            "full",
            [f"refused: the entry '{TRAVERSAL}' would leave the folder"],
        ),
        "dot-dot at the top": (
            tar_gz({"../evil.txt": b"x", **good}),
            "full",
            ["refused: the entry '../evil.txt' would leave the folder"],
        ),
        "absolute path": (
            tar_gz({**good, outside: b"x"}),
            "full",
            [f"refused: the entry '{outside}' would leave the folder"],
        ),
        "symlink out of the folder": (
            tar_gz(good, [entry("sorted_data_acl/books/out", tarfile.SYMTYPE, str(tmp_path))]),
            "full",
            ["'sorted_data_acl/books/out' is a symbolic link", "only files and folders"],
        ),
        "hard link": (
            tar_gz(good, [entry("sorted_data_acl/books/passwd", tarfile.LNKTYPE, "/etc/passwd")]),
            "full",
            ["'sorted_data_acl/books/passwd' is a hard link (to '/etc/passwd')"],
        ),
        "device": (
            tar_gz(good, [entry("sorted_data_acl/books/tty", tarfile.CHRTYPE)]),
            "full",
            ["'sorted_data_acl/books/tty' is a device or pipe"],
        ),
        "bomb: a huge member": (
            declared_bomb(),
            "full",
            ["refused: unpacks to more than 1,073,741,824 bytes (a bomb?)"],
        ),
        "truncated download": (
            tar_gz(layout()),
            "short",
            ["the download ended after", "bytes; run again to start over"],
        ),
        "truncated gzip, no length": (
            tar_gz(layout())[:-40],
            "no-length",
            ["truncated, corrupt or not a tar archive", "download it again"],
        ),
        "gzip trailer missing": (  # the tar part is whole: only reading to the end shows it
            tar_gz(layout(n=3))[:-8],
            "no-length",
            ["truncated, corrupt or not a tar archive", "download it again"],
        ),
        "not a tar archive": (
            gzip.compress(b"just some text\n" * 100),
            "full",
            ["truncated, corrupt or not a tar archive (invalid header)"],
        ),
        "three categories": (
            tar_gz(layout(CATEGORIES[:3], n=1000)),
            "full",
            [
                "not the Multi-Domain Sentiment Dataset: expected the folders books, dvd, "
                "electronics, kitchen_&_housewares, each with 1,000 positive and 1,000 negative",
                "found books 1,000/1,000, dvd 1,000/1,000, electronics 1,000/1,000 "
                "(positive/negative)",
            ],
        ),
        "999 reviews": (
            tar_gz(
                {
                    **layout(n=1000, unlabeled=False),
                    "sorted_data_acl/dvd/negative.review": review_file("dvd", "negative", 999),
                }
            ),
            "full",
            ["found books 1,000/1,000, dvd 1,000/999, electronics"],
        ),
        "no review files": (tar_gz({"README": b"hello"}), "full", ["found no .review files"]),
        "not found": (b"", "missing", ["the server answered 404 Not Found"]),
        "redirect to plain http": (
            b"",
            "redirect:http://example.com/domain_sentiment_data.tar.gz",
            ["http://example.com/domain_sentiment_data.tar.gz: refused: downloads use https"],
        ),
    }


CASES = list(hostile(Path("/x")))


@pytest.mark.parametrize("case", CASES)
def test_hostile_downloads_are_refused_and_leave_nothing(
    tmp_path: Path, home: Path, server: Server, case: str
) -> None:
    data, mode, expected = hostile(tmp_path)[case]
    url = serve(server, data, mode)
    before = entries(tmp_path)
    result = run(url, "-o", str(tmp_path / "ds"))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.output
    for text in expected:
        assert text in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert server.hits[ARCHIVE] == 1
    # Nothing written anywhere but the cache's (now empty) folders: no dataset, no file
    # outside the unpacking folder, no partial or refused archive kept in the cache.
    assert entries(tmp_path) - before <= {"home", "home/cache", "home/cache/downloads"}
    assert not (home / "cache" / "downloads").exists() or not any(
        (home / "cache" / "downloads").iterdir()
    )


@pytest.mark.parametrize("case", ["path traversal", "symlink out of the folder", "999 reviews"])
def test_a_hostile_local_archive_is_refused_too(tmp_path: Path, home: Path, case: str) -> None:
    data, _, expected = hostile(tmp_path)[case]
    archive = tmp_path / "domain_sentiment_data.tar.gz"
    archive.write_bytes(data)
    before = entries(tmp_path)
    result = run(str(archive), "-o", str(tmp_path / "ds"))
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {archive}: ")
    assert len(result.output.strip().splitlines()) == 1
    assert expected[-1] in result.output
    assert entries(tmp_path) - before <= {"home", "home/cache", "home/cache/downloads"}


def test_offline_is_one_line_saying_what_to_do(tmp_path: Path, home: Path, monkeypatch) -> None:
    url = f"http://127.0.0.1:{free_port()}/domain_sentiment_data.tar.gz"  # nobody listens
    monkeypatch.setenv(URL_VARIABLE, url)
    result = run("--download", "amazon-multi-domain", "-o", str(tmp_path / "ds"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: cannot reach {url}: [Errno 111] Connection refused; download it on a machine "
        "with internet and run `sentiment-jobs prepare path/to/domain_sentiment_data.tar.gz -o DATASET`"
    ]
    assert entries(tmp_path) <= {"home", "home/cache", "home/cache/downloads"}


@pytest.mark.parametrize(
    "url", ["http://example.com/a.tar.gz", "ftp://example.com/a.tar.gz", "file:///etc/passwd"]
)
def test_only_https_or_this_machine(tmp_path: Path, home: Path, url: str) -> None:
    result = run(url, "-o", str(tmp_path / "ds"))
    assert result.exit_code == 1
    if url.startswith("http"):
        assert (
            result.output
            == f"error: {url}: refused: downloads use https (plain http only to localhost)\n"
        )
    else:  # not a URL: a path, which does not exist
        assert "no such file or directory" in result.output


def test_an_existing_output_is_checked_before_downloading(
    tmp_path: Path, home: Path, server: Server
) -> None:
    (tmp_path / "ds.unlabeled").mkdir()
    (tmp_path / "ds.unlabeled" / "mine.txt").write_text("mine")
    result = run(serve(server, b"never fetched"), "-o", str(tmp_path / "ds"), "--overwrite")
    assert result.exit_code == 1
    assert "ds.unlabeled: not prepare's unlabeled reviews" in result.output
    assert server.hits[ARCHIVE] == 0


# --- the unpacking caps, with small limits -------------------------------------------------


def test_unpacked_bytes_and_entries_are_capped(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz({"big": bytes(5_000_000)}))  # 5 MB of zeros: 5 KB compressed
    with pytest.raises(SentimentError, match=r"refused: unpacks to more than 1,000,000 bytes"):
        safe_extract(archive, _empty(tmp_path / "t1"), max_bytes=1_000_000)
    archive.write_bytes(tar_gz({f"f{i}": b"" for i in range(20)}))
    with pytest.raises(SentimentError, match=r"refused: more than 10 entries"):
        safe_extract(archive, _empty(tmp_path / "t2"), max_members=10)
    assert len(list((tmp_path / "t2").iterdir())) == 10  # checked before each entry is written
    # a pax header is read into memory whole: the stream cap covers headers too
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * 3_000_000}
        tar.addfile(info, io.BytesIO(b""))
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(SentimentError, match=r"refused: unpacks to more than 1,070,056 bytes"):
        safe_extract(archive, _empty(tmp_path / "t3"), max_bytes=1000, max_members=10)


def test_a_plain_tar_unpacks_as_a_gzipped_one(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("d/f.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    safe_extract(archive, _empty(tmp_path / "t"))
    assert (tmp_path / "t" / "d" / "f.txt").read_bytes() == b"hi"


def _empty(path: Path) -> Path:
    path.mkdir()
    return path
