#!/usr/bin/env bash
# The pre-training study of issue 34 (item 2) on one GPU, in one command, from the repository root:
#
#     bash bench/gpu_pretraining_study.sh [more `bench/recipe_study.py pretraining` flags, e.g. --stages 1,2]
#
# NOT run by the tests (it needs a GPU and about a minute per arm: 12 arms, ~12-20 min at stage 1; every arm
# is resumable, so a stopped run continues where it stopped). Writes eval/pretraining-selection.md; with $OUT
# set (a device session), also copies the report and each arm's study.json there (small files: carried back
# into $WORK/pretraining/<arm>/ they let a later run read those arms back instead of training them again).
#
# The arms (fine-tuning stage 1, the recipe's defaults and seed, bf16): no pre-training (`none`, always run);
# steps 80/200/400/800 at lr 2e-5 and 1e-4; then, at 800 steps and lr 1e-4 (the paper's lr), one change at a
# time: masks 0.15/0.15 (against the default 0.3/0.5), bag-of-words loss weight 1 (against the preset's 0.1),
# and the corpus SciFact plus the NFCorpus documents (nfcorpus-orig-preprocessed: 3,395 documents, lower-cased,
# stop words removed; the only NFCorpus text in the shared data). Order: the most informative arms first.
set -euo pipefail

PYTHON=${PYTHON:-python}
DATA=${DUPMAE_SHARED_DATA:-../shared/data}
NF="$DATA/nfcorpus-orig-preprocessed"
WORK=${WORK:-encoders/study}
if [ ! -e "$NF/corpus.jsonl.gz" ] && [ ! -e "$NF/corpus.jsonl" ]; then
    echo "error: $NF: no NFCorpus documents (fix: set DUPMAE_SHARED_DATA to the shared data folder)" >&2
    exit 2
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

"$PYTHON" bench/recipe_study.py pretraining --work "$WORK" --report eval/pretraining-selection.md \
    --precision bf16 --eval-precision bf16 \
    --variant steps=80,lr=2e-5 \
    --variant steps=800,lr=1e-4 \
    --variant steps=800,lr=1e-4,bow_weight=1 \
    --variant steps=800,lr=1e-4,enc_mask=0.15,dec_mask=0.15 \
    --variant "steps=800,lr=1e-4,corpus=default+$NF" \
    --variant steps=800,lr=2e-5 \
    --variant steps=200,lr=2e-5 --variant steps=400,lr=2e-5 \
    --variant steps=80,lr=1e-4 --variant steps=200,lr=1e-4 --variant steps=400,lr=1e-4 \
    "$@"

if [ -n "${OUT:-}" ]; then
    cp eval/pretraining-selection.md "$OUT/"
    (cd "$WORK" && find pretraining -name study.json) | while read -r f; do
        mkdir -p "$OUT/$(dirname "$f")" && cp "$WORK/$f" "$OUT/$f"
    done
fi
