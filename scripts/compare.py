"""Fast vs slow: python scripts/compare.py --ckpt checkpoints/starry_night.safetensors photos/*.jpg"""

from impasto.compare import main

if __name__ == "__main__":
    main()
