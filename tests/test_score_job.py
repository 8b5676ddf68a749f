"""`sentiment-jobs score` on a real local Ray: exactly-once output, statuses, bad files, commits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.config import ScoreConfig, SentimentError
from sentiment.score_job import default_output, run_scoring, start_registry
from sentiment.scoring import Scorer
from tests.conftest import make_reviews

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def write_inputs(directory: Path, n_files: int = 3, rows: int = 120, seed: int = 0) -> list[Path]:
    """Parquet files of generated reviews, several row groups each, with an extra column."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n_files):
        reviews = make_reviews(rows, seed=seed + k)
        table = pa.table(
            {
                "review_id": [f"f{seed + k}-{r['review_id']}" for r in reviews],
                "text": [r["text"] for r in reviews],
                "stars": pa.array([5 if r["label"] else 1 for r in reviews], pa.int8()),
            }
        )
        path = directory / f"part-{seed + k}.parquet"
        pq.write_table(table, path, row_group_size=50)
        paths.append(path)
    return paths


def read_output(output: Path) -> pa.Table:
    files = sorted(output.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


def score(inputs, output: Path, model: Path, **kw) -> dict:
    cfg = ScoreConfig(inputs=tuple(map(str, inputs)), output=str(output), model=str(model), **kw)
    return run_scoring(cfg).manifest


def test_multi_file_input_scores_every_row_once_like_the_scorer(ray_local, tiny_model, tmp_path):
    paths = write_inputs(tmp_path / "in")
    manifest = score([tmp_path / "in"], tmp_path / "out", tiny_model)
    out = read_output(tmp_path / "out")
    inputs = pa.concat_tables([pq.read_table(p) for p in paths])
    assert out.num_rows == inputs.num_rows == manifest["this_run"]["rows_out"] == 360
    assert sorted(out["review_id"].to_pylist()) == sorted(inputs["review_id"].to_pylist())
    # input columns unchanged, joined on the id (Ray Data does not keep row order)
    by_id = {r["review_id"]: r for r in out.to_pylist()}
    for row in inputs.to_pylist():
        got = by_id[row["review_id"]]
        assert (got["text"], got["stars"]) == (row["text"], row["stars"])
    expected = Scorer(tiny_model).score_texts(inputs["text"].to_pylist()).p_positive
    for row, p in zip(inputs.to_pylist(), expected, strict=True):
        assert by_id[row["review_id"]]["p_positive"] == pytest.approx(float(p), abs=1e-6)
    assert (tmp_path / "out" / "_SUCCESS").read_text().strip() == manifest["run_id"]
    assert not (tmp_path / "out" / "_staging").exists()
    assert {i["path"] for i in manifest["inputs"]} == {str(p) for p in paths}
    assert manifest["totals"]["ok"] == 360 and manifest["model_id"] == by_id["f0-r0"]["model_id"]


def test_unscorable_rows_keep_their_status_and_none_is_lost(ray_local, tiny_model, tmp_path):
    texts = ["great product", None, "", "   ", "zzz qqq", "great " * 100_000, b"\xff\xfe", b"awful"]
    table = pa.table(
        {"text": pa.array([t.encode() if isinstance(t, str) else t for t in texts], pa.binary())}
    )
    pq.write_table(table, tmp_path / "odd.parquet")
    manifest = score([tmp_path / "odd.parquet"], tmp_path / "out", tiny_model)
    out = read_output(tmp_path / "out")
    assert out.num_rows == len(texts)
    # no id column in the input: one was added from file and row position
    rows = {r["row_id"]: r for r in out.to_pylist()}
    status = [rows[f"{tmp_path / 'odd.parquet'}:{i}"]["score_status"] for i in range(len(texts))]
    assert status == [
        "ok",
        "null_text",
        "empty_text",
        "empty_text",
        "no_known_tokens",
        "truncated",
        "not_text",
        "ok",
    ]
    for r in rows.values():
        assert (r["p_positive"] is None) == (r["score_status"] not in ("ok", "truncated"))
    assert manifest["this_run"]["empty_text"] == 2 and manifest["this_run"]["truncated"] == 1


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (lambda p: pq.write_table(pa.table({"body": ["x"]}), p), "no text column 'text'"),
        (lambda p: pq.write_table(pa.table({"text": [1, 2]}), p), "has type int64, not a string"),
        (lambda p: p.write_bytes(b"PAR1 this is not parquet"), "not a readable Parquet file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (
            lambda p: p.write_bytes((REPO / "pyproject.toml").read_bytes()[:100]),
            "not a readable Parquet",
        ),
    ],
    ids=["missing-column", "wrong-type", "corrupt", "empty", "truncated"],
)
def test_bad_files_fail_fast_naming_the_file_or_are_skipped(
    ray_local, tiny_model, tmp_path, make_bad, message
):
    write_inputs(tmp_path / "in", n_files=1)
    bad = tmp_path / "in" / "bad.parquet"
    make_bad(bad)
    with pytest.raises(SentimentError, match=message) as err:
        score([tmp_path / "in"], tmp_path / "out", tiny_model)
    assert str(bad) in str(err.value)
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    manifest = score([tmp_path / "in"], tmp_path / "out", tiny_model, on_bad_file="skip")
    assert [s["path"] for s in manifest["skipped"]] == [str(bad)]
    assert message.split("'")[0].strip() in manifest["skipped"][0]["reason"]
    assert read_output(tmp_path / "out").num_rows == 120


def test_cli_reports_a_bad_file_in_one_line_and_exits_non_zero(ray_local, tiny_model, tmp_path):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    result = CliRunner().invoke(
        app, ["score", str(tmp_path / "bad.parquet"), "--model", str(tiny_model)]
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "bad.parquet: no text column 'text'" in lines[0]
    assert "Traceback" not in result.output


def corrupt_middle(path: Path) -> None:
    """Overwrite the middle of a file's data pages; its footer (read by the checks) stays valid."""
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    start, end = len(data) // 3, len(data) - footer - 100
    data[start:end] = b"\xff" * (end - start)
    path.write_bytes(bytes(data))


def test_a_failed_run_leaves_the_previous_output_committed_and_intact(
    ray_local, tiny_model, tmp_path
):
    paths = write_inputs(tmp_path / "in", n_files=2)
    first = score([tmp_path / "in"], tmp_path / "out", tiny_model)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    reviews = make_reviews(4000, seed=9)
    big = pa.table(
        {
            "review_id": [f"late-{r['review_id']}" for r in reviews],
            "text": [r["text"] for r in reviews],
            "stars": pa.array([3] * len(reviews), pa.int8()),
        }
    )
    pq.write_table(big, tmp_path / "in" / "late.parquet", row_group_size=500, compression="snappy")
    corrupt_middle(tmp_path / "in" / "late.parquet")
    with pytest.raises(
        SentimentError, match=r"scoring run .* failed: .*late\.parquet: cannot read row group"
    ):
        score([tmp_path / "in"], tmp_path / "out", tiny_model)
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert after == before  # same files, same bytes: _SUCCESS still names the first run
    assert (tmp_path / "out" / "_SUCCESS").read_text().strip() == first["run_id"]
    assert not (tmp_path / "out" / "_staging").exists()
    assert (
        read_output(tmp_path / "out").num_rows
        == 240
        == sum(pq.read_metadata(p).num_rows for p in paths)
    )


def test_a_failed_first_run_leaves_no_success_marker(ray_local, tiny_model, tmp_path):
    pq.write_table(
        pa.table({"text": [r["text"] for r in make_reviews(4000)]}),
        tmp_path / "a.parquet",
        row_group_size=500,
    )
    corrupt_middle(tmp_path / "a.parquet")
    with pytest.raises(SentimentError, match=r"a\.parquet: cannot read row group"):
        score([tmp_path / "a.parquet"], tmp_path / "out", tiny_model)
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_running_twice_gives_each_row_exactly_once(ray_local, tiny_model, tmp_path):
    write_inputs(tmp_path / "in", n_files=2)
    first = score([tmp_path / "in"], tmp_path / "out", tiny_model)
    second = score([tmp_path / "in"], tmp_path / "out", tiny_model)
    out = read_output(tmp_path / "out")
    assert out.num_rows == 240 and len(set(out["review_id"].to_pylist())) == 240
    assert first["run_id"] != second["run_id"]
    assert {f["run_id"] for f in second["files"]} == {second["run_id"]}
    assert all(second["run_id"] in p.name for p in (tmp_path / "out").glob("*.parquet"))


def test_incremental_scores_only_new_files(ray_local, tiny_model, tmp_path):
    write_inputs(tmp_path / "in", n_files=2)
    first = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    [new] = write_inputs(tmp_path / "in", n_files=1, seed=10)
    second = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    assert second["this_run"]["inputs"] == [str(new)] and second["this_run"]["rows_in"] == 120
    assert second["totals"]["rows_out"] == 360 and second["totals"]["ok"] == 360
    assert read_output(tmp_path / "out").num_rows == 360
    kept = [f for f in second["files"] if f["run_id"] == first["run_id"]]
    assert kept == first["files"]
    third = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    assert third["this_run"]["rows_in"] == 0 and read_output(tmp_path / "out").num_rows == 360
    assert third["this_run"]["changed_inputs"] == third["this_run"]["removed_inputs"] == []


# --- issue 9: changed and deleted inputs, undecodable rows, links, actor errors ----------


def rewrite(path: Path, texts: list[str], keep_mtime: bool = False) -> None:
    """Replace an input file's rows: uncompressed and plain, so equal-length texts give a
    file of the same size; with `keep_mtime` its modification time is put back too."""
    st = path.stat() if keep_mtime else None
    table = pa.table(
        {
            "review_id": [f"{path.stem}-new{i}" for i in range(len(texts))],
            "text": texts,
            "stars": pa.array([3] * len(texts), pa.int8()),
        }
    )
    pq.write_table(table, path, compression="none", use_dictionary=False)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_rewrite_keeping_size_time_and_footer_is_seen_only_with_content_digest(
    ray_local, tiny_model, tmp_path
):
    """Uncompressed, plain, no statistics, texts of the same length: the rewritten file has
    the same size, time and footer bytes. --incremental alone cannot tell (the README
    says so); with --content-digest it scores the new rows."""
    import os

    from sentiment.inputs import _footer_digest

    path = tmp_path / "in" / "a.parquet"
    path.parent.mkdir()

    def put(text: str) -> None:
        st = path.stat() if path.exists() else None
        table = pa.table({"review_id": [f"r{i}" for i in range(30)], "text": [text] * 30})
        pq.write_table(
            table, path, compression="none", use_dictionary=False, write_statistics=False
        )
        if st is not None:
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    def footer() -> tuple[int, int, str]:
        with open(path, "rb") as f:
            return (
                path.stat().st_size,
                path.stat().st_mtime_ns,
                _footer_digest(f, path.stat().st_size),
            )

    put("great product")
    score([path], tmp_path / "plain", tiny_model, incremental=True)
    score([path], tmp_path / "digest", tiny_model, incremental=True, content_digest=True)
    before = footer()
    put("awful product")
    assert footer() == before
    plain = score([path], tmp_path / "plain", tiny_model, incremental=True)
    assert plain["this_run"]["changed_inputs"] == [] and plain["this_run"]["inputs"] == []
    assert set(read_output(tmp_path / "plain")["text"].to_pylist()) == {"great product"}
    digest = score([path], tmp_path / "digest", tiny_model, incremental=True, content_digest=True)
    assert digest["this_run"]["changed_inputs"] == [str(path)]
    assert set(read_output(tmp_path / "digest")["text"].to_pylist()) == {"awful product"}
    assert digest["inputs"][0]["fingerprint"].startswith("sha256:")


def ids_in_output(output: Path) -> list[str]:
    return sorted(read_output(output)["review_id"].to_pylist())


def ids_in_inputs(directory: Path) -> list[str]:
    return sorted(
        i for p in directory.glob("*.parquet") for i in pq.read_table(p)["review_id"].to_pylist()
    )


def test_incremental_same_size_rewrite_is_rescored(ray_local, tiny_model, tmp_path):
    """A file rewritten with the same size and modification time (only its footer digest
    tells): its old rows go, its new rows are scored, the other inputs' rows stay once."""
    a, b = tmp_path / "in" / "a.parquet", tmp_path / "in" / "b.parquet"
    (tmp_path / "in").mkdir()
    rewrite(a, ["great product"] * 40)
    rewrite(b, ["fine"] * 10)
    first = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    size = a.stat().st_size
    rewrite(a, ["awful product"] * 40, keep_mtime=True)
    assert a.stat().st_size == size
    second = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    assert second["this_run"]["changed_inputs"] == [str(a)]
    # a and b shared a file: only a is scored again, b's rows are copied as they were
    assert second["this_run"]["inputs"] == [str(a)]
    out = read_output(tmp_path / "out")
    assert ids_in_output(tmp_path / "out") == ids_in_inputs(tmp_path / "in")
    assert set(out.filter(pa.compute.equal(out["text"], "awful product"))["sentiment"].to_pylist())
    assert "great product" not in out["text"].to_pylist()  # no stale prediction kept
    runs = {i["path"]: i["run_id"] for i in second["inputs"]}
    assert runs == {str(a): second["run_id"], str(b): first["run_id"]}
    assert sorted(p["path"] for f in second["files"] for p in f["inputs"]) == [str(a), str(b)]
    assert second["totals"]["rows_out"] == 50 == sum(f["rows"] for f in second["files"])
    entry = next(i for i in second["inputs"] if i["path"] == str(a))
    assert entry["size"] == size and len(entry["fingerprint"]) == 32 and entry["mtime_ns"]


def test_incremental_deleted_input_rows_are_dropped(ray_local, tiny_model, tmp_path):
    paths = write_inputs(tmp_path / "in", n_files=2, rows=30)
    # one actor: the two inputs share one file
    first = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True, actors=1)
    [late] = write_inputs(tmp_path / "in", n_files=1, rows=30, seed=10)
    second = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    paths[0].unlink()
    third = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    assert third["this_run"]["removed_inputs"] == [str(paths[0])]
    assert third["this_run"]["inputs"] == []  # nothing to score: the deleted file's rows go
    assert ids_in_output(tmp_path / "out") == ids_in_inputs(tmp_path / "in")  # 60 rows
    assert {i["path"] for i in third["inputs"]} == {str(paths[1]), str(late)}
    # the late file stays as it was; the file paths[0] shared with paths[1] is rewritten
    [late_file] = [f for f in second["files"] if f["inputs"][0]["path"] == str(late)]
    assert late_file in third["files"]
    pieces = sorted((p["path"], p["rows"]) for f in third["files"] for p in f["inputs"])
    assert pieces == sorted([(str(paths[1]), 30), (str(late), 30)])
    assert {f["run_id"] for f in third["files"]} == {second["run_id"], third["run_id"]}
    assert {i["path"]: i["run_id"] for i in third["inputs"]}[str(paths[1])] == first["run_id"]
    assert third["totals"]["rows_out"] == 60 and third["totals"]["ok"] == 60


def test_incremental_over_files_of_an_older_version_rescores_their_whole_run(
    ray_local, tiny_model, tmp_path
):
    """Data files committed before files held one input each name no input: when one of
    that run's inputs changes, all its inputs are scored again and its files dropped."""
    paths = write_inputs(tmp_path / "in", n_files=2, rows=30)
    score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    manifest_path = tmp_path / "out" / "_manifest.json"
    old = json.loads(manifest_path.read_text())
    old["files"] = [{k: v for k, v in f.items() if k != "inputs"} for f in old["files"]]
    manifest_path.write_text(json.dumps(old))
    paths[0].unlink()
    second = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    assert second["this_run"]["inputs"] == [str(paths[1])]
    assert {f["run_id"] for f in second["files"]} == {second["run_id"]}
    assert ids_in_output(tmp_path / "out") == ids_in_inputs(tmp_path / "in")


def test_incremental_changed_size_is_rescored(ray_local, tiny_model, tmp_path):
    [path] = write_inputs(tmp_path / "in", n_files=1, rows=30)
    score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    rewrite(path, ["great"] * 7)
    second = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)
    assert second["this_run"]["changed_inputs"] == [str(path)]
    assert ids_in_output(tmp_path / "out") == [f"part-0-new{i}" for i in range(7)]
    assert second["totals"]["rows_out"] == 7


def test_invalid_utf8_row_is_not_text_and_the_run_succeeds(ray_local, tiny_model, tmp_path):
    """A Parquet string column holding invalid UTF-8 (a lone surrogate, a stray 0xff): those
    rows get `not_text`, every other row is scored, the run commits."""
    raw = [b"great product", b"\xed\xa0\x80 awful", b"awful", b"\xff"] * 30
    table = pa.table({"review_id": [f"u{i}" for i in range(120)], "text": raw})
    table = table.set_column(1, "text", table["text"].cast(pa.binary()).chunk(0).view(pa.string()))
    pq.write_table(table, tmp_path / "bad-utf8.parquet", row_group_size=40)
    manifest = score([tmp_path / "bad-utf8.parquet"], tmp_path / "out", tiny_model)
    assert manifest["this_run"]["rows_out"] == 120 and manifest["this_run"]["not_text"] == 60
    out = read_output(tmp_path / "out")
    status = dict(zip(out["review_id"].to_pylist(), out["score_status"].to_pylist(), strict=True))
    assert [status[f"u{i}"] for i in range(4)] == ["ok", "not_text", "ok", "not_text"]


def test_symlink_loop_and_duplicates_score_each_row_once(ray_local, tiny_model, tmp_path):
    [path] = write_inputs(tmp_path / "in", n_files=1, rows=100)
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")
    (tmp_path / "in" / "copy.parquet").symlink_to(path)
    manifest = score([tmp_path / "in"], tmp_path / "out", tiny_model)
    assert manifest["this_run"]["rows_out"] == 100 == read_output(tmp_path / "out").num_rows
    assert [i["path"] for i in manifest["inputs"]] == [str(path)]
    assert sorted(i["reason"] for i in manifest["ignored"]) == [
        "link to a directory, not followed",
        f"same file as {path}",
    ]


def test_scoring_actor_error_reaches_the_driver_as_one_line(ray_local, tiny_model, tmp_path):
    """An exception inside a Ray scoring actor: the driver's message names the file, the
    row group and the reason, in one line (Ray's own text is a multi-line traceback)."""
    import ray

    from sentiment.cluster import failure_reason
    from sentiment.inputs import check_inputs
    from sentiment.layout import input_schema, plan_units
    from sentiment.pipeline import ScorerActor, make_datasource

    paths = write_inputs(tmp_path / "in", n_files=2, rows=100)
    table = pq.read_table(paths[1])
    texts = table["text"].to_pylist()
    texts[75] = "poison"
    pq.write_table(table.set_column(1, "text", pa.array(texts)), paths[1], row_group_size=50)
    files, _, _ = check_inputs([str(tmp_path / "in")], "text", "", "fail", None)

    class Failing(ScorerActor):
        def __call__(self, batch):
            real = self.scorer.score_texts

            def score_texts(values):
                if "poison" in values:
                    raise ValueError("cannot score this\nsecond line")
                return real(values)

            self.scorer.score_texts = score_texts
            return super().__call__(batch)

    units = plan_units(files, 1000)
    (tmp_path / "out" / "_staging").mkdir(parents=True)  # the driver's part
    registry = start_registry()
    ds = ray.data.read_datasource(make_datasource(units, input_schema(files, False), False))
    ds = ds.map_batches(
        Failing,
        fn_constructor_kwargs={
            "model_dir": str(tiny_model),
            "text_column": "text",
            "max_tokens": 0,
            "batch_size": 64,
            "pool_rows": 4096,
            "threads": 1,
            "output": str(tmp_path / "out"),
            "staging": str(tmp_path / "out" / "_staging"),
            "registry": registry,
        },
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.5,
    )
    with pytest.raises(Exception) as err:
        ds.materialize()
    # A failed pipeline leaves its pool's actors alive, holding their CPUs from the tests
    # that follow (run_scoring ends them through its registry; this does the same).
    for actor in ray.get(registry.actors.remote(), timeout=60):
        ray.kill(actor)
    ray.kill(registry)
    assert failure_reason(err.value) == (
        f"{paths[1]}: row group 1: scoring failed: ValueError: cannot score this second line"
    )
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, "the failed pipeline's actors still hold CPUs"
        time.sleep(0.5)


def test_default_output_is_next_to_the_input():
    assert default_output("/data/reviews.parquet") == "/data/reviews.scored"
    assert default_output("/data/in/") == "/data/in.scored"
    assert default_output("/data/in/*.parquet") == "/data/in.scored"
    assert default_output("s3://bucket/reviews.parquet") == "s3://bucket/reviews.scored"


GPU_SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    import ray
    from sentiment.config import ScoreConfig
    from sentiment.score_job import run_scoring
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
             _temp_dir=tempfile.mkdtemp(prefix="rayg", dir="/tmp"))
    cfg = ScoreConfig(inputs=(sys.argv[1],), output=sys.argv[2], model=sys.argv[3],
                      gpus_per_actor=1, batch_size=20)
    m = run_scoring(cfg).manifest
    print(json.dumps({"actors": m["actors"], "resources": m["resources"], "rows": m["this_run"]["rows_out"]}))
    """
)


def test_gpu_actors_each_hold_their_own_gpu(tiny_model, tmp_path):
    """Logical GPUs: two actors with --gpus-per-actor 1, each pinned to a different GPU id,
    and the model on CUDA only where torch sees a device (here it does not)."""
    write_inputs(tmp_path / "in", n_files=2)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            GPU_SCRIPT,
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            str(tiny_model),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["rows"] == 240 and report["resources"]["actors"] == 2
    gpu_ids = [tuple(a["gpu_ids"]) for a in report["actors"]]
    assert len(gpu_ids) == 2 and all(len(g) == 1 for g in gpu_ids) and len(set(gpu_ids)) == 2
    assert {a["device"] for a in report["actors"]} == {"cpu"}
    assert "2 scoring actor(s) held GPUs (ids 0, 1) but torch saw no CUDA device" in proc.stderr


def test_installed_command_scores_with_the_latest_model(tiny_model, tmp_path):
    """The console script end to end: `score INPUT` alone uses the store's latest model."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(tiny_model, store / "m1")
    (store / "LATEST").write_text("m1\n")
    write_inputs(tmp_path / "in", n_files=1)
    exe = Path(sys.executable).parent / "sentiment-jobs"
    proc = subprocess.run(
        [str(exe), "score", str(tmp_path / "in" / "part-0.parquet")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**_env(), "SENTIMENT_STORE": str(store)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rows in 120  rows out 120" in proc.stdout
    assert read_output(tmp_path / "in" / "part-0.scored").num_rows == 120
    # Ray's own INFO lines (its progress log, the instance started, the token note) only
    # with -v: the run's stderr holds this project's lines alone.
    noise = ("Total Progress", "streaming_executor", "Started a local Ray", "Token authentication")
    assert not [n for n in noise if n in proc.stderr], proc.stderr[-3000:]
    assert all(" INFO sentiment." in line for line in proc.stderr.splitlines()), proc.stderr


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    return env


def test_sigterm_ends_a_run_in_one_line_with_exit_143_and_the_output_as_committed(
    tiny_model, tmp_path
):
    """What `timeout`, cron wrappers and Kubernetes send: the run stops within seconds with
    one `error:` line and 128 + 15, its staging area gone, its lock released, the output
    as the last run committed it (Ray's own handler dumped a crash report, exit 134)."""
    write_inputs(tmp_path / "in", n_files=2)
    command = [
        str(Path(sys.executable).parent / "sentiment-jobs"), "score", str(tmp_path / "in"),
        "--output", str(tmp_path / "out"), "--model", str(tiny_model), "--actors", "1",
    ]  # fmt: skip
    env = _env()
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    big = pa.table({"review_id": [f"big{i}" for i in range(200_000)], "text": ["great"] * 200_000})
    big = big.append_column("stars", pa.array([4] * 200_000, pa.int8()))
    pq.write_table(big, tmp_path / "in" / "big.parquet", row_group_size=500)
    proc = subprocess.Popen(
        [*command, "--rows-per-file", "500"], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not list((tmp_path / "out").glob("_staging/*/*.staged")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never staged a file"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGTERM did not end the run within 60 s")
    assert proc.returncode == 143, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: stopped by SIGTERM"
    ]
    assert "Traceback" not in err and "SIGTERM received" not in err
    assert not (tmp_path / "out" / "_LOCK").exists()
    assert not (tmp_path / "out" / "_staging").exists()
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert after == before


def _deep_config(directory: Path) -> None:
    (directory / "config.json").write_text("[" * 100_000 + "]" * 100_000)


def _lying_header(directory: Path) -> None:
    path = directory / "model.safetensors"
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["head.bias"]["data_offsets"] = [0, 1 << 40]
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length :])


@pytest.mark.parametrize(
    ("spoil", "message"),
    [(_deep_config, r"config\.json: nested too deeply"), (_lying_header, "claims bytes")],
    ids=["config-100000-deep", "safetensors-header-lies"],
)
def test_a_bad_model_is_one_line_from_the_driver_before_any_ray_work(
    tiny_model, tmp_path, spoil, message
):
    """Checked where the run starts, not inside the scoring actors: no Ray started, no
    retries as if a node were lost, the output committed before untouched."""
    import re
    import shutil

    write_inputs(tmp_path / "in", n_files=1)
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    spoil(model)
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("earlier output\n")
    exe = Path(sys.executable).parent / "sentiment-jobs"
    proc = subprocess.run(
        [str(exe), "-v", "score", str(tmp_path / "in"), "--model", str(model), "--output", str(out)],
        capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), proc.stderr[-3000:]
    assert str(model) in errors[0]
    assert "Traceback" not in proc.stderr and "local Ray" not in proc.stderr
    assert "attempt" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["kept.txt"]


def test_a_scored_output_inside_the_inputs_is_named_as_the_culprit(ray_local, tiny_model, tmp_path):
    """`score in/a.parquet` writes `in/a.scored/`; scoring `in/` then meets that output's
    files: the error names one of them and says what it is, not `a.parquet`."""
    [path] = write_inputs(tmp_path / "in", n_files=1, rows=30)
    score([path], tmp_path / "in" / "part-0.scored", tiny_model)
    with pytest.raises(SentimentError) as err:
        score([tmp_path / "in"], tmp_path / "out", tiny_model)
    message = str(err.value)
    assert message.startswith("input already has column(s) sentiment, p_positive, model_id")
    assert f"{tmp_path / 'in' / 'part-0.scored'}/part-" in message
    assert "the output of an earlier scoring run" in message
    assert f"{path}:" not in message


def test_json_prints_the_committed_manifest_on_stdout_alone(ray_local, tiny_model, tmp_path):
    write_inputs(tmp_path / "in", n_files=2)
    result = CliRunner().invoke(
        app,
        ["score", str(tmp_path / "in"), "--model", str(tiny_model), "-o", str(tmp_path / "out"),
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # the whole of stdout is one JSON document
    committed = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert summary == {"output": str(tmp_path / "out"), **committed}
    assert summary["this_run"]["rows_out"] == 240
