#!/usr/bin/env bash
# Train styles with the shipped styles' recipe (conf/experiment/shipped.yaml), then score each against Gatys on
# photos it never saw:
#   scripts/train_styles.sh PHOTOS STEPS STYLE [STYLE ...]
# PHOTOS holds train/ and heldout/ (python3 scripts/split_photos.py SOURCE PHOTOS). Each style trains STEPS steps
# (trainer.max_time caps it at MINUTES, default 30), exports OUT/styles/<style>.safetensors, and impasto-compare scores
# it on the first COMPARE_PHOTOS (default 8) held-out photos against Gatys (OUT/compare/; COMPARE, default
# "--size 512 --steps 50,100,500", sets its options).
# Extra train.py overrides: RECIPE="key=value ...". OUT defaults to style_runs/. A style that fails goes on to the
# next; the script then exits 1, naming them.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
    echo "usage: scripts/train_styles.sh PHOTOS STEPS STYLE [STYLE ...]" >&2
    exit 2
fi
photos=$1 steps=$2
shift 2
out=${OUT:-style_runs}
minutes=$(printf %02d "${MINUTES:-30}")
mkdir -p "$out/styles" "$out/compare" "$out/logs" "$out/heldout"
failed=""
for photo in $(ls "$photos/heldout" | head -n "${COMPARE_PHOTOS:-8}"); do
    cp "$photos/heldout/$photo" "$out/heldout/"
done
for style in "$@"; do
    echo "== $style: $steps steps" >&2
    start=$(date +%s)
    # shellcheck disable=SC2086  # RECIPE is a list of overrides
    python3 train.py experiment=shipped style="$style" data.root="$photos/train" trainer.max_steps="$steps" \
        +trainer.max_time="00:00:$minutes:00" export.dir="$out/styles" export.overwrite=true log.preview_every_n_steps=1000 \
        hydra.run.dir="$out/runs/$style" ${RECIPE:-} > "$out/logs/$style.train.log" 2>&1 \
        || { echo "$style: training failed, see $out/logs/$style.train.log" >&2; failed="$failed $style"; continue; }
    echo "{\"style\": \"$style\", \"train_seconds\": $(( $(date +%s) - start ))}" >> "$out/train_times.jsonl"
    # shellcheck disable=SC2086  # COMPARE is a list of options
    python3 -m impasto.cli.compare --style "$out/styles/$style.safetensors" "$out/heldout" \
        ${COMPARE:---size 512 --steps 50,100,500} --out-dir "$out/compare/$style" > "$out/logs/$style.compare.log" 2>&1 \
        || { echo "$style: compare failed, see $out/logs/$style.compare.log" >&2; failed="$failed $style"; }
    tail -n 8 "$out/logs/$style.compare.log" >&2
done
rm -rf "$out/runs"/*/checkpoints  # the Lightning checkpoints (22 MB each): the exports are what comes back
[ -z "$failed" ] || { echo "failed:$failed" >&2; exit 1; }
