"""Ray job entrypoint: train a GRU classifier from `--field value` options.

    python jobs/train.py --data /shared/reviews --model.variant grub --epochs 6

Options are `TrainConfig` fields (`sentiment.config.to_argv`). It makes the library call
a local `sentiment-jobs train` makes; it never goes through the CLI, whose --address
(RAY_ADDRESS, which Ray sets for a job's driver) means "submit a job".
Prints one JSON line on success; `error: ...` on stderr and exit status 1 on a user error.
"""

import json
import logging
import sys

from sentiment.config import SentimentError, TrainConfig, from_argv
from sentiment.trainer import run_training


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("gensim").setLevel(logging.WARNING)  # it logs each word2vec step
    try:
        cfg = from_argv(TrainConfig, argv)
        result = run_training(cfg)
    except SentimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    metrics = result.metrics
    accuracy = {s: metrics[s]["accuracy"] for s in ("train", "val", "test") if metrics.get(s)}
    summary = {"model_id": result.model_id, "model_dir": result.model_dir, "accuracy": accuracy}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
