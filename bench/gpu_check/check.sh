#!/bin/bash
# The GPU device check, one script for one call of the device tool (run from the repo root there):
#     python bench/gpu_check/prep.py            # here, once: writes .gpu/ (git-ignored)
#     bash bench/gpu_check/check.sh OUTDIR      # there, with .gpu carried; results in OUTDIR/results.tgz
# In priority order, each step under its own time limit and the whole under BUDGET seconds:
#   xdev     DupMAEEncoder fp32 on the device, 16 docs (compare with the CPU's: same weights)
#   nopt-s1  stage 1 from the backbone (3 epochs, BM25 negatives file), fp32 training on the device
#   dtypes   bench/encode_dtypes.py on that model: fp32 / fp16 / bf16 encoding speed and rankings
#   s2       stage 2 (negatives mined on the device by the stage-1 model), then the same from
#   pt80     the recipe's DupMAE pre-training (80 steps) and
#   ptlong   a longer one (PTLONG_STEPS, bf16 autocast); each model's SciFact-test runs (ev.py)
#   torchrun a 10-step torchrun (NCCL) fine-tuning in bf16
# Knobs for a CPU dry run (see lib.sh): DEV=cpu FT_EXTRA="--max-steps 2" PTLONG_STEPS=.. EV_LIMIT=..
BUDGET=${BUDGET:-470}; PTLONG_STEPS=${PTLONG_STEPS:-1000}
source "$(dirname "$0")/lib.sh"
convert
step xdev 60 $PY bench/gpu_check/xdev.py $W/backbone $DEV $W/xdev_$DEV.npz
s1 $W/backbone nopt
step dtypes 150 $PY bench/encode_dtypes.py --encoder $W/nopt-s1 --device $DEV --dtypes ${DTYPES:-fp32,fp16,bf16} --max-length 256 --runs-dir $W/runs/dtypes --json $W/dtypes.json ${DT_EXTRA:-}
ev nopt-s1
s2 nopt ${S2_EXTRA:-}; ev nopt-s2
step pt80 90 $PY $PT --model-name-or-path $W/backbone --max-steps 80 --learning-rate 2e-5 --output-dir $W/pt80 $PT_EXTRA
s1 $W/pt80 pt80; ev pt80-s1; s2 pt80 ${S2_EXTRA:-}; ev pt80-s2
step ptlong 150 $PY $PT --model-name-or-path $W/backbone --max-steps $PTLONG_STEPS --learning-rate 5e-5 --precision ${PTLONG_PRECISION:-bf16} --output-dir $W/ptlong $PT_EXTRA
s1 $W/ptlong ptlong; ev ptlong-s1; s2 ptlong ${S2_EXTRA:-}; ev ptlong-s2
step torchrun 60 $PY -m torch.distributed.run --nproc_per_node 1 $FT --model-name-or-path $W/nopt-s1 --stage 1 --negatives .gpu/bm25-negatives.tsv --max-steps 10 --precision ${TR_PRECISION:-bf16} --output-dir $W/torchrun
echo "done t=$((SECONDS - T0))"; pack; ls -la $O
