"""impasto: fast feed-forward style transfer (Johnson et al. 2016) trained through a frozen VGG19."""

from pathlib import Path

__version__ = "0.1.0"

ASSETS = Path(__file__).parent / "assets"  # shipped style image and photos; sources in assets/SOURCES.md
