#!/usr/bin/env bash
# Every GPU measurement the README quotes, in one go, each benchmark's JSON line into OUT (default gpu_results/):
#   scripts/gpu_checks.sh [PHOTOS_DIR [CLIP]]
# PHOTOS_DIR: training photos for bench.py train's real-data rows; CLIP: a video for bench.py stylize's end-to-end row.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_results}
mkdir -p "$out"
photos=${1:-src/impasto/assets/photos}
clip=${2:-}
run() {  # name, then the command; a failure is recorded and the next check still runs
    local name=$1; shift
    echo "== $name: $*" >&2
    "$@" > "$out/$name.json" 2> "$out/$name.log" || echo "{\"failed\": \"$name\", \"rc\": $?}" >> "$out/$name.json"
}
run stylize python scripts/bench.py stylize --ckpt checkpoints/starry_night.safetensors ${clip:+--video "$clip"}
run train python scripts/bench.py train --photos "$photos" --workers 12 --warmup 20 --iters 50
run train_compile python scripts/bench.py train --compile --batches 64,128 --warmup 30 --iters 50 --quality-steps 0
run optimize python scripts/bench.py optimize
python -m pytest -q -m gpu > "$out/pytest_gpu.txt" 2>&1
tail -n 1 "$out"/*.json "$out/pytest_gpu.txt"
