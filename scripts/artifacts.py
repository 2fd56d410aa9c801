"""Artifacts across sizes: python scripts/artifacts.py --ckpt checkpoints/starry_night.safetensors photos/"""

from impasto.artifacts import main

if __name__ == "__main__":
    main()
