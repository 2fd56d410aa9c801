#!/usr/bin/env bash
# The GPU measurements the README quotes, each benchmark's JSON line into OUT (default gpu_results/), each check
# under its own time limit so that a lent GPU's few minutes are spent on what was asked:
#   PHOTOS=DIR CLIP=FILE scripts/gpu_checks.sh [CHECK ...]
# CHECKs, in the order given (default: all but train_compile):
#   stylize        bench.py stylize: fp32, bf16 + channels_last, compiled, CUDA graphs at 512², 1080p, 4K (CLIP: a
#                  video's end-to-end frames/s)
#   train          bench.py train: train.py's own step at batch 16 and 64, synthetic and on PHOTOS, and the fp32
#                  against fast-path loss after 200 steps
#   train_compile  the same with --compile, at batch 64 and 128
#   gatys          bench.py gatys: Gatys 512², 1,000 L-BFGS steps, eager and CUDA-graphed
#   gpu_tests      pytest -m gpu
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_results}
mkdir -p "$out"
photos=${PHOTOS:-src/impasto/assets/photos}
clip=${CLIP:-}
run() {  # name, time limit in seconds, then the command; a failure or a timeout is recorded, the next check runs
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s): $*" >&2
    timeout "$limit" "$@" > "$out/$name.json" 2> "$out/$name.log"
    local rc=$?
    [ $rc -eq 0 ] || echo "{\"failed\": \"$name\", \"rc\": $rc}" >> "$out/$name.json"
    tail -n 1 "$out/$name.json" >&2
}
for check in "${@:-stylize train gatys gpu_tests}"; do
    for name in $check; do
        case $name in
            stylize) run stylize 240 python3 scripts/bench.py stylize --style starry_night \
                         ${clip:+--video "$clip"} ;;
            train) run train 240 python3 scripts/bench.py train --batches 16,64 --photos "$photos" --workers 12 \
                       --warmup 20 --iters 50 --quality-steps 200 ;;
            train_compile) run train_compile 300 python3 scripts/bench.py train --compile --batches 64,128 --warmup 30 \
                               --iters 50 --quality-steps 0 ;;
            gatys) run gatys 150 python3 scripts/bench.py gatys ;;
            gpu_tests) run gpu_tests 120 python3 -m pytest -q -m gpu ;;
            *) echo "unknown check $name: stylize, train, train_compile, gatys, gpu_tests" >&2; exit 2 ;;
        esac
    done
done
