"""Listing and checking scoring inputs without Ray: links, duplicates, the output's place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.config import SentimentError
from sentiment.inputs import Found, check_inputs, check_output_apart, inspect, resolve


def write(path, texts) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path)


def test_symlink_loop_and_duplicate_links_are_read_once(tmp_path):
    """A directory holding a link to itself, a file link and a hard link: each file once,
    and what was left out is reported."""
    d = tmp_path / "in"
    write(d / "a.parquet", ["x"])
    write(d / "sub" / "b.parquet", ["y"])
    (d / "loop").symlink_to(d)  # listed naively: in/loop/loop/loop/... 40 levels deep
    (d / "sub" / "up").symlink_to("..")
    (d / "z-link.parquet").symlink_to(d / "a.parquet")
    os.link(d / "sub" / "b.parquet", d / "sub" / "hard.parquet")
    (d / "gone.parquet").symlink_to(d / "nowhere.parquet")
    files, ignored = resolve([str(d)])
    assert [f.uri for f in files] == [str(d / "a.parquet"), str(d / "sub" / "b.parquet")]
    assert sorted((i["path"], i["reason"]) for i in ignored) == [
        (str(d / "gone.parquet"), "broken link"),
        (str(d / "loop"), "link to a directory, not followed"),
        (str(d / "sub" / "hard.parquet"), f"same file as {d / 'sub' / 'b.parquet'}"),
        (str(d / "sub" / "up"), "link to a directory, not followed"),
        (str(d / "z-link.parquet"), f"same file as {d / 'a.parquet'}"),
    ]
    # a recursive glob and the same file named twice on the command line: still once each
    files, _ = resolve([f"{d}/**/*.parquet", str(d / "a.parquet")])
    assert [f.uri for f in files] == [str(d / "a.parquet"), str(d / "sub" / "b.parquet")]


def test_a_link_named_as_the_input_is_followed(tmp_path):
    write(tmp_path / "real" / "a.parquet", ["x"])
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    files, ignored = resolve([str(tmp_path / "alias")])
    assert [f.uri for f in files] == [str(tmp_path / "alias" / "a.parquet")] and not ignored


@pytest.mark.parametrize(
    ("inputs", "output", "reason"),
    [
        (["in"], "in", "is the input"),
        (["in/"], "in/scored", "lies inside the input"),
        (["in/sub"], "in", "contains the input"),
        (["in/sub/c.parquet"], "in/sub/c.parquet", "is the input"),
        (["in/sub/c.parquet"], "in", "contains the input"),
        (["in/*.parquet"], "in", "is the folder of the inputs"),
        (["in/**/*.parquet"], "in/scored", "lies inside the inputs"),
        (["in/*/c.parquet"], "in/scored", "lies inside the inputs"),
        (["in/*.parquet"], ".", "contains the inputs"),
        (["in"], "alias/scored", "lies inside the input"),  # through a link
    ],
)
def test_output_equal_inside_or_containing_an_input_is_refused(tmp_path, inputs, output, reason):
    write(tmp_path / "in" / "sub" / "c.parquet", ["x"])
    (tmp_path / "alias").symlink_to(tmp_path / "in")
    with pytest.raises(SentimentError, match=f"output .* {reason} ") as err:
        check_output_apart(str(tmp_path / output), [str(tmp_path / i) for i in inputs])
    assert str(tmp_path / inputs[0]) in str(err.value)


@pytest.mark.parametrize(
    ("inputs", "output"),
    [(["in"], "in.scored"), (["in/*.parquet"], "in/scored"), (["in/a.parquet"], "in/a.scored")],
)
def test_output_beside_the_inputs_is_accepted(tmp_path, inputs, output):
    check_output_apart(str(tmp_path / output), [str(tmp_path / i) for i in inputs])


def test_cli_refuses_an_output_equal_to_the_input(tiny_model, tmp_path):
    write(tmp_path / "in" / "a.parquet", ["great"])
    out = tmp_path / "in"
    result = CliRunner().invoke(
        app, ["score", str(tmp_path / "in"), "--output", str(out), "--model", str(tiny_model)]
    )
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: output {out} is the input {tmp_path / 'in'}; choose an output elsewhere"
    ]


def _found(path) -> Found:
    import pyarrow.fs as pafs

    st = os.stat(path)
    return Found(pafs.LocalFileSystem(), str(path), str(path), st.st_size, st.st_mtime_ns)


def test_footer_digest_tells_a_same_size_rewrite_apart(tmp_path):
    path = tmp_path / "a.parquet"
    options = {"compression": "none", "use_dictionary": False}
    pq.write_table(pa.table({"text": ["great product"] * 50}), path, **options)
    before = inspect(_found(path))
    pq.write_table(pa.table({"text": ["awful product"] * 50}), path, **options)
    after = inspect(_found(path))
    assert before.size == after.size and before.rows == after.rows
    assert before.fingerprint != after.fingerprint and len(after.fingerprint) == 32
    assert inspect(_found(path)).fingerprint == after.fingerprint  # stable when unchanged


def test_a_file_name_that_is_not_utf8_is_refused_or_skipped(tmp_path):
    d = tmp_path / "in"
    write(d / "a.parquet", ["x"])
    bad = os.fsdecode(bytes(d) + b"/\xff\xfe.parquet")
    shutil.copyfile(d / "a.parquet", bad)  # pyarrow cannot even name such a path
    with pytest.raises(SentimentError, match="file name is not valid UTF-8"):
        check_inputs([str(d)], "text", "", "fail", None)
    good, skipped, _ = check_inputs([str(d)], "text", "", "skip", None)
    assert [f.uri for f in good] == [str(d / "a.parquet")]
    assert skipped[0]["reason"].endswith("file name is not valid UTF-8")


def _varint(value: int) -> bytes:
    out = b""
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            return out + bytes([byte])
        out += bytes([byte | 0x80])


def write_row_group_claiming(path, claimed: int) -> None:
    """777 real rows whose footer says its row group holds `claimed` (the file-level count
    and the column chunks unchanged): the row group's num_rows varint rewritten."""
    pq.write_table(pa.table({"text": [f"great review {i}" for i in range(777)]}), path)
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    body, footer = data[: -8 - length], data[-8 - length : -8]
    old, new = _varint(777 * 2), _varint(claimed * 2)  # Thrift compact: zigzag varints
    at = footer.find(old)
    while at != -1:
        patched = footer[:at] + new + footer[at + len(old) :]
        path.write_bytes(body + patched + len(patched).to_bytes(4, "little") + b"PAR1")
        meta = pq.read_metadata(path)
        if meta.row_group(0).num_rows == claimed and meta.num_rows == 777:
            return
        at = footer.find(old, at + 1)
    raise AssertionError("no row-group count found to rewrite")


def test_a_row_group_claiming_a_trillion_rows_is_refused_in_one_line_and_little_memory(
    tiny_model, tmp_path
):
    """A 4 KB file whose footer claims 2·10¹² rows in its row group made a read task grow
    to 19 GB and the run retry for ever: the footer is checked first, in seconds, with
    the command's peak memory far below 1 GB (measured in a process of its own)."""
    import json
    import subprocess
    import sys
    import time

    bomb = tmp_path / "in" / "bomb.parquet"
    bomb.parent.mkdir()
    write_row_group_claiming(bomb, 2 * 10**12)
    assert bomb.stat().st_size < 10_000
    with pytest.raises(SentimentError) as err:
        check_inputs([str(bomb)], "text", "", "fail", None)
    assert str(err.value) == (
        f"{bomb}: row group 0 claims 2,000,000,000,000 rows but its column 'text' holds 777 "
        "values; refusing a corrupt or hostile footer"
    )
    cli = str(Path(sys.executable).parent / "sentiment-jobs")
    measure = (
        "import json, resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps({'rc': done.returncode, 'err': done.stderr, 'peak': peak}))\n"
    )
    command = [cli, "score", str(bomb.parent), "--model", str(tiny_model)]
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", measure, *command], capture_output=True, text=True, timeout=180
    )
    seconds = time.monotonic() - start
    got = json.loads(done.stdout)
    errors = [line for line in got["err"].splitlines() if line.startswith("error:")]
    assert got["rc"] == 1 and errors == [f"error: {err.value}"], got["err"][-2000:]
    assert got["peak"] < 1 << 30 and seconds < 30, (got["peak"], seconds)
    assert not (tmp_path / "in.scored" / "_SUCCESS").exists()
