#!/usr/bin/env bash
# Times `dspnet benchmark quality --quick` (both tasks, every default model and study) next to
# one full SASRec run on the same world, in the same session, and saves both to OUT/timing.json.
# The machine's speed moves from day to day, so the quick run's budget is a ratio to SASRec's.
#   benchmarks/quick_vs_sasrec.sh data/world benchmarks/results/quick_timing
set -euo pipefail
DATA=${1:?usage: $0 WORLD_FOLDER OUT_FOLDER}
OUT=${2:?usage: $0 WORLD_FOLDER OUT_FOLDER}
DSPNET=${DSPNET:-.venv/bin/dspnet}
mkdir -p "$OUT"
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=3
start=$(date +%s)
"$DSPNET" benchmark quality --data "$DATA" --quick --out "$OUT/quick" > "$OUT/quick.log" 2>&1
middle=$(date +%s)
"$DSPNET" benchmark quality --data "$DATA" --models sasrec --seeds 1 --studies "" --workers 1 \
    --out "$OUT/sasrec" > "$OUT/sasrec.log" 2>&1
end=$(date +%s)
python3 -c "import json, sys; q, s = $middle - $start, $end - $middle; print(json.dumps({
    'date': sys.argv[1], 'quick_seconds': q, 'one_sasrec_run_seconds': s,
    'ratio': round(q / s, 3)}))" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" | tee "$OUT/timing.json"
