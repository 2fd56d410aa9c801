"""Export a style, by the source and the output's suffix: a train.py Lightning checkpoint to a style file (after
stopping a run with Ctrl+C, say); one painting of a file of several to a file of its own; or a style to ONNX, for
onnxruntime and other runtimes (pip install -e '.[onnx]'):

  impasto-export outputs/starry_night/<run>/checkpoints/last.ckpt checkpoints/starry_night.safetensors
  impasto-export the_scream checkpoints/the_scream.safetensors   (or: FILE --painting the_scream)
  impasto-export checkpoints/starry_night.safetensors checkpoints/starry_night.onnx
"""

import argparse
from pathlib import Path

from ..errors import UserError, exit_on_user_error
from ..files import refuse_overwrite


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("source", help="a Lightning checkpoint of train.py (…/checkpoints/last.ckpt); a painting's name "
                                  "(one of a file of several); or for an .onnx output a style, by name or file")
    p.add_argument("output", help="the file to write: checkpoints/<style>.safetensors or <style>.onnx")
    p.add_argument("--painting", help="one painting of a file of several: write it alone")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args(argv)
    with exit_on_user_error():
        from ..lookup import find_style

        if args.output.lower().endswith(".onnx"):
            from ..onnx_style import export_onnx

            path, painting = find_style(args.source)
            exported = export_onnx(path, args.output, args.overwrite, args.painting or painting)
        elif not args.source.endswith(".ckpt"):  # a style: one painting of it, to a file of its own
            from ..style import extract, load_style, save_style

            path, painting = find_style(args.source)
            painting = args.painting or painting
            if painting is None:
                raise UserError(f"{args.source} is a style file: pass --painting NAME (or the painting's name alone as "
                                "the source) to write one of its paintings to a file of its own")
            target = Path(args.output).expanduser()
            refuse_overwrite(target, args.overwrite)
            exported = save_style(target, *extract(*load_style(path), painting))
        else:
            from ..style import export_lightning_checkpoint

            exported = export_lightning_checkpoint(args.source, args.output, args.overwrite)
        print(f"exported {exported}")


if __name__ == "__main__":
    main()
