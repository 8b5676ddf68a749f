#!/usr/bin/env bash
# The main job end to end on a local Ray (no cluster): prepare -> train -> score -> evaluate.
#
#   bash jobs/quickstart.sh             # the Multi-Domain Sentiment Dataset, downloaded once;
#                                       # offline: the 200 labelled sentences shipped with gensim
#   bash jobs/quickstart.sh ../shared/datasets/amazon-multi-domain   # or your own reviews
#
# Installs into .venv first. Everything it writes stays under demo/ (models in demo/home,
# the downloaded archive in demo/home/cache/downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install
export SENTIMENT_JOBS_HOME="$PWD/demo/home"
sj=.venv/bin/sentiment-jobs
corpus=()

if [ $# -gt 0 ]; then
    $sj prepare "$1" --output demo/dataset --overwrite
    expect="on $1"
elif $sj prepare --download amazon-multi-domain --output demo/dataset --overwrite; then
    expect="on the Multi-Domain Sentiment Dataset (8,000 Amazon reviews): expect about 89–90 % test accuracy"
    # The archive's unlabeled reviews, where it has them: more text for word2vec.
    if [ -d demo/dataset.unlabeled ]; then corpus=(--w2v-corpus demo/dataset.unlabeled); fi
else
    sample="$(.venv/bin/python -c 'from gensim.test.utils import datapath; print(datapath("pang_lee_polarity.cor"))')"
    echo "quick start: the download failed (above); using gensim's 200 labelled sentences instead"
    $sj prepare "$sample" --output demo/dataset --overwrite
    expect="on gensim's 200 labelled sentences: expect about 50 % test accuracy, a coin flip (far too few to learn from; the downloaded reviews give about 89–90 %)"
fi
echo "quick start $expect"

$sj train --data demo/dataset --model gru "${corpus[@]}"
$sj score demo/dataset --output demo/scored
$sj evaluate --model latest --data demo/dataset
echo "quick start $expect"
echo "predictions: demo/scored (see demo/scored/_manifest.json); model: demo/home/models"
