"""The shape of `score`'s output: how many files a collection becomes, and how long many
small inputs take, whole process (the CLI as users run it, a local Ray started by it).

    .venv/bin/python tests/benchmarks/bench_output.py [--million]

Cases (resampled real reviews, row groups of 1,000; the model of bench_score.py):
40 inputs of 5,000 rows; 10,000 one-row inputs; with --million, 200 inputs of 5,000 rows.
Writes a section of RESULTS.md: files written, rows per file, manifest size, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_score import model_dir
from common import REPO, git_rev, prepared_amazon, write_section

from sentiment.datasets import read_prepared


def make_inputs(directory: Path, files: int, rows: int, seed: int = 0) -> None:
    table = read_prepared(prepared_amazon(), columns=["review_id", "text"])
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    for k in range(files):
        part = table.take(pa.array(rng.integers(0, table.num_rows, rows)))
        part = part.set_column(0, "review_id", pa.array([f"f{k}-{i}" for i in range(rows)]))
        pq.write_table(part, directory / f"part-{k:05d}.parquet", row_group_size=1_000)


def run_score(inputs: Path, output: Path, model: Path, home: Path) -> dict:
    env = {**os.environ, "SENTIMENT_JOBS_HOME": str(home)}
    cmd = [str(REPO / ".venv/bin/sentiment-jobs"), "score", str(inputs), "--output", str(output)]
    start = time.perf_counter()
    subprocess.run([*cmd, "--model", str(model)], env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    files = sorted(output.glob("*.parquet"))
    rows = [pq.read_metadata(f).num_rows for f in files]
    manifest = output / "_manifest.json"
    assert json.loads(manifest.read_text())["totals"]["rows_out"] == sum(rows)
    return {
        "seconds": seconds,
        "files": len(files),
        "rows": sum(rows),
        "largest": max(rows),
        "smallest": min(rows),
        "manifest_kb": manifest.stat().st_size / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--million", action="store_true", help="also 200 inputs of 5,000 rows")
    args = parser.parse_args()
    model = model_dir()
    cases = [("40 inputs × 5,000 rows", 40, 5_000), ("10,000 inputs × 1 row", 10_000, 1)]
    if args.million:
        cases.append(("200 inputs × 5,000 rows (1,000,000)", 200, 5_000))
    lines = [
        "| input | output files | rows per file (largest / smallest) | manifest | whole process |",
        "|---|---:|---|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-output-") as tmp:
        for k, (label, files, rows) in enumerate(cases):
            inputs, output = Path(tmp) / f"in{k}", Path(tmp) / f"out{k}"
            make_inputs(inputs, files, rows)
            got = run_score(inputs, output, model, Path(tmp) / "home")
            print(label, got, flush=True)
            lines.append(
                f"| {label} | {got['files']} | {got['largest']:,} / {got['smallest']:,} | "
                f"{got['manifest_kb']:,.0f} KB | {got['seconds']:.0f} s |"
            )
    body = "\n".join(
        [
            f"`.venv/bin/python tests/benchmarks/bench_output.py{' --million' if args.million else ''}`"
            f" at {git_rev()}: `sentiment-jobs score DIR --output OUT --model M` as a whole "
            "process (local Ray started by the command, default `--rows-per-file 50000`), over "
            "resampled real reviews in row groups of 1,000.",
            "",
            *lines,
            "",
            "Before (issue 17, the landed main of 2026-12-01): 40 × 5,000 rows gave 200 files "
            "of 1,000 rows; 10,000 one-row inputs gave 10,000 files, a 5.1 MB manifest, 726 s.",
        ]
    )
    write_section("Output files (bench_output.py)", body)


if __name__ == "__main__":
    main()
