#!/usr/bin/env bash
# MovieLens-100K, one `dspnet benchmark quality` run per (model, seed), two runs at a time.
#
# Why one command per run instead of `--seeds 5 --workers 2`: each run writes its own results
# folder as soon as it ends, so a long protocol (RecBole's 200-epoch cap) keeps what finished if
# it is interrupted, and a run can be repeated alone. Each process gets one TensorFlow thread
# (TensorFlow's own TF_NUM_*_THREADS variables), as the benchmark's workers do, so two runs share
# the two cores without oversubscribing them.
#
# Usage: benchmarks/ml100k_seeds.sh OUT_DIR [EPOCHS] [SEEDS] [MODELS]
#   OUT_DIR  parent folder; each run writes OUT_DIR/<model>_seed<k>/ and a log beside it
#   EPOCHS   epoch cap (default 200, RecBole's epochs_max in ../shared/anchors)
#   SEEDS    space-separated seeds (default "0 1 2 3 4")
#   MODELS   space-separated models (default "dspnet sasrec")
# Environment: DSPNET (default .venv/bin/dspnet), PARALLEL (default 2).
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
out=$1
epochs=${2:-200}
seeds=${3:-"0 1 2 3 4"}
models=${4:-"dspnet sasrec"}
dspnet=${DSPNET:-.venv/bin/dspnet}
parallel=${PARALLEL:-2}
[[ -x "$dspnet" ]] || { echo "ml100k_seeds.sh: $dspnet not found (run make setup)" >&2; exit 1; }
mkdir -p "$out"

jobs=()
for seed in $seeds; do
  for model in $models; do
    jobs+=("$model $seed")
  done
done

run_one() {
  local model=$1 seed=$2
  local dir="$OUT/${model}_seed${seed}"
  if [[ -f "$dir/results.json" ]]; then
    echo "skip $model seed $seed: $dir/results.json exists"
    return 0
  fi
  echo "$(date +%T) start $model seed $seed"
  TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 "$DSPNET" benchmark quality \
    --data movielens-100k --models "$model" --studies "" --seeds 1 --first-seed "$seed" \
    --item-loss softmax --window-stride 10 --epochs "$EPOCHS" --patience 10 --workers 1 \
    --out "$dir" > "$OUT/${model}_seed${seed}.log" 2>&1
  echo "$(date +%T) done  $model seed $seed (exit $?)"
}
export -f run_one
export OUT=$out EPOCHS=$epochs DSPNET=$dspnet

printf '%s\n' "${jobs[@]}" | xargs -P "$parallel" -L 1 bash -c 'run_one $0 $1'
