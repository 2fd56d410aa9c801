"""Export a style from a Lightning checkpoint of train.py, e.g. after stopping a run with Ctrl+C:

  python scripts/export.py outputs/starry_night/<run>/checkpoints/last.ckpt checkpoints/starry_night.safetensors
"""

import argparse

from impasto.errors import exit_on_user_error


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a Lightning checkpoint written by train.py (…/checkpoints/last.ckpt)")
    p.add_argument("output", help="the style checkpoint to write (checkpoints/<style>.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args()
    with exit_on_user_error():
        from impasto.checkpoint import export_lightning_checkpoint

        path = export_lightning_checkpoint(args.ckpt, args.output, args.overwrite)
        print(f"exported {path}")


if __name__ == "__main__":
    main()
