"""Train a style: python train.py style=starry_night [overrides]. See README.md and conf/train.yaml."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from impasto.config import rewrite_style_override
from impasto.errors import exit_on_user_error

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    from impasto.train import train

    with exit_on_user_error():
        train(cfg)


if __name__ == "__main__":
    with exit_on_user_error():
        sys.argv = rewrite_style_override(sys.argv, CONF_DIR)
    main()
