#!/usr/bin/env bash
# The main job end to end on a local Ray (no cluster): prepare -> train -> score -> evaluate.
#
#   bash jobs/quickstart.sh             # 200 labelled review sentences shipped with gensim
#   bash jobs/quickstart.sh ../shared/datasets/amazon-multi-domain   # or your own reviews
#
# Installs into .venv first. Everything it writes stays under demo/ (models in demo/home).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install
export SENTIMENT_JOBS_HOME="$PWD/demo/home"
sj=.venv/bin/sentiment-jobs
source="${1:-$(.venv/bin/python -c 'from gensim.test.utils import datapath; print(datapath("pang_lee_polarity.cor"))')}"

$sj prepare "$source" --output demo/dataset --overwrite
$sj train --data demo/dataset --model gru
$sj score demo/dataset --output demo/scored
$sj evaluate --model latest --data demo/dataset
echo "predictions: demo/scored (see demo/scored/_manifest.json); model: demo/home/models"
