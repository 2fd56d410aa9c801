"""Stylize photos: python stylize.py --style starry_night photo.jpg -o out.jpg"""

from impasto.cli.stylize import main

if __name__ == "__main__":
    main()
