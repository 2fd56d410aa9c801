"""Export a style: python scripts/export.py SOURCE OUTPUT (a Lightning checkpoint to .safetensors, or a style to
.onnx); --help says more."""

from impasto.export import main

if __name__ == "__main__":
    main()
