"""A local web page to stylize photos: `python -m impasto.web` (pip install 'impasto[web]')."""
