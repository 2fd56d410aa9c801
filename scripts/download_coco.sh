#!/usr/bin/env bash
# Download and unpack COCO 2014 train (82,783 images, ~13 GB), the set Johnson et al. trained on.
#   scripts/download_coco.sh [DATA_DIR]      (default: data/coco; train.py looks in data/coco/train2014)
# Needs internet, curl or wget, and unzip. Resumes a partial download.
set -euo pipefail
dest="${1:-data/coco}"
url="http://images.cocodataset.org/zips/train2014.zip"
mkdir -p "$dest"
zip="$dest/train2014.zip"
if [ -d "$dest/train2014" ] && [ -n "$(ls -A "$dest/train2014" 2>/dev/null)" ]; then
    echo "$dest/train2014 already holds images; nothing to do" >&2
    exit 0
fi
command -v unzip >/dev/null || { echo "error: unzip is not installed (apt-get install unzip)" >&2; exit 2; }
if command -v curl >/dev/null; then
    curl -L --fail -C - -o "$zip" "$url"
elif command -v wget >/dev/null; then
    wget -c -O "$zip" "$url"
else
    echo "error: neither curl nor wget is installed" >&2; exit 2
fi
unzip -q "$zip" -d "$dest"
echo "COCO train2014: $(find "$dest/train2014" -name '*.jpg' | wc -l) images in $dest/train2014" >&2
echo "train with: python train.py style=starry_night data=coco data.root=$dest/train2014" >&2
