"""Split a folder of photos into the shipped styles' training set and the held-out photos they are judged on:

  python scripts/split_photos.py ~/photos data/photos
  python train.py style=the_scream data=folder data.root=data/photos/train
  impasto-compare --style checkpoints/the_scream.safetensors data/photos/heldout

Every EVERY-th photo in name order (the first, the 21st, ...) goes to heldout/, the rest to train/: of 824 photos,
42 are held out and 782 trained on. Copies, never moves; an existing destination is refused.
"""

import argparse
import shutil
import sys
from pathlib import Path

from impasto.errors import UserError, exit_on_user_error
from impasto.images import list_images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="a folder of photos (searched recursively)")
    p.add_argument("destination", help="a new folder: gets train/ and heldout/")
    p.add_argument("--every", type=int, default=20, help="hold out one photo in EVERY (default 20)")
    args = p.parse_args()
    with exit_on_user_error():
        source, destination = Path(args.source).expanduser(), Path(args.destination).expanduser()
        photos = list_images(source) if source.is_dir() else []
        if not photos:
            raise UserError(f"{source} is not a folder of photos")
        if args.every < 2:
            raise UserError(f"--every must be 2 or more, got {args.every}")
        if destination.exists():
            raise UserError(f"{destination} exists: give a new folder")
        for part in ("train", "heldout"):
            (destination / part).mkdir(parents=True)
        for i, photo in enumerate(photos):
            shutil.copy2(photo, destination / ("heldout" if i % args.every == 0 else "train") / photo.name)
        held = len(photos[:: args.every])
        print(f"{len(photos) - held} photos in {destination / 'train'}, {held} in {destination / 'heldout'}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
