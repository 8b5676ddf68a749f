"""`sentiment-jobs score` on a real local Ray: exactly-once output, statuses, bad files, commits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.config import ScoreConfig, SentimentError
from sentiment.score_job import default_output, run_scoring
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
    big = pa.table({"text": [r["text"] for r in make_reviews(4000, seed=9)]})
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
    # an input that changed after it was scored is an error, not a silent double count
    pq.write_table(
        pa.table({"review_id": ["z"], "text": ["great"], "stars": pa.array([5], pa.int8())}), new
    )
    with pytest.raises(SentimentError, match="changed since run"):
        score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True)


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


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    return env
