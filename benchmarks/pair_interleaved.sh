#!/bin/bash
# The issue-4 recipe's 30-epoch wall time, tinycomp against PyTorch, with the two runs taking turns
# epoch by epoch on one machine, so that the host's speed drifting during the day falls on both alike.
# tinycomp is stopped by SIGTERM once its log shows the epoch (it checkpoints and resumes bitwise);
# PyTorch's side stops itself (torch_train_recipe.py --state --stop-after). Each side's training time is
# the wall_time_s of its log: imports and data loading are left out of both, each process's first step
# (kernels loaded from Numba's cache, oneDNN's warm-up) counts on both; the slice lines give the
# process times. Run it again, with the same code, to continue a stopped pair.
#
#   benchmarks/pair_interleaved.sh RUN_ROOT DATA_DIR [EPOCHS]
set -u
root=${1:?usage: pair_interleaved.sh RUN_ROOT DATA_DIR [EPOCHS]}
data=${2:?usage: pair_interleaved.sh RUN_ROOT DATA_DIR [EPOCHS]}
epochs=${3:-30}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$root"
tc="$root/tinycomp"
lines() { [ -f "$1" ] && wc -l < "$1" || echo 0; }
say() { echo "$(date -u +%FT%TZ) $*" | tee -a "$root/pair.log"; }
since() { echo "$(date +%s.%N) - $1" | bc; }   # seconds since a $(date +%s.%N) stamp
pid=
# stopped itself (SIGTERM, SIGINT): stop tinycomp too, after its checkpoint, so no run goes on alone
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for ((k = 1; k <= epochs; k++)); do
    if (( $(lines "$tc/log.jsonl") < k )); then
        resume=(); [ -f "$tc/last.npz" ] || [ -f "$tc/config.json" ] && resume=(--resume)
        t0=$(date +%s.%N)
        tinycomp train --model resnet20 --epochs "$epochs" --batch-size 128 --lr 0.2 --schedule onecycle \
            --pct-start 0.25 --momentum 0.9 --weight-decay 5e-4 --seed 0 --threads 2 --data-dir "$data" \
            --no-progress --out "$tc" "${resume[@]}" >> "$root/tinycomp.out" 2>&1 &
        pid=$!
        while kill -0 "$pid" 2>/dev/null && (( $(lines "$tc/log.jsonl") < k )); do sleep 0.5; done
        (( k < epochs )) && kill -TERM "$pid" 2>/dev/null
        wait "$pid"; rc=$?; pid=
        say "tinycomp epoch $k rc=$rc process $(since "$t0") s"
        if (( rc != 0 && rc != 143 )) || (( $(lines "$tc/log.jsonl") < k )); then
            say "tinycomp stopped before its epoch $k (rc=$rc); see $root/tinycomp.out"; exit 1
        fi
    fi
    if (( $(lines "$root/torch.jsonl") < k )); then
        t0=$(date +%s.%N)
        python "$here/torch_train_recipe.py" --data-dir "$data" --epochs "$epochs" --threads 2 \
            --log "$root/torch.jsonl" --state "$root/torch-state" --stop-after "$k" >> "$root/torch.out" 2>&1
        rc=$?
        say "torch epoch $k rc=$rc process $(since "$t0") s"
        if (( rc != 0 )) || (( $(lines "$root/torch.jsonl") < k )); then
            say "torch stopped before its epoch $k (rc=$rc); see $root/torch.out"; exit 1
        fi
    fi
done
python - "$tc/log.jsonl" "$root/torch.jsonl" <<'PY' | tee -a "$root/pair.log"
import json, sys
tc, pt = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
a, b = tc[-1]["wall_time_s"], pt[-1]["wall_time_s"]
print(f"tinycomp {a / 60:.1f} min, test {tc[-1]['test_acc']:.4f}; PyTorch {b / 60:.1f} min, "
      f"test {pt[-1]['test_acc']:.4f}; PyTorch / tinycomp = {b / a:.3f}")
PY
