"""Assemble the 54 photos the shipped starry_night was trained on, on a Debian/Ubuntu machine without internet access
beyond its package mirror: the 19 embedded photos plus 35 photographic wallpapers from four Debian packages.

  python scripts/offline_photos.py data/offline_photos
  python train.py style=starry_night data=folder data.root=data/offline_photos data.max_zoom=2.0

Each wallpaper is resized to a shorter side of 512 px (training crops are 256 px, zoomed up to 2x). The packages'
licences (LGPL, GPL, CC-BY-SA) cover these images; they are training data here and are not shipped with impasto.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from impasto import ASSETS
from impasto.images import list_images

SHORT_SIDE = 512

PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
MATE = "usr/share/backgrounds/mate/nature/{}.jpg"
LOMIRI = "usr/share/backgrounds/{}.jpg"
WALLPAPERS = {  # Debian package -> files inside it
    "plasma-workspace-wallpapers": [PLASMA.format(n) for n in (
        "BytheWater", "ColdRipple", "ColorfulCups", "EveningGlow", "FallenLeaf", "Grey", "Kite", "OneStandsOut",
        "Path", "summer_1am")],
    "mate-backgrounds": [MATE.format(n) for n in (
        "Aqua", "Blinds", "Dune", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm", "TwoWings", "Wood",
        "YellowFlower")],
    "lomiri-wallpapers-16.04": [LOMIRI.format(n) for n in (
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
        "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "free_by_Peter_Nerlich",
        "friends_by_Aitzol_Berasategi", "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
        "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")],
    "lomiri-wallpapers-20.04": [LOMIRI.format(n) for n in ("Infinite-Sea_by_Aury88", "Kleiber_by_Lukas_Baubkus")],
}


def wallpaper_name(path: str) -> str:
    """wp_<the wallpaper's own name>.jpg, e.g. wp_Kite.jpg, wp_Bridge.jpg."""
    parts = Path(path).parts
    name = parts[-4] if "contents" in parts else Path(path).stem.split("_by_")[0]
    return f"wp_{name}.jpg"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", help="folder to create, e.g. data/offline_photos")
    args = p.parse_args()
    out = Path(args.out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out} exists and is not empty: choose a new folder")
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        sys.exit("error: this needs apt-get and dpkg-deb (Debian or Ubuntu): or train on any folder with data=folder")
    out.mkdir(parents=True, exist_ok=True)
    for photo in list_images(ASSETS / "photos"):
        shutil.copy2(photo, out / photo.name)
    with tempfile.TemporaryDirectory() as tmp:
        for package, files in WALLPAPERS.items():
            run = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob(f"{package}_*.deb"))
            if run.returncode != 0 or not debs:
                sys.exit(f"error: apt-get download {package} failed: {run.stderr.strip().splitlines()[-1:]}")
            unpacked = Path(tmp) / package
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
            for file in files:
                src = unpacked / file
                if not src.is_file():
                    sys.exit(f"error: {package} has no {file} (another version of the package?)")
                image = Image.open(src).convert("RGB")
                scale = SHORT_SIDE / min(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
                image.save(out / wallpaper_name(file), quality=92)
    print(f"{len(list(out.iterdir()))} photos in {out}")


if __name__ == "__main__":
    main()
