"""Export a style to ONNX, for onnxruntime and other runtimes (dynamic batch, height and width):

  python scripts/export_onnx.py checkpoints/starry_night.safetensors checkpoints/starry_night.onnx
"""

import argparse

from impasto.errors import exit_on_user_error


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("style", help="a style checkpoint (checkpoints/<style>.safetensors)")
    p.add_argument("output", help="the ONNX model to write (checkpoints/<style>.onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args()
    with exit_on_user_error():
        from impasto.onnx_style import export_onnx

        path = export_onnx(args.style, args.output, args.overwrite)
        print(f"exported {path}")


if __name__ == "__main__":
    main()
