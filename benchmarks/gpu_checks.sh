#!/usr/bin/env bash
# The project's GPU checks on one CUDA device, in two stages that each fit a 10-minute slot:
#
#   bash benchmarks/gpu_checks.sh bench      pytest -m gpu; unlearn bench llm on llama-7b-shape (bf16, LoRA 16,
#                                            gradient checkpointing, 2 x 512 tokens)        ~4 min on an H200
#   bash benchmarks/gpu_checks.sh validate   unlearn validate --model llama-7b-shape --task markov  ~6 min
#
# Results land in benchmarks/results/ (llm-7b-gpu.json, validate-7b/, gpu-checks-*.log with the device and
# every command) and, when $OUT is set, are copied there too. MODEL, DEVICE, STEPS, MEMORISE_EPOCHS, RESULTS
# and PYTHON override the defaults (e.g. MODEL=tiny DEVICE=cpu to try it on a CPU). The package is used from
# this checkout (PYTHONPATH), so a machine with torch, transformers and peft needs no install.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: gpu_checks.sh bench|validate}
MODEL=${MODEL:-llama-7b-shape}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-200}
MEMORISE_EPOCHS=${MEMORISE_EPOCHS:-150}
RESULTS=${RESULTS:-benchmarks/results}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
unlearn() { "$PY" -m unlearn.cli "$@"; }
log=$RESULTS/gpu-checks-$stage.log
mkdir -p "$RESULTS"

run() {  # echo the command into the log, then run it with its output in the log
  echo "\$ $*" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
} > "$log" 2>&1
cat "$log"

case $stage in
  bench)
    [ "$DEVICE" = cuda ] && run "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
    run unlearn bench llm --model "$MODEL" --dtype bf16 --lora 16 --gradient-checkpointing --seq-len 512 \
      --device "$DEVICE" --out "$RESULTS/llm-7b-gpu.json"
    files=("$RESULTS/llm-7b-gpu.json")
    ;;
  validate)
    scratch=${TMPDIR:-/tmp}/validate-7b  # the memorised checkpoint (13 GB at 7B) stays out of the repository
    run unlearn validate --model "$MODEL" --task markov --device "$DEVICE" --steps "$STEPS" \
      --memorise-epochs "$MEMORISE_EPOCHS" --out "$scratch"
    mkdir -p "$RESULTS/validate-7b"
    cp "$scratch/validate.json" "$scratch/validate.png" "$RESULTS/validate-7b/"
    files=("$RESULTS/validate-7b/validate.json" "$RESULTS/validate-7b/validate.png")
    ;;
  *) echo "unknown stage $stage (bench or validate)" >&2; exit 2 ;;
esac

if [ -n "${OUT:-}" ]; then
  cp "$log" "${files[@]}" "$OUT/"
fi
