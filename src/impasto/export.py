"""Export a style, by the output's suffix: a train.py Lightning checkpoint to a style file (after stopping a run with
Ctrl+C, say), or a style file to ONNX, for onnxruntime and other runtimes (pip install -e '.[onnx]'):

  python scripts/export.py outputs/starry_night/<run>/checkpoints/last.ckpt checkpoints/starry_night.safetensors
  python scripts/export.py checkpoints/starry_night.safetensors checkpoints/starry_night.onnx
"""

import argparse

from .errors import exit_on_user_error


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("source", help="a Lightning checkpoint of train.py (…/checkpoints/last.ckpt), or for an .onnx "
                                  "output a style, by name or file (checkpoints/<style>.safetensors)")
    p.add_argument("output", help="the file to write: checkpoints/<style>.safetensors or <style>.onnx")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args(argv)
    with exit_on_user_error():
        if args.output.lower().endswith(".onnx"):
            from .formats import find_style
            from .onnx_style import export_onnx

            exported = export_onnx(find_style(args.source)[0], args.output, args.overwrite)
        else:
            from .checkpoint import export_lightning_checkpoint

            exported = export_lightning_checkpoint(args.source, args.output, args.overwrite)
        print(f"exported {exported}")
