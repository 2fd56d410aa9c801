"""The Hydra command lines: `impasto-train` and `impasto-optimize` once installed, `python train.py` and
`python scripts/optimize.py` in a checkout. Their configs ship inside the package (impasto/conf)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .config import CONF_DIR, rewrite_style_override
from .errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _train(cfg: DictConfig) -> None:
    from .train import train

    with exit_on_user_error():
        train(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="optimize")
def _optimize(cfg: DictConfig) -> None:
    from .baseline import run

    with exit_on_user_error():
        run(cfg, Path(HydraConfig.get().runtime.output_dir))


def _run(hydra_main) -> None:
    with exit_on_user_error():
        sys.argv = rewrite_style_override(sys.argv)
    hydra_main()


def train() -> None:
    """Train a style: impasto-train style=starry_night [overrides]."""
    _run(_train)


def optimize() -> None:
    """Gatys et al.'s slow method, the reference baseline: impasto-optimize style=starry_night content=photo.jpg."""
    _run(_optimize)
