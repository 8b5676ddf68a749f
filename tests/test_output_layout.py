"""The scored output as its readers meet it: files of about --rows-per-file rows, one
schema (the inputs' own, metadata kept), and exactly the committed rows for pandas,
pyarrow, DuckDB and Polars, during a run and after it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.commit import OutputDir
from sentiment.config import ScoreConfig, SentimentError
from sentiment.inputs import InputFile
from sentiment.layout import (
    Segment,
    Unit,
    input_schema,
    keep_rows,
    plan_units,
    schema_difference,
)
from sentiment.score_job import run_scoring
from tests.conftest import make_reviews

ADDED = ["sentiment", "p_positive", "model_id", "score_status"]


def fake_file(name: str, group_rows: list[int], schema: pa.Schema | None = None) -> InputFile:
    schema = schema or pa.schema([("text", pa.string())])
    return InputFile(
        name, name, None, 100, sum(group_rows), len(group_rows), schema, 0, "", tuple(group_rows)
    )


@pytest.mark.parametrize(
    ("files", "rows_per_unit", "expected"),
    [
        # small files gathered in order, never past rows_per_unit
        (
            {"a": [50], "b": [50], "c": [50], "d": [50], "e": [50]},
            100,
            [[("a", 50), ("b", 50)], [("c", 50), ("d", 50)], [("e", 50)]],
        ),
        # a large file: units of whole row groups, the last smaller
        ({"big": [40, 40, 40, 40, 40]}, 100, [[("big", 120)], [("big", 80)]]),
        # a row group larger than a unit stays whole
        ({"big": [250, 10]}, 100, [[("big", 250)], [("big", 10)]]),
        # large files get their own units; small ones around them are gathered together
        (
            {"a": [30], "big": [100, 100], "b": [30]},
            100,
            [[("big", 100)], [("big", 100)], [("a", 30), ("b", 30)]],
        ),
        # zero-row files are in no unit
        ({"empty": [], "a": [5]}, 100, [[("a", 5)]]),
        # 10,000 one-row files: one unit
        (
            {f"f{i:05d}": [1] for i in range(10_000)},
            50_000,
            [[(f"f{i:05d}", 1) for i in range(10_000)]],
        ),
    ],
    ids=["gathered", "large", "huge-group", "mixed", "empty", "ten-thousand"],
)
def test_plan_units(files, rows_per_unit, expected):
    units = plan_units([fake_file(n, g) for n, g in files.items()], rows_per_unit)
    assert [[(s.file.uri, s.rows) for s in u.segments] for u in units] == expected
    assert [u.index for u in units] == list(range(len(units)))
    # every row of every file in exactly one unit, in order
    for name, groups in files.items():
        spans = [(s.first_row, s.rows) for u in units for s in u.segments if s.file.uri == name]
        at = 0
        for first, rows in spans:
            assert first == at
            at += rows
        assert at == sum(groups)


def test_unit_pieces_name_the_input_rows_of_any_stretch():
    a, b = fake_file("a", [10]), fake_file("big", [20, 20])
    unit = Unit(0, (Segment(a, (0,), 0, 10), Segment(b, (1,), 20, 20)))
    assert unit.pieces(0, 30) == [
        {"path": "a", "first": 0, "rows": 10},
        {"path": "big", "first": 20, "rows": 20},
    ]
    assert unit.pieces(5, 10) == [
        {"path": "a", "first": 5, "rows": 5},
        {"path": "big", "first": 20, "rows": 5},
    ]
    assert unit.pieces(12, 18) == [{"path": "big", "first": 22, "rows": 18}]
    assert json.loads(unit.source) == [
        {"uri": "a", "groups": [0], "rows": [10], "at": 0},
        {"uri": "big", "groups": [1], "rows": [20], "at": 10},
    ]


def test_keep_rows_takes_the_kept_pieces_in_file_order():
    table = pa.table({"x": list(range(10))})
    pieces = [
        {"path": "a", "first": 0, "rows": 3},
        {"path": "b", "first": 0, "rows": 4},
        {"path": "c", "first": 7, "rows": 3},
    ]
    assert keep_rows(table, pieces, [pieces[0], pieces[2]])["x"].to_pylist() == [0, 1, 2, 7, 8, 9]
    with pytest.raises(SentimentError, match="lists 10 rows for a file of 9"):
        keep_rows(table.slice(0, 9), pieces, pieces[:1])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([("t", pa.string())], [("t", pa.string())], ""),
        ([("t", pa.string()), ("x", pa.int8())], [("x", pa.int8()), ("t", pa.string())], ""),
        (
            [("t", pa.string())],
            [("t", pa.binary())],
            "column 't' is string in the first and binary in the second",
        ),
        ([("t", pa.string()), ("x", pa.int8())], [("t", pa.string())], "only the first has 'x'"),
        ([("t", pa.string())], [("t", pa.string()), ("y", pa.int64())], "only the second has 'y'"),
    ],
    ids=["same", "reordered", "type", "only-first", "only-second"],
)
def test_schema_difference(a, b, expected):
    assert schema_difference(pa.schema(a), pa.schema(b)) == expected


def test_input_schema_refuses_a_difference_naming_two_files_unless_union():
    one = pa.schema([("text", pa.string()), ("stars", pa.int8())], metadata={b"k": b"v"})
    two = pa.schema([("text", pa.string()), ("lang", pa.string())])
    files = [fake_file("/d/a.parquet", [1], one), fake_file("/d/b.parquet", [1], two)]
    with pytest.raises(SentimentError) as err:
        input_schema(files, union=False)
    assert str(err.value) == (
        "/d/a.parquet and /d/b.parquet have different schemas (only the first has 'stars'; "
        "only the second has 'lang'); score them apart, or pass --union-schemas to write "
        "the union of their columns"
    )
    union = input_schema(files, union=True)
    assert union.names == ["text", "stars", "lang"] and union.metadata == {b"k": b"v"}
    assert input_schema(files[:1], union=False) is one
    clash = fake_file("/d/c.parquet", [1], pa.schema([("stars", pa.list_(pa.int8()))]))
    with pytest.raises(
        SentimentError,
        match=r"/d/a\.parquet and /d/c\.parquet have conflicting columns: column 'stars'",
    ):
        input_schema([files[0], clash], union=True)


def test_a_union_never_turns_text_into_bytes():
    """string beside binary unifies to binary: every row of the string files would be
    written (and scored) as bytes. Refused in one line naming both files."""
    text = fake_file("/d/a.parquet", [1], pa.schema([("text", pa.string())]))
    raw = fake_file("/d/b.parquet", [1], pa.schema([("text", pa.binary())]))
    for files in ([text, raw], [raw, text]):
        with pytest.raises(SentimentError) as err:
            input_schema(files, union=True)
        assert str(err.value).startswith(
            "/d/a.parquet and /d/b.parquet have conflicting columns: column 'text' is "
            "string in the first and binary in the second; a union would make every row"
        )
    assert input_schema([raw, raw], union=True).field("text").type == pa.binary()


# --- through a real local Ray ----------------------------------------------------------


def write(path: Path, reviews: list[dict], row_group_size: int = 25, **columns) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "review_id": [r["review_id"] for r in reviews],
            "text": [r["text"] for r in reviews],
            **columns,
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def inputs_of(directory: Path, n: int, rows: int, prefix: str = "s", seed: int = 0) -> list[Path]:
    paths = []
    for k in range(n):
        reviews = [
            {**r, "review_id": f"{prefix}{k}-{r['review_id']}"}
            for r in make_reviews(rows, seed=seed + k)
        ]
        paths.append(write(directory / f"{prefix}{k:03d}.parquet", reviews))
    return paths


def score(inputs, output: Path, model: Path, **kw) -> dict:
    cfg = ScoreConfig(inputs=tuple(map(str, inputs)), output=str(output), model=str(model), **kw)
    return run_scoring(cfg).manifest


def committed(output: Path) -> list[Path]:
    return sorted(output.glob("*.parquet"))


def ids(output: Path) -> list[str]:
    return sorted(
        pa.concat_tables([pq.read_table(p) for p in committed(output)])["review_id"].to_pylist()
    )


@pytest.mark.ray
def test_files_hold_about_rows_per_file_rows_and_the_manifest_says_whose(
    ray_local, tiny_model, tmp_path
):
    """12 small inputs and one of 450 rows, --rows-per-file 200: six files (the small
    inputs gathered into three), each listing which rows of which input it holds, in order."""
    small = inputs_of(tmp_path / "in", 12, 50)
    reviews = [{**r, "review_id": f"big-{r['review_id']}"} for r in make_reviews(450, seed=99)]
    big = write(tmp_path / "in" / "zbig.parquet", reviews, row_group_size=50)
    manifest = score([tmp_path / "in"], tmp_path / "out", tiny_model, rows_per_file=200)
    files = committed(tmp_path / "out")
    assert sorted(pq.read_metadata(f).num_rows for f in files) == [50, 200, 200, 200, 200, 200]
    assert [f.name for f in files] == sorted(e["name"] for e in manifest["files"])
    source = {str(p): pq.read_table(p)["review_id"].to_pylist() for p in [*small, big]}
    covered = {uri: [] for uri in source}
    for entry in manifest["files"]:
        held = pq.read_table(tmp_path / "out" / entry["name"])["review_id"].to_pylist()
        expected = []
        for piece in entry["inputs"]:
            expected += source[piece["path"]][piece["first"] : piece["first"] + piece["rows"]]
            covered[piece["path"]] += range(piece["first"], piece["first"] + piece["rows"])
        assert held == expected  # the file's rows are those pieces, in that order
    assert all(sorted(rows) == list(range(len(source[u]))) for u, rows in covered.items())
    assert manifest["totals"]["rows_out"] == 1050


@pytest.mark.ray
def test_a_collection_smaller_than_actors_times_rows_per_file_keeps_every_actor_busy(
    ray_local, tiny_model, tmp_path
):
    inputs_of(tmp_path / "in", 6, 40)  # 240 rows, two actors on this machine's local Ray
    manifest = score([tmp_path / "in"], tmp_path / "out", tiny_model)
    assert manifest["resources"]["actors"] == 2
    assert sorted(e["rows"] for e in manifest["files"]) == [120, 120]


@pytest.mark.ray
def test_a_changed_input_in_a_shared_file_is_scored_again_alone(ray_local, tiny_model, tmp_path):
    paths = inputs_of(tmp_path / "in", 4, 30)
    first = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True, actors=1)
    assert len(first["files"]) == 1  # the four small inputs share one file
    before = {r["review_id"]: r for r in pq.read_table(committed(tmp_path / "out")[0]).to_pylist()}
    reviews = [{**r, "review_id": f"new-{r['review_id']}"} for r in make_reviews(20, seed=50)]
    write(paths[2], reviews)
    second = score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True, actors=1)
    assert second["this_run"]["inputs"] == [str(paths[2])]
    assert second["this_run"]["rows_in"] == 20
    out = pa.concat_tables([pq.read_table(p) for p in committed(tmp_path / "out")]).to_pylist()
    assert sorted(r["review_id"] for r in out) == sorted(
        rid for p in paths for rid in pq.read_table(p)["review_id"].to_pylist()
    )
    for row in out:  # the other inputs' rows copied exactly as they were scored
        if not row["review_id"].startswith("new-"):
            assert row == before[row["review_id"]]
    assert second["totals"]["rows_out"] == 110 == sum(f["rows"] for f in second["files"])


@pytest.mark.ray
def test_inputs_whose_schemas_differ_are_refused_in_one_line_or_united(
    ray_local, tiny_model, tmp_path
):
    a = write(tmp_path / "in" / "a.parquet", make_reviews(30), stars=pa.array([5] * 30, pa.int8()))
    b = write(
        tmp_path / "in" / "b.parquet",
        [{**r, "review_id": f"b{i}"} for i, r in enumerate(make_reviews(30, seed=3))],
    )
    args = [
        "score",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: {a} and {b} have different schemas (only the first has 'stars'); score them "
        "apart, or pass --union-schemas to write the union of their columns"
    ]
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    manifest = score([tmp_path / "in"], tmp_path / "out", tiny_model, union_schemas=True)
    table = pd.read_parquet(tmp_path / "out")
    assert len(table) == 60 and manifest["totals"]["rows_out"] == 60
    stars = dict(zip(table["review_id"], table["stars"], strict=True))
    assert all(stars[f"r{i}"] == 5 for i in range(30)) and all(
        pd.isna(stars[f"b{i}"]) for i in range(30)
    )


@pytest.mark.ray
def test_an_incremental_input_with_a_new_column_is_refused_or_the_output_rewritten(
    ray_local, tiny_model, tmp_path
):
    inputs_of(tmp_path / "in", 2, 30)
    first = score(
        [tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True, rows_per_file=30
    )
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    reviews = [{**r, "review_id": f"late-{r['review_id']}"} for r in make_reviews(10, seed=7)]
    late = write(tmp_path / "in" / "late.parquet", reviews, lang=pa.array(["en"] * 10))
    with pytest.raises(SentimentError) as err:
        score([tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True, rows_per_file=30)
    assert (
        f"(in the committed output) and {late} have different schemas (only the second has 'lang')"
        in str(err.value)
    )
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == before
    second = score(
        [tmp_path / "in"], tmp_path / "out", tiny_model, incremental=True, rows_per_file=30,
        union_schemas=True,
    )  # fmt: skip
    assert second["this_run"]["inputs"] == [str(late)]
    schemas = {pq.read_schema(p) for p in committed(tmp_path / "out")}
    assert len(schemas) == 1 and "lang" in schemas.pop().names  # one schema in the output
    frame = pl.scan_parquet(str(tmp_path / "out" / "*.parquet")).collect()  # no SchemaError
    assert frame.height == 70
    langs = dict(zip(frame["review_id"], frame["lang"], strict=True))
    assert langs["late-r0"] == "en" and langs["s0-r0"] is None
    kept = [e for e in second["files"] if e["inputs"][0]["path"] != str(late)]
    assert [e["rows"] for e in kept] == [e["rows"] for e in first["files"]]


@pytest.mark.ray
def test_the_output_keeps_the_inputs_columns_types_order_and_metadata(
    ray_local, tiny_model, tmp_path
):
    reviews = make_reviews(40)
    frame = pd.DataFrame(
        {
            "stars": pd.array([4] * 40, dtype="int16"),
            "text": [r["text"] for r in reviews],
            "review_id": [r["review_id"] for r in reviews],
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.cast(table.schema.set(1, pa.field("text", pa.large_string())))
    table = table.replace_schema_metadata({**table.schema.metadata, b"source": b"crm-export"})
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "a.parquet")
    score([tmp_path / "in"], tmp_path / "out", tiny_model)
    [out] = committed(tmp_path / "out")
    schema = pq.read_schema(out)
    assert schema.names == ["stars", "text", "review_id", *ADDED]
    source = pq.read_schema(tmp_path / "in" / "a.parquet")
    assert [schema.field(n).type for n in source.names] == source.types
    assert (
        source.field("text").type == pa.large_string() and source.field("stars").type == pa.int16()
    )
    assert schema.metadata[b"source"] == b"crm-export" and b"pandas" in schema.metadata
    back = pd.read_parquet(out)
    assert list(back.columns) == ["stars", "text", "review_id", *ADDED]
    assert back["stars"].dtype == "int16" and len(back) == 40


def read_all_ways(output: Path) -> dict[str, list[str]]:
    """The review ids each common reader finds in an output, as its users would read it."""
    glob = str(output / "**" / "*.parquet")
    return {
        "pandas": pd.read_parquet(output)["review_id"].tolist(),
        "pyarrow.dataset": ds.dataset(output, format="parquet").to_table()["review_id"].to_pylist(),
        "duckdb": [
            r[0] for r in duckdb.sql(f"SELECT review_id FROM read_parquet('{glob}')").fetchall()
        ],
        "polars **": pl.scan_parquet(glob).collect()["review_id"].to_list(),
        "polars *": pl.scan_parquet(str(output / "*.parquet")).collect()["review_id"].to_list(),
    }


@pytest.mark.ray
def test_readers_see_exactly_the_committed_rows_while_a_run_writes_and_after(
    ray_local, tiny_model, tmp_path, monkeypatch
):
    inputs_of(tmp_path / "in", 3, 40)
    score([tmp_path / "in"], tmp_path / "out", tiny_model, rows_per_file=40)
    first = ids(tmp_path / "out")
    assert all(sorted(v) == first for v in read_all_ways(tmp_path / "out").values())
    inputs_of(tmp_path / "in", 2, 40, prefix="t")  # the next run scores 200 rows

    # The next run stops just before its commit, with its files staged, until released.
    staged, release = threading.Event(), threading.Event()
    real_commit = OutputDir.commit

    def paused_commit(self, *args, **kwargs):
        staged.set()
        assert release.wait(120)
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(OutputDir, "commit", paused_commit)
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(
            score([tmp_path / "in"], tmp_path / "out", tiny_model, rows_per_file=40)
        )
    )
    thread.start()
    try:
        assert staged.wait(180), "the run did not reach its commit"
        in_staging = list((tmp_path / "out" / "_staging").rglob("*"))
        assert len([p for p in in_staging if p.is_file()]) == 5  # the run's files are there
        assert (tmp_path / "out" / "_LOCK").exists()
        for reader, found in read_all_ways(tmp_path / "out").items():
            assert sorted(found) == first, reader
    finally:
        release.set()
        thread.join(180)
    assert result["totals"]["rows_out"] == 200
    second = ids(tmp_path / "out")
    assert len(second) == 200 and len(set(second)) == 200
    assert all(sorted(v) == second for v in read_all_ways(tmp_path / "out").values())
    assert not (tmp_path / "out" / "_LOCK").exists()
