#!/usr/bin/env bash
# Several sweeps at once on one GPU machine without network, within a time budget.
#
#   bash benchmarks/gpu_sweep.sh EXPERIMENT[:JOBS] ...      e.g. convergence_tem:5 convergence_sem:4
#
# A tiny U-Net leaves a GPU mostly idle, so every experiment's sweep runs JOBS jobs at once
# (default 4) and all experiments run side by side. Each job folder is the sweep's usual one
# (sweep.dir of the experiment): finished jobs are skipped and unfinished ones resume, here or
# on the next machine. At BUDGET seconds (default 540) every sweep and its jobs get SIGINT
# (timeout signals the whole process group): the rounds already written are kept.
#
# Before, on a machine that reaches the package registries: `bash ../shared/gpu/wheels.sh`
# (wheels the GPU machine lacks into .whl/, the datasets into .data/, both git-ignored).
# With the device tool: carry [".whl", ".data"], command `bash benchmarks/gpu_sweep.sh ...`;
# the runs come back as $OUT/runs.tgz (results.json, config, selection.csv and logs of every
# job; no checkpoints): `tar xzf runs.tgz` in the project root puts them in place.
# TRAINER=cpu runs the same script on a CPU (a dry run).
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-540}
TRAINER=${TRAINER:-gpu}
OUT=${OUT:-$PWD/outputs/gpu_sweep}
mkdir -p "$OUT" logs
start=$SECONDS

if ! python3 -c "import hydra, segmentation_models_pytorch, albumentations, pooch" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/axal-site .whl/*.whl || { echo "no wheels in .whl/: see the header"; exit 1; }
  export PYTHONPATH=/tmp/axal-site${PYTHONPATH:+:$PYTHONPATH}
fi
export AXAL_DATA=${AXAL_DATA:-$PWD/.data} NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

(while sleep 15; do
  echo "$((SECONDS - start))s $(nvidia-smi --query-gpu=utilization.gpu,memory.used \
    --format=csv,noheader 2>/dev/null) load $(cut -d' ' -f1 /proc/loadavg)"
done) > "$OUT/gpu.log" 2>&1 &
monitor=$!

pids=()
for spec in "$@"; do
  exp=${spec%%:*}
  jobs=4
  [[ "$spec" == *:* ]] && jobs=${spec##*:}
  left=$((BUDGET - (SECONDS - start)))
  timeout -s INT -k 20 "$left" python3 sweep.py "experiment=$exp" "trainer=$TRAINER" \
    "sweep.jobs=$jobs" sweep.threads=1 logger=none > "logs/sweep-$exp.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
kill "$monitor" 2>/dev/null

echo "== after $((SECONDS - start)) s"
for spec in "$@"; do
  exp=${spec%%:*}
  echo "-- $exp"; grep -E "^sweep:" "logs/sweep-$exp.log" | tail -4
done
find results/runs -name results.json 2>/dev/null | wc -l | xargs echo "results.json under results/runs:"
cat logs/sweep-*.log > "$OUT/sweeps.log"
tar czf "$OUT/runs.tgz" --exclude='*.ckpt' --exclude='maps' results/runs
ls -la "$OUT"
