# Shared by check.sh and sweep.sh (sourced, run from the repo root on the device machine): the
# environment, the time-boxed `step` runner, the packing of results, and the fine-tuning, pre-training
# and evaluation commands with the recipe's settings.
# Knobs for a CPU dry run: DEV=cpu FT_EXTRA="--max-steps 2" PT_EXTRA=... EV_LIMIT=..
set -u
O=${1:-$OUT}; W=${W:-/tmp/w}; mkdir -p $W/runs $O
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}; DEV=${DEV:-cuda}; T0=$SECONDS
FT_EXTRA=${FT_EXTRA:-}; PT_EXTRA=${PT_EXTRA:-}; LENS=${LENS:-128,256}
pack() {  # two archives (the device tool returns files of at most 16 MiB each)
  tar czf $O/models.tgz -C $W runs/models 2>/dev/null
  tar czf $O/results.tgz -C $W runs/dtypes $(cd $W && ls *.log *.json *.npz 2>/dev/null) 2>/dev/null; }
step() {  # step NAME LIMIT CMD...: run CMD under min(LIMIT, time left of BUDGET), log to $W/NAME.log
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
# s1 START NAME [finetune flags]: stage 1, 3 epochs, BM25 negatives file -> $W/NAME-s1
s1() { local start=$1 name=$2; shift 2; step $name-s1 120 $PY $FT --model-name-or-path $start --stage 1 --negatives .gpu/bm25-negatives.tsv --sparse-calibration 0.02 --num-train-epochs 3 --output-dir $W/$name-s1 $FT_EXTRA "$@"; }
# s2 NAME [finetune flags]: stage 2, 1 epoch, negatives mined on the device by $W/NAME-s1 -> $W/NAME-s2
s2() { local name=$1; shift; step $name-s2 120 $PY $FT --model-name-or-path $W/$name-s1 --stage 2 --num-train-epochs 1 --output-dir $W/$name-s2 $FT_EXTRA "$@"; }
# ev MODEL: exhaustive SciFact-test runs of $W/MODEL at each of LENS -> $W/runs/models/MODEL.L*.{dense,impact,hybrid}.trec
ev() { step ev-$1 90 $PY bench/gpu_check/ev.py $W/$1 $W/runs/models $LENS; }
# convert: the fp16-rounded backbone of .gpu/ back to an fp32 checkpoint at $W/backbone
convert() { step convert 60 $PY -c "
import shutil, sys; from safetensors.torch import load_file, save_file
shutil.copytree('.gpu/backbone16', '$W/backbone', dirs_exist_ok=True)
sd = load_file('.gpu/backbone16/model.safetensors')
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}, '$W/backbone/model.safetensors', metadata={'format': 'pt'})"; }
nvidia-smi -L 2>/dev/null; $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
