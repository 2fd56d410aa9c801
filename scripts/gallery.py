"""A gallery: photos down; across, each photo and then each style's stylization of it, labelled; with --paintings,
each painting above its column (README's first picture).

  python scripts/gallery.py data/photos/heldout --style starry_night --style the_scream -o docs/gallery/grid.jpg
"""

import argparse
from pathlib import Path

import torch

from impasto.errors import exit_on_user_error
from impasto.files import refuse_overwrite
from impasto.formats import IMAGE_SUFFIXES
from impasto.images import collect_files, grid, load_image, resize_long_side, save_atomic, to_tensor
from impasto.inference import Stylizer
from impasto.style import painting_images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("inputs", nargs="+", help="photos or folders, ideally never trained on")
    p.add_argument("--style", action="append", required=True, help="a style, by name or file (repeat for several)")
    p.add_argument("-o", "--output", required=True, help="the grid, a .jpg or .png")
    p.add_argument("--size", type=int, default=512, help="long side each photo is stylized at (default 512)")
    p.add_argument("--tile", type=int, default=320, help="long side each picture is shown at (default 320)")
    p.add_argument("--paintings", action="store_true", help="a first row with each style's painting")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args()
    with exit_on_user_error():
        output = Path(args.output)
        refuse_overwrite(output, args.overwrite)
        photos = [to_tensor(resize_long_side(load_image(path, "photo"), args.size)).unsqueeze(0)
                  for path in collect_files(args.inputs, IMAGE_SUFFIXES)]
        stylizers = [Stylizer.from_style(style, "cpu", "fp32") for style in args.style]
        rows = [[photo] + [stylizer.image(photo) for stylizer in stylizers] for photo in photos]
        if args.paintings:  # a white tile above the photos' column
            first = [torch.ones(1, 3, args.tile, args.tile)]
            rows.insert(0, first + [to_tensor(load_image(painting_images(s.meta)[0], "painting")).unsqueeze(0)
                                    for s in stylizers])
        save_atomic(grid(rows, args.tile, labels=["photo", *(s.meta["style"] for s in stylizers)]), output)
        print(f"{output}: {len(photos)} photos x {len(stylizers)} styles")


if __name__ == "__main__":
    main()
