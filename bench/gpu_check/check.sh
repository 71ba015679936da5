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
# Knobs for a CPU dry run: DEV=cpu FT_EXTRA="--max-steps 2" PT_EXTRA=... PTLONG_STEPS=.. EV_LIMIT=..
set -u
O=${1:-$OUT}; W=${W:-/tmp/w}; mkdir -p $W/runs $O
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}; DEV=${DEV:-cuda}; BUDGET=${BUDGET:-470}; T0=$SECONDS
FT_EXTRA=${FT_EXTRA:-}; PT_EXTRA=${PT_EXTRA:-}; PTLONG_STEPS=${PTLONG_STEPS:-1000}; LENS=${LENS:-128,256}
pack() {  # two archives (the device tool returns files of at most 16 MiB each)
  tar czf $O/models.tgz -C $W runs/models 2>/dev/null
  tar czf $O/results.tgz -C $W runs/dtypes $(cd $W && ls *.log *.json *.npz 2>/dev/null) 2>/dev/null; }
step() {
  local name=$1 lim=$2; shift 2; local l=$((BUDGET - (SECONDS - T0)))
  if [ $l -lt 15 ]; then echo "SKIP $name (no time left)"; return 1; fi
  [ $lim -gt $l ] && lim=$l
  echo "=== $name (limit ${lim}s) at t=$((SECONDS - T0))"; local s=$SECONDS
  timeout $lim "$@" > $W/$name.log 2>&1; local rc=$?
  echo "=== $name rc=$rc wall=$((SECONDS - s))s"; grep -E "train_runtime|\{'loss|\"seconds\"|\"dtype\"|Error|error|xdev" $W/$name.log | tail -n 6
  pack; return $rc
}
FT="-m dupmae_ir.finetune --group-size 2 --batch-size 16 --learning-rate 5e-5 --head-learning-rate 1e-3 --doc-max-length 128 --query-max-length 32 --mine-depth 50 --overwrite-output-dir --save-steps 1000000000 --logging-steps 10 --disable-tqdm"
PT="-m dupmae_ir.pretrain --batch-size 16 --max-seq-length 128 --head-learning-rate 1e-3 --overwrite-output-dir --save-steps 1000000000 --logging-steps 10 --disable-tqdm --cache-dir $W/ptcache"
s1() { step $2-s1 120 $PY $FT --model-name-or-path $1 --stage 1 --negatives .gpu/bm25-negatives.tsv --sparse-calibration 0.02 --num-train-epochs 3 --output-dir $W/$2-s1 $FT_EXTRA; }
s2() { step $1-s2 120 $PY $FT --model-name-or-path $W/$1-s1 --stage 2 --num-train-epochs 1 --output-dir $W/$1-s2 $FT_EXTRA ${S2_EXTRA:-}; }
ev() { step ev-$1 90 $PY bench/gpu_check/ev.py $W/$1 $W/runs/models $LENS; }

nvidia-smi -L 2>/dev/null; $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
step convert 60 $PY -c "
import shutil, sys; from safetensors.torch import load_file, save_file
shutil.copytree('.gpu/backbone16', '$W/backbone', dirs_exist_ok=True)
sd = load_file('.gpu/backbone16/model.safetensors')
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}, '$W/backbone/model.safetensors', metadata={'format': 'pt'})"
step xdev 60 $PY bench/gpu_check/xdev.py $W/backbone $DEV $W/xdev_$DEV.npz
s1 $W/backbone nopt
step dtypes 150 $PY bench/encode_dtypes.py --encoder $W/nopt-s1 --device $DEV --dtypes ${DTYPES:-fp32,fp16,bf16} --max-length 256 --runs-dir $W/runs/dtypes --json $W/dtypes.json ${DT_EXTRA:-}
ev nopt-s1
s2 nopt; ev nopt-s2
step pt80 90 $PY $PT --model-name-or-path $W/backbone --max-steps 80 --learning-rate 2e-5 --output-dir $W/pt80 $PT_EXTRA
s1 $W/pt80 pt80; ev pt80-s1; s2 pt80; ev pt80-s2
step ptlong 150 $PY $PT --model-name-or-path $W/backbone --max-steps $PTLONG_STEPS --learning-rate 5e-5 --precision ${PTLONG_PRECISION:-bf16} --output-dir $W/ptlong $PT_EXTRA
s1 $W/ptlong ptlong; ev ptlong-s1; s2 ptlong; ev ptlong-s2
step torchrun 60 $PY -m torch.distributed.run --nproc_per_node 1 $FT --model-name-or-path $W/nopt-s1 --stage 1 --negatives .gpu/bm25-negatives.tsv --max-steps 10 --precision ${TR_PRECISION:-bf16} --output-dir $W/torchrun
echo "done t=$((SECONDS - T0))"; pack; ls -la $O
