#!/usr/bin/env bash
# The project's GPU checks on one CUDA device, in stages that each fit a 10-minute slot:
#
#   bash benchmarks/gpu_checks.sh bench      pytest -m gpu; unlearn bench llm on llama-7b-shape (bf16, LoRA 16,
#                                            gradient checkpointing, 2 x 512 tokens)   4.6 min on an H200
#   bash benchmarks/gpu_checks.sh validate   unlearn validate --model llama-7b-shape --task markov  7.8 min
#   bash benchmarks/gpu_checks.sh ceiling    GA alone for CEILING_STEPS (1000) steps with the final-norm ceiling
#                                            C(t) + log V and its predicted growth at every 10th step, in
#                                            bf16-mixed as the validate stage ran (float32 weights: at lr 2e-6
#                                            bf16 weights would round the head's updates away). Estimated from
#                                            the validate log: GA 0.40 s/step with evaluations every 5 steps, so
#                                            ~6.5 min for 1000 steps plus ~1 min of set-up and memorising on an
#                                            H200; bf16-mixed needs ~100-113 GiB, more than an H100's 80 GB, so
#                                            on an H100 the run is refused before any work (PRECISION=bf16 runs
#                                            it there, with that rounding)
#   bash benchmarks/gpu_checks.sh perf       pytest -m gpu (the torchrun/nccl test included); unlearn bench llm on
#                                            llama-7b-shape at TOKENS (4096,16384,65536) tokens per step of
#                                            2048-token sequences for PERF_CASES (LoRA NPO cached, NPO+KL adapter,
#                                            full fine-tuning), log-probs in chunks of 4096 positions, and the
#                                            log-prob step's peak memory both ways; LoRA NPO at its best batch
#                                            with cut-cross-entropy's fused log-probs (when the gpu extra is
#                                            there: see .whl below); then, if LoRA NPO's best MFU is under 40%, a
#                                            profile of one step at its best batch. Sized at 10 cases of ~40 s
#                                            plus ~2 min of tests: ~9 min on an H100, not yet run
#   bash benchmarks/gpu_checks.sh tofu       unlearn run under the TOFU protocol's shape: llama-7b-shape, NPO+RT,
#                                            LoRA 32, bf16-mixed, gradient checkpointing, --reference auto, 2
#                                            epochs of a generated tofu-like forget10 (400 questions; retain90
#                                            3,600), evaluated on 64 of each; run.json (peak memory, seconds,
#                                            the reference chosen) lands in tofu-run-MODEL-DEVICE.json. Estimated
#                                            ~5 min on an H100, not yet run
#
# Results land in benchmarks/results/ as llm-MODEL-DEVICE.json (llm-perf-MODEL-DEVICE.json for the perf stage), validate-MODEL-DEVICE/ (validate-ceiling-MODEL-
# DEVICE/ for the ceiling stage) and
# gpu-checks-STAGE-MODEL-DEVICE.log (the device, versions, every command and its output) and, when $OUT is
# set, there too: the log as it is written (so that a run killed at its time limit still shows how far it
# got), the results at the end. A validate stage run again on the same machine resumes from its checkpoint.
# MODEL, DEVICE, STEPS, CEILING_STEPS, PRECISION (ceiling and tofu stages), EPOCHS (tofu stage), TOKENS, SEQ_LEN, PERF_CASES (perf stage),
# MEMORISE_EPOCHS, RESULTS and PYTHON override the defaults (e.g. MODEL=tiny DEVICE=cpu PRECISION=float32
# TOKENS=64,128 SEQ_LEN=32 RESULTS=/tmp/r to try it on a CPU). The package is used from this checkout
# (PYTHONPATH), so a machine with torch, transformers and peft needs no install; wheels in .whl/ are installed
# into /tmp/site first. For the gpu extra: `pip download --no-deps -d .whl cut-cross-entropy==25.1.1` (a
# pure-Python wheel; the GPU machine has Triton), and .whl, which git ignores, carried to the GPU machine with the
# checkout. The exit status is that of the first failing step.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-}
case $stage in bench|validate|ceiling|perf|tofu) ;; *) echo "usage: gpu_checks.sh bench|validate|ceiling|perf|tofu" >&2
  exit 2 ;; esac
MODEL=${MODEL:-llama-7b-shape}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-300}
CEILING_STEPS=${CEILING_STEPS:-1000}
PRECISION=${PRECISION:-bf16-mixed}
TOKENS=${TOKENS:-4096,16384,65536}
SEQ_LEN=${SEQ_LEN:-2048}
PERF_CASES=${PERF_CASES:-npo.cached,npo+kl.adapter,full.npo.cached}
MEMORISE_EPOCHS=${MEMORISE_EPOCHS:-150}
EPOCHS=${EPOCHS:-2}
RESULTS=${RESULTS:-benchmarks/results}
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; fi
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
if compgen -G ".whl/*.whl" > /dev/null; then  # carried wheels, installed where PYTHONPATH looks first
  run "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit
fi
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
  perf)
    if [ "$DEVICE" = cuda ]; then
      run "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_distributed.py
    fi
    files=("$RESULTS/llm-perf-$tag.json" "$RESULTS/llm-perf-fused-$tag.json" "$RESULTS/llm-perf-profile-$tag.json")
    rm -f "${files[@]}"  # the follow-ups read this run's sweep, never an earlier one's
    common=(--model "$MODEL" --dtype bf16 --lora 16 --gradient-checkpointing --seq-len "$SEQ_LEN"
            --set eval_questions=0 --device "$DEVICE")
    run unlearn bench llm "${common[@]}" --logprob-chunk 4096 --tokens-per-step "$TOKENS" --cases "$PERF_CASES" \
      --set logprob_seq_len="$SEQ_LEN" --out "${files[0]}"
    [ -z "${OUT:-}" ] || cp "${files[0]}" "$OUT/" 2>/dev/null
    # LoRA NPO's best batch (0 when the sweep wrote none), and 1 when its MFU there is under the 40% goal
    read -r best under < <("$PY" -c "import json, sys; d = json.load(open(sys.argv[1]))
n = d.get('npo.cached.best_tokens_per_step') or 0; print(n, int(n > 0 and d['npo.cached.best_mfu'] < 0.4))" \
      "${files[0]}" 2>/dev/null || echo 0 0)
    if [ "$best" = 0 ]; then
      echo "no best batch for npo.cached: the fused and profiled steps are skipped" | logged
    elif ! why=$("$PY" -c "import cut_cross_entropy" 2>&1); then  # not carried, or no Triton
      echo "the fused step is skipped: import cut_cross_entropy says ${why##*$'\n'}" | logged
    else  # the gpu extra's fused kernel at the best batch of the chunked sweep (its memory: pytest above)
      run unlearn bench llm "${common[@]}" --fused-logprobs --cases npo.cached --tokens-per-step "$best" \
        --set logprob_seq_len=0 --out "${files[1]}"
      [ -z "${OUT:-}" ] || cp "${files[1]}" "$OUT/" 2>/dev/null
    fi
    if [ "$under" = 1 ]; then  # under the 40% goal: where does a step at its best batch spend its time?
      run unlearn bench llm "${common[@]}" --logprob-chunk 4096 --cases npo.cached --batch-size $((best / SEQ_LEN)) \
        --profile --set logprob_seq_len=0 --out "${files[2]}"
    fi
    ;;
  tofu)
    scratch=${TMPDIR:-/tmp}/tofu-run-$tag
    files=("$RESULTS/tofu-run-$tag.json")
    rm -rf "$scratch"
    run unlearn data tofu-like --out "$scratch/data"
    if run unlearn run --model "$MODEL" --task tofu --data "$scratch/data" --split forget10 --method NPO+RT \
        --epochs "$EPOCHS" --lora 32 --precision "$PRECISION" --gradient-checkpointing --reference auto \
        --eval-limit 64 --device "$DEVICE" --out "$scratch/run"; then
      cp "$scratch/run/run.json" "${files[0]}"
    fi
    ;;
  ceiling)
    # GA's record (its forget log-likelihoods, forget_ceiling and forget_head_growth at every evaluation) reaches
    # $OUT as soon as it is written, then the report
    scratch=${TMPDIR:-/tmp}/validate-ceiling-$tag
    files=("$RESULTS/validate-ceiling-$tag/validate.json" "$RESULTS/validate-ceiling-$tag/validate.png")
    [ -z "${OUT:-}" ] || { while sleep 10; do cp "$scratch"/validate.ckpt/*.json "$OUT/" 2>/dev/null; done & }
    if run unlearn validate --model "$MODEL" --task markov --methods GA --device "$DEVICE" \
        --precision "$PRECISION" --steps "$CEILING_STEPS" --set eval_every=10 \
        --memorise-epochs "$MEMORISE_EPOCHS" --out "$scratch"; then
      mkdir -p "$RESULTS/validate-ceiling-$tag"
      cp "$scratch/validate.json" "$scratch/validate.png" "$RESULTS/validate-ceiling-$tag/"
    fi
    [ -z "${OUT:-}" ] || { kill %1 2>/dev/null; cp "$scratch"/validate.ckpt/*.json "$OUT/" 2>/dev/null; }
    ;;
esac
