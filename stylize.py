"""Stylize photos: python stylize.py --ckpt checkpoints/starry_night.safetensors photo.jpg -o out.jpg"""

from impasto.stylize import main

if __name__ == "__main__":
    main()
