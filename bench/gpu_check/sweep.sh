#!/bin/bash
# The second GPU check (one device call; .gpu carried, see prep.py): the fine-tuning study of
# --part-loss-weight, and the encoding peer re-timed after the GPU pooling change.
#     bash bench/gpu_check/sweep.sh OUTDIR
# In priority order, each step time-boxed, the whole under BUDGET seconds; models evaluated at LENS
# (default 128, the recipe's) on SciFact test by ev.py:
#   base      stage 1 (3 epochs) from the backbone, the paper's combined loss: the in-run control
#   part1     the same with --part-loss-weight 1, then its stage 2 (part1-s2)
#   enc-*     bench/encode_dtypes.py bf16 at batch 128 vs the HF [CLS] peer, tokeniser threads off / on
#   part1g8   --part-loss-weight 1 with group size 8 (7 BM25 negatives per query instead of 1)
#   pt80p1    the recipe's DupMAE pre-training (80 steps), then stage 1 with --part-loss-weight 1
#   part03    --part-loss-weight 0.3
# PHASE=2 (the follow-up call, after phase 1 found part-loss + group 8 best): the same at the CPU
# recipe's 1 epoch with groups 8 / 4 / 2 (g8e1, g4e1, g2e1), the pre-training ablation at the best
# setting (pt80 then pt80g8), and stage 2 after part1g8 (re-trained: phase 1's models are gone).
BUDGET=${BUDGET:-480}; LENS=${LENS:-128}
source "$(dirname "$0")/lib.sh"
convert
if [ "${PHASE:-1}" = 2 ]; then
  for g in 8 4 2; do s1 $W/backbone g${g}e1 --part-loss-weight 1 --group-size $g --num-train-epochs 1; ev g${g}e1-s1; done
  step pt80 60 $PY $PT --model-name-or-path $W/backbone --max-steps 80 --learning-rate 2e-5 --output-dir $W/pt80 $PT_EXTRA
  s1 $W/pt80 pt80g8 --part-loss-weight 1 --group-size 8; ev pt80g8-s1
  s1 $W/backbone part1g8 --part-loss-weight 1 --group-size 8; s2 part1g8 --part-loss-weight 1 --group-size 8; ev part1g8-s2
  echo "done t=$((SECONDS - T0))"; pack; ls -la $O; exit 0
fi
s1 $W/backbone base; ev base-s1
s1 $W/backbone part1 --part-loss-weight 1; ev part1-s1
s2 part1 --part-loss-weight 1; ev part1-s2
ENC="$PY bench/encode_dtypes.py --encoder $W/part1-s1 --device $DEV --dtypes bf16 --batch-size 128 --max-length 256 ${DT_EXTRA:-}"
step enc-tokpar-off 60 $ENC --json $W/enc-tokpar-off.json
step enc-tokpar-on 60 env TOKENIZERS_PARALLELISM=true $ENC --json $W/enc-tokpar-on.json
s1 $W/backbone part1g8 --part-loss-weight 1 --group-size 8; ev part1g8-s1
step pt80 60 $PY $PT --model-name-or-path $W/backbone --max-steps 80 --learning-rate 2e-5 --output-dir $W/pt80 $PT_EXTRA
s1 $W/pt80 pt80p1 --part-loss-weight 1; ev pt80p1-s1
s1 $W/backbone part03 --part-loss-weight 0.3; ev part03-s1
echo "done t=$((SECONDS - T0))"; pack; ls -la $O
