"""Artifacts across sizes: python scripts/artifacts.py --ckpt starry_night photos/"""

from impasto.artifacts import main

if __name__ == "__main__":
    main()
