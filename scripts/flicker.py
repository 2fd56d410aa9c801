"""How much a style flickers on video: python scripts/flicker.py clip.mp4 --ckpt A.safetensors [B.safetensors ...]"""

from impasto.flicker import main

if __name__ == "__main__":
    main()
