"""The output commit protocol without Ray: commit, repair of a cut-off commit, the run lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiment.commit import OutputDir, staged_name
from sentiment.config import SentimentError


def stage(out: OutputDir, run_id: str, n: int) -> list[str]:
    os.makedirs(out.staging(run_id), exist_ok=True)
    paths = []
    for i in range(n):
        path = f"{out.staging(run_id)}/{i}.parquet"
        pq.write_table(pa.table({"x": [i]}), path)
        paths.append(path)
    return paths


def manifest(run_id: str, names: list[str]) -> dict:
    return {"run_id": run_id, "files": [{"name": n, "rows": 1, "run_id": run_id} for n in names]}


def commit(out: OutputDir, run_id: str, n: int, keep: list[str] = ()) -> list[str]:
    names = [staged_name(run_id, i) for i in range(n)]
    out.commit(run_id, stage(out, run_id, n), manifest(run_id, [*keep, *names]))
    return names


def test_commit_replaces_the_previous_run_and_marks_success(tmp_path):
    out = OutputDir(str(tmp_path / "out"))
    out.prepare()
    first = commit(out, "r1", 2)
    assert out.data_files() == first and (tmp_path / "out" / "_SUCCESS").read_text() == "r1\n"
    second = commit(out, "r2", 1)
    assert out.data_files() == second
    assert out.committed_manifest()["run_id"] == "r2"
    assert not (tmp_path / "out" / "_staging").exists()


def test_incremental_commit_keeps_the_files_the_manifest_lists(tmp_path):
    out = OutputDir(str(tmp_path / "out"))
    out.prepare()
    first = commit(out, "r1", 2)
    second = commit(out, "r2", 1, keep=first)
    assert out.data_files() == sorted(first + second)


def test_a_cut_off_commit_is_repaired_to_the_manifest(tmp_path):
    out = OutputDir(str(tmp_path / "out"))
    out.prepare()
    first = commit(out, "r1", 2)
    # a later run moved one file in and died before replacing the manifest
    pq.write_table(pa.table({"x": [9]}), tmp_path / "out" / staged_name("r2", 0))
    (tmp_path / "out" / "_SUCCESS").unlink()
    stage(out, "r2", 1)
    out.prepare()
    assert out.data_files() == first
    assert (tmp_path / "out" / "_SUCCESS").read_text() == "r1\n"
    assert not (tmp_path / "out" / "_staging").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a directory")
    with pytest.raises(SentimentError, match="is a file"):
        OutputDir(str(tmp_path / "out")).prepare()


def test_a_live_lock_stops_a_second_run_and_is_released(tmp_path):
    out = OutputDir(str(tmp_path / "out"))
    with out.lock("r1"):
        holder = json.loads((tmp_path / "out" / "_LOCK").read_text())
        assert holder["run_id"] == "r1" and holder["pid"] == os.getpid()
        second = OutputDir(str(tmp_path / "out")).lock("r2")
        with pytest.raises(SentimentError, match="being written by run r1"), second:
            pass
    assert not (tmp_path / "out" / "_LOCK").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "out").mkdir()
    lock = {"run_id": "old", "host": socket.gethostname(), "pid": dead.pid, "since": 0}
    (tmp_path / "out" / "_LOCK").write_text(json.dumps(lock))
    with OutputDir(str(tmp_path / "out")).lock("new"):
        assert json.loads((tmp_path / "out" / "_LOCK").read_text())["run_id"] == "new"


def test_a_lock_from_another_host_is_respected(tmp_path):
    (tmp_path / "out").mkdir()
    lock = {"run_id": "elsewhere", "host": "other-host", "pid": 1, "since": 0}
    (tmp_path / "out" / "_LOCK").write_text(json.dumps(lock))
    lock_ctx = OutputDir(str(tmp_path / "out")).lock("new")
    with pytest.raises(SentimentError, match="host other-host"), lock_ctx:
        pass
