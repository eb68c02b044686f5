#!/usr/bin/env bash
# The project's GPU checks on one CUDA device, in two stages that each fit a 10-minute slot:
#
#   bash benchmarks/gpu_checks.sh bench      pytest -m gpu; unlearn bench llm on llama-7b-shape (bf16, LoRA 16,
#                                            gradient checkpointing, 2 x 512 tokens)   4.6 min on an H200
#   bash benchmarks/gpu_checks.sh validate   unlearn validate --model llama-7b-shape --task markov  7.8 min
#
# Results land in benchmarks/results/ as llm-MODEL-DEVICE.json, validate-MODEL-DEVICE/ and
# gpu-checks-STAGE-MODEL-DEVICE.log (the device, versions, every command and its output) and, when $OUT is
# set, there too: the log as it is written (so that a run killed at its time limit still shows how far it
# got), the results at the end. A validate stage run again on the same machine resumes from its checkpoint.
# MODEL, DEVICE, STEPS, MEMORISE_EPOCHS, RESULTS and PYTHON override the defaults (e.g. MODEL=tiny DEVICE=cpu
# RESULTS=/tmp/r to try it on a CPU). The package is used from this checkout (PYTHONPATH), so a machine with
# torch, transformers and peft needs no install. The exit status is that of the first failing step.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-}
case $stage in bench|validate) ;; *) echo "usage: gpu_checks.sh bench|validate" >&2; exit 2 ;; esac
MODEL=${MODEL:-llama-7b-shape}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-300}
MEMORISE_EPOCHS=${MEMORISE_EPOCHS:-150}
RESULTS=${RESULTS:-benchmarks/results}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
tag=$MODEL-$DEVICE
log=$RESULTS/gpu-checks-$stage-$tag.log
files=()
status=0
mkdir -p "$RESULTS"
: > "$log"
[ -z "${OUT:-}" ] || : > "$OUT/${log##*/}"

unlearn() { "$PY" -m recipes.cli "$@"; }
logged() { tee -a "$log" ${OUT:+"$OUT/${log##*/}"}; }  # stdin to the terminal and the log(s)
run() {  # log the command, run it with its output in the log; a failure is remembered, not fatal
  echo "\$ $*" | logged
  "$@" 2>&1 | logged
  local rc=$?
  [ "$rc" -eq 0 ] || { echo "(exit status $rc)" | logged; [ "$status" -ne 0 ] || status=$rc; }
  return "$rc"
}
finish() {
  if [ -n "${OUT:-}" ]; then
    for f in "${files[@]}"; do [ -e "$f" ] && cp "$f" "$OUT/"; done
  fi
  exit "$status"
}
trap finish EXIT

date -u | logged
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; } 2>&1 | logged
run "$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())" || exit

case $stage in
  bench)
    if [ "$DEVICE" = cuda ]; then run "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py; fi
    files=("$RESULTS/llm-$tag.json")
    run unlearn bench llm --model "$MODEL" --dtype bf16 --lora 16 --gradient-checkpointing --seq-len 512 \
      --device "$DEVICE" --out "${files[0]}"
    ;;
  validate)
    # the memorised checkpoint (27 GB at 7B in bf16-mixed: float32 weights) stays out of the repository
    scratch=${TMPDIR:-/tmp}/validate-$tag
    files=("$RESULTS/validate-$tag/validate.json" "$RESULTS/validate-$tag/validate.png")
    # each finished stage's record (validate.ckpt/*.json: the memorised curve, a method's measurements) reaches
    # $OUT as it is written, so that a run stopped at its time limit keeps the methods it finished
    [ -z "${OUT:-}" ] || { while sleep 10; do cp "$scratch"/validate.ckpt/*.json "$OUT/" 2>/dev/null; done & }
    if run unlearn validate --model "$MODEL" --task markov --device "$DEVICE" --steps "$STEPS" \
        --memorise-epochs "$MEMORISE_EPOCHS" --out "$scratch"; then
      mkdir -p "$RESULTS/validate-$tag"
      cp "$scratch/validate.json" "$scratch/validate.png" "$RESULTS/validate-$tag/"
    fi
    [ -z "${OUT:-}" ] || { kill %1 2>/dev/null; cp "$scratch"/validate.ckpt/*.json "$OUT/" 2>/dev/null; }
    ;;
esac
