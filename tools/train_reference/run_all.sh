#!/usr/bin/env bash
# Trains and evaluates the bundled reference models on the GPU machine.
#   tools/train_reference/run_all.sh          # full run: writes models/policy, models/prm
#   tools/train_reference/run_all.sh smoke    # tiny end-to-end check: writes work/smoke/*
# Logs, metrics and the strong checkpoint go to tools/train_reference/work/ (git-ignored).
set -euo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
mode=${1:-full}
work=tools/train_reference/work
mkdir -p "$work"
d=tools/train_reference
if [ "$mode" = smoke ]; then
  policy_args="--steps 1500 --eval-every 100 --candidates 1"
  prm_base_args="--steps 300"
  prm_args="--problems 300 --samples 4 --steps 100"
  eval_args="--limit 100 --n 4"
  models_out=$work/smoke
else
  policy_args="${POLICY_ARGS:-}"
  prm_base_args="${PRM_BASE_ARGS:---steps 3000}"
  prm_args="${PRM_ARGS:-}"
  eval_args="${EVAL_ARGS:-}"
  models_out=models
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if [ -z "${SKIP_POLICY:-}" ]; then
  python3 $d/train_policy.py --out $models_out/policy --strong-out $work/strong \
    --metrics $work/policy_metrics.json $policy_args 2>&1 | tee $work/policy.log
elif [ ! -f $work/strong/model.safetensors ]; then
  # Keep the committed policy; retrain only the strong model (same recipe and seed, no snapshots).
  python3 $d/train_policy.py --strong-only --strong-out $work/strong \
    --metrics $work/strong_metrics.json $policy_args 2>&1 | tee $work/strong.log
fi
# The PRM starts from the fully trained 4-layer policy-like model. PRM_BASE_LAYERS=6 trains a
# deeper base (intermediate 512) to convergence first and starts from that instead (tried; it did
# not help, see docs/MODELS.md).
prm_init=$work/strong
if [ -n "${PRM_BASE_LAYERS:-}" ]; then
  python3 $d/train_policy.py --strong-only --layers "$PRM_BASE_LAYERS" --intermediate 512 \
    --strong-out $work/prm_base --metrics $work/prm_base_metrics.json $prm_base_args 2>&1 \
    | tee $work/prm_base.log
  prm_init=$work/prm_base
fi
python3 $d/train_prm.py --policy $models_out/policy --init $prm_init --out $models_out/prm \
  --metrics $work/prm_metrics.json $prm_args 2>&1 | tee $work/prm.log
python3 $d/eval_reference.py --policy $models_out/policy --prm $models_out/prm \
  --json $work/eval.json --dump $work/eval_samples.json $eval_args 2>&1 | tee $work/eval.log
ls -la $models_out/policy $models_out/prm
