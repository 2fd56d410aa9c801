"""Export a style, by the output's suffix: a train.py Lightning checkpoint to a style file (after stopping a run with
Ctrl+C, say), or a style file to ONNX, for onnxruntime and other runtimes (pip install -e '.[onnx]'):

  python scripts/export.py outputs/starry_night/<run>/checkpoints/last.ckpt checkpoints/starry_night.safetensors
  python scripts/export.py checkpoints/starry_night.safetensors checkpoints/starry_night.onnx
"""

import argparse

from impasto.errors import exit_on_user_error


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("source", help="a Lightning checkpoint of train.py (…/checkpoints/last.ckpt), or for an .onnx "
                                  "output a style file (checkpoints/<style>.safetensors)")
    p.add_argument("output", help="the file to write: checkpoints/<style>.safetensors or <style>.onnx")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args()
    with exit_on_user_error():
        if args.output.lower().endswith(".onnx"):
            from impasto.onnx_style import export_onnx as export
        else:
            from impasto.checkpoint import export_lightning_checkpoint as export

        print(f"exported {export(args.source, args.output, args.overwrite)}")


if __name__ == "__main__":
    main()
