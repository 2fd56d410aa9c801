"""Gatys et al.'s slow method, the reference baseline: python scripts/optimize.py style=starry_night content=photo.jpg

Options (see conf/optimize.yaml): solver=adam, steps=500, init=noise|color, size=1024, scales=[256,512,1024],
preserve_color=true, reconstruct=content|style layer=relu3_1, 'style.image=[a.jpg,b.jpg]' style.blend=[0.7,0.3].
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from impasto.config import rewrite_style_override
from impasto.errors import exit_on_user_error

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="optimize")
def main(cfg: DictConfig) -> None:
    from impasto.baseline import run

    with exit_on_user_error():
        run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    with exit_on_user_error():
        sys.argv = rewrite_style_override(sys.argv, CONF_DIR)
    main()
