"""`sentiment-jobs prepare` through CliRunner and the installed command: bad input, one line."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentiment.cli import app


def pang_lee() -> Path:
    from gensim.test.utils import datapath

    return Path(datapath("pang_lee_polarity.cor"))


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def _dlstudio(tmp: Path, obj: object) -> Path:
    return _write(tmp / "sentiment_dataset_train_3.tar.gz", gzip.compress(pickle.dumps(obj, 2)))


def _parquet(tmp: Path, records: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), tmp / "reviews.parquet")
    return tmp / "reviews.parquet"


# Each case: (build the source(s) in tmp → extra CLI args, substrings the one error line holds).
# "{src}" in an expected substring is the first source's path.
Case = Callable[[Path], list[str]]
BAD: dict[str, tuple[Case, list[str]]] = {
    "missing": (lambda t: [str(t / "nope.csv")], ["nope.csv", "no such file"]),
    "unreadable": (
        lambda t: [str(_mkdir(t / "folder.txt")), "--format", "fasttext"],
        ["folder.txt", "cannot read"],
    ),
    "unrecognised": (
        lambda t: [str(_write(t / "notes.txt", "hello\n"))],
        ["notes.txt", "unrecognised format"],
    ),
    "malicious pickle": (
        lambda t: [str(_dlstudio(t, ({}, {"b": [_Evil(t / "pwned")]}, [])))],
        ["sentiment_dataset_train_3.tar.gz", "posix.system", "refused"],
    ),
    "truncated pickle": (
        lambda t: [
            str(_write(t / "x_test_1.tar.gz", gzip.compress(pickle.dumps(({}, {}, []), 2)[:5])))
        ],
        ["x_test_1.tar.gz", "truncated"],
    ),
    "wrong pickle structure": (
        lambda t: [str(_dlstudio(t, {"books": [["a"]]}))],
        ["sentiment_dataset_train_3.tar.gz", "not a DLStudio sentiment dataset"],
    ),
    "not gzip": (
        lambda t: [str(_write(t / "y_train_1.tar.gz", "plain text"))],
        ["y_train_1.tar.gz", "not a gzip file"],
    ),
    "no text column": (
        lambda t: [str(_parquet(t, [{"body": "x", "label": 1}]))],
        ["reviews.parquet", "no column 'text'", "body, label"],
    ),
    "no label column": (
        lambda t: [str(_write(t / "r.csv", "text,stars\ngood,5\n"))],
        ["r.csv", "no column 'label'", "text, stars"],
    ),
    "label outside the set": (
        lambda t: [
            str(_write(t / "r.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 3}\n'))
        ],
        ["r.jsonl", "row 1", "label 3"],
    ),
    "fasttext label": (
        lambda t: [str(_write(t / "r.txt", "__label__pos ok\n__label__meh hm\n"))],
        ["r.txt", "line 2", "'meh'"],
    ),
    "empty source": (lambda t: [str(_write(t / "e.csv", "text,label\n"))], ["e.csv", "no reviews"]),
    "duplicate ids": (
        lambda t: [str(_write(t / "a.csv", "text,label\nx,1\n")), str(t / "a.csv")],
        ["duplicate review_id 'a/0'", "a.csv row 0 and"],
    ),
    "corrupt parquet": (
        lambda t: [str(_write(t / "c.parquet", b"PAR1garbagePAR1"))],
        ["c.parquet", "cannot read as parquet"],
    ),
    "existing output": (
        lambda t: [str(pang_lee()), "-o", str(_write(_mkdir(t / "full") / "keep", "x").parent)],
        ["full", "--overwrite"],
    ),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(tmp_path: Path, case: str) -> None:
    build, expected = BAD[case]
    args = build(tmp_path)
    if "-o" not in args:
        args += ["-o", str(tmp_path / "ds")]
    result = CliRunner().invoke(app, ["prepare", *args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()
    assert not (tmp_path / "pwned").exists()


def test_prepare_prints_the_report(tmp_path: Path) -> None:
    src = _write(tmp_path / "shop.csv", "body,y,kind\ngreat,pos,toys\nbad,neg,toys\n ,pos,toys\n")
    args = ["prepare", str(src), "-o", str(tmp_path / "ds"), "--text-column", "body"]
    args += ["--label-column", "y", "--category-column", "kind", "--split", "train"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["split", "category", "rows", "positive", "negative"]
    assert lines[1].split() == ["train", "toys", "2", "1", "1"]
    assert "left out 1 reviews with empty text (shop/2, ...)" in result.output
    assert f"wrote 2 reviews to {tmp_path / 'ds'}" in result.output
    assert pq.read_table(tmp_path / "ds").num_rows == 2


def test_prepare_counts_groups_per_split(tmp_path: Path) -> None:
    # numeric product ids (CSV reads them as integers) become strings; a blank one is none
    rows = "".join(f"review {i},{i % 2},{i // 4 if i < 36 else ''}\n" for i in range(40))
    src = _write(tmp_path / "shop.csv", "body,y,product\n" + rows)
    args = ["prepare", str(src), "-o", str(tmp_path / "ds"), "--text-column", "body"]
    args += ["--label-column", "y", "--group-column", "product", "--test-fraction", "0.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "ds").to_pydict()
    groups = [g for g in table["group_id"] if g is not None]
    assert len(groups) == 36 and set(groups) == {str(n) for n in range(9)}
    train = {g for g, s in zip(table["group_id"], table["split"], strict=True) if s == "train"}
    test = {g for g, s in zip(table["group_id"], table["split"], strict=True) if s == "test"}
    train, test = train - {None}, test - {None}
    assert not train & test and len(train) + len(test) == 9
    line = f"group_id: {len(train)} groups in train, {len(test)} in test, 0 in both"
    assert line in result.output.splitlines()


def _console_script() -> str:
    found = shutil.which("sentiment-jobs") or str(Path(sys.executable).parent / "sentiment-jobs")
    if not Path(found).exists():
        pytest.skip("the sentiment-jobs command is not installed (pip install -e .)")
    return found


def test_installed_command(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    cmd = [_console_script(), "prepare", str(pang_lee()), "-o", str(out), "--test-fraction", "0.25"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 200 reviews" in done.stdout
    table = pq.read_table(out)
    assert table.num_rows == 200 and set(table["split"].to_pylist()) == {"train", "test"}
    assert (out / "_prepare_report.json").is_file()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # output exists now
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith(f"error: {out}: exists")
    assert "Traceback" not in again.stderr
