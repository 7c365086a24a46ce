#!/usr/bin/env bash
# Several sweeps at once on one GPU machine without network, within a time budget.
#
#   bash benchmarks/gpu_sweep.sh EXPERIMENT[:JOBS[:SEEDS[:STRATEGIES]]] ...
#   e.g. convergence_tem:5 tem_tile:9:1-3 sem_tile:2:0-9:full
#
# SEEDS (e.g. 1-3 or 1,4,7) narrows the experiment's seed grid, so that the jobs that start
# are the ones that can finish: sweeps take seeds in order, every strategy of a seed at once.
# STRATEGIES (e.g. full or random,bald) narrows its strategy grid the same way.
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
# job; no checkpoints, no shared round 0s): `tar xzf runs.tgz` in the project root puts them
# in place. The last checkpoint of up to CKPTS (default 5) unfinished runs, those with most
# rounds first, comes back as $OUT/ckpt-N.tgz (about 10 MB each): untar them the same way and
# those runs resume from their last round on any machine instead of starting over.
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
n=0
for spec in "$@"; do
  n=$((n + 1))
  IFS=: read -r exp jobs seeds strategies <<< "$spec"
  extra=()
  if [[ -n "$seeds" ]]; then
    [[ "$seeds" == *-* ]] && seeds=$(seq -s, "${seeds%-*}" "${seeds#*-}")
    extra+=("sweep.grid.seed=[$seeds]")
  fi
  [[ -n "$strategies" ]] && extra+=("sweep.grid.strategy=[$strategies]")
  left=$((BUDGET - (SECONDS - start)))
  timeout -s INT -k 20 "$left" python3 sweep.py "experiment=$exp" "trainer=$TRAINER" \
    "sweep.jobs=${jobs:-4}" sweep.threads=1 logger=none "${extra[@]}" > "logs/sweep-$n-$exp.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
kill "$monitor" 2>/dev/null

echo "== after $((SECONDS - start)) s"
n=0
for spec in "$@"; do
  n=$((n + 1))
  echo "-- $spec"; grep -E "^sweep:" "logs/sweep-$n-${spec%%:*}.log" | tail -4
done
find results/runs -name results.json 2>/dev/null | wc -l | xargs echo "results.json under results/runs:"
cat logs/sweep-[0-9]*-*.log > "$OUT/sweeps.log"
tar czf "$OUT/runs.tgz" --exclude='*.ckpt' --exclude='maps' --exclude=run.lock --exclude=first_rounds results/runs
# Unfinished runs with a checkpoint, most rounds first: their last checkpoint, one file each.
python3 - "${CKPTS:-5}" <<'PY' | while read -r n ckpt; do tar czf "$OUT/ckpt-$n.tgz" "$ckpt"; done
import json, sys
from pathlib import Path
left = []
for f in Path("results/runs").rglob("results.json"):
    r = json.loads(f.read_text())
    ckpts = sorted((f.parent / "checkpoints").glob("round-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not r.get("finished") and ckpts:
        left.append((len(r.get("rounds", [])), str(ckpts[-1])))
for n, (_, ckpt) in enumerate(sorted(left, reverse=True)[: int(sys.argv[1])]):
    print(n, ckpt)
PY
ls -la "$OUT"
