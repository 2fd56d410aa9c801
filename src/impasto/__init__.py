"""impasto: fast feed-forward style transfer (Johnson et al. 2016) trained through a frozen VGG19."""

__version__ = "0.1.0"
