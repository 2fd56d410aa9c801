"""A gallery: photos down; across, each photo and then each style's stylization of it, labelled.

  python scripts/gallery.py data/photos/heldout --ckpt starry_night --ckpt the_scream -o docs/gallery/grid.jpg
"""

import argparse
from pathlib import Path

import torch

from impasto.artifacts import grid
from impasto.checkpoint import open_style
from impasto.errors import UserError, exit_on_user_error
from impasto.formats import IMAGE_SUFFIXES
from impasto.images import collect_files, load_image, resize_long_side, save_atomic, to_tensor
from impasto.inference import Stylizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("inputs", nargs="+", help="photos or folders, ideally never trained on")
    p.add_argument("--ckpt", action="append", required=True, help="a style, by name or file (repeat for several)")
    p.add_argument("-o", "--output", required=True, help="the grid, a .jpg or .png")
    p.add_argument("--size", type=int, default=512, help="long side each photo is stylized at (default 512)")
    p.add_argument("--tile", type=int, default=320, help="long side each picture is shown at (default 320)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args()
    with exit_on_user_error():
        output = Path(args.output)
        if output.exists() and not args.overwrite:
            raise UserError(f"{output} exists: pass --overwrite to replace it")
        photos = [to_tensor(resize_long_side(load_image(path, "photo"), args.size)).unsqueeze(0)
                  for path in collect_files(args.inputs, IMAGE_SUFFIXES)]
        styles = [open_style(ckpt) for ckpt in args.ckpt]
        stylizers = [Stylizer(net, torch.device("cpu"), None) for net, _ in styles]
        rows = [[photo] + [stylizer.image(photo) for stylizer in stylizers] for photo in photos]
        save_atomic(grid(rows, args.tile, labels=["photo", *(meta["style"] for _, meta in styles)]), output)
        print(f"{output}: {len(photos)} photos x {len(styles)} styles")


if __name__ == "__main__":
    main()
