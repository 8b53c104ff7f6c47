#!/usr/bin/env bash
# Whole-model benchmark in one device run: builds and saves a random
# Llama-3.2-1B-shaped model with transformers and times its generate
# (hf_baseline.py), times Arbor's CudaBackend on the same weights and GPU
# (model_bench), then merges both into one table (report.py), printed last.
#
# Here:   cmake --build build --target model_bench -j2
#         tools/device_bundle.sh build '^model_bench$'
# There, from the repository root (device run with carry [".device"]):
#         bench/model/run.sh
# Env: OUT (results, default ./model-bench-out), MODEL_DIR (default
#      /tmp/llama1b), BATCHES (1,8,64,256), PROMPT_TOKENS (128),
#      DECODE_TOKENS (128), PREFILL_TOKENS (8192), REPEATS (3).
# Writes OUT/model_bench.md, arbor.json, hf.json, arbor.log, hf.log,
# config.json (six files: the device run returns at most eight).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./model-bench-out}
MODEL_DIR=${MODEL_DIR:-/tmp/llama1b}
FLAGS=(--batches "${BATCHES:-1,8,64,256}" --prompt_tokens "${PROMPT_TOKENS:-128}"
       --decode_tokens "${DECODE_TOKENS:-128}" --prefill_tokens "${PREFILL_TOKENS:-8192}"
       --repeats "${REPEATS:-3}")
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH="$PWD/.device/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$OUT"
start=$SECONDS

# Each step has its own time limit, so that one that hangs leaves the others
# their time (the whole run must stay well inside the device call's limit).
echo "run.sh: transformers baseline (saves the model to $MODEL_DIR)"
timeout 270 python3 bench/model/hf_baseline.py --save "$MODEL_DIR" "${FLAGS[@]}" \
  --json_out "$OUT/hf.json" 2>&1 | tee "$OUT/hf.log"
hf_rc=${PIPESTATUS[0]}
echo "run.sh: hf_baseline exit $hf_rc after $((SECONDS - start)) s"
cp "$MODEL_DIR/config.json" "$OUT/config.json" 2>/dev/null || true

arbor_rc=1
if [[ -f "$MODEL_DIR/config.json" ]]; then
  echo "run.sh: Arbor model_bench"
  timeout 200 .device/bin/model_bench --model "$MODEL_DIR" "${FLAGS[@]}" \
    --json_out "$OUT/arbor.json" 2>&1 | tee "$OUT/arbor.log"
  arbor_rc=${PIPESTATUS[0]}
  echo "run.sh: model_bench exit $arbor_rc after $((SECONDS - start)) s"
fi

echo
python3 bench/model/report.py --arbor "$OUT/arbor.json" --hf "$OUT/hf.json" \
  --out "$OUT/model_bench.md"
[[ $hf_rc -eq 0 && $arbor_rc -eq 0 ]]
