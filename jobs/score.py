"""Ray job entrypoint: score Parquet reviews and commit the predictions.

    python jobs/score.py /shared/reviews --model latest --store /shared/models --incremental

Options are `ScoreConfig` fields (`sentiment.config.to_argv`); bare arguments are inputs.
It makes the library call a local `sentiment-jobs score` makes; it never goes through
the CLI, whose --address (RAY_ADDRESS, which Ray sets for a job's driver) means "submit".
Prints one JSON line on success; `error: ...` on stderr and exit status 1 on a user
error (a bad input file, a missing model).
"""

import json
import logging
import sys

from sentiment.config import ScoreConfig, SentimentError, from_argv
from sentiment.score_job import run_scoring


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = from_argv(ScoreConfig, argv)
        if not cfg.inputs:
            raise SentimentError("no inputs: give Parquet files, directories, globs or URIs")
        result = run_scoring(cfg)
    except SentimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    m = result.manifest
    summary = {
        "output": result.output,
        "run_id": m["run_id"],
        "mode": m["mode"],
        "model_id": m["model_id"],
        **{k: v for k, v in m["this_run"].items() if k != "inputs"},
        "skipped": len(m["skipped"]),
        "files": len(m["files"]),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
