"""Fast vs slow: python scripts/compare.py --ckpt starry_night photos/*.jpg"""

from impasto.compare import main

if __name__ == "__main__":
    main()
