"""The Hydra command lines: `impasto-train` and `impasto-optimize` once installed, `python train.py` and
`python scripts/optimize.py` in a checkout. Their configs ship inside the package (impasto/conf)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .config import CONF_DIR, rewrite_style_override
from .errors import UserError, exit_on_user_error


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


def check_overrides(config_name: str, overrides: list[str]) -> None:
    """Compose the config once before Hydra runs, so that a mistyped key, value or group is one line and exit code
    2, as impasto's own refusals are (Hydra's own report is several lines and 1, the code of a crash)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(arg.startswith("-") for arg in overrides):  # Hydra's own flags (--help, --cfg, -m): Hydra answers them
        return
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        report = str(e).split("Config search path")[0].split("See https://")[0]
        lines = [line.strip().rstrip(".") for line in report.splitlines()
                 if line.strip() and not line.strip().startswith(("full_key", "object_type"))]
        message, listing = lines[0], False
        for before, line in zip(lines, lines[1:]):  # "Available options in 'model':" then one option a line
            listing = listing or before.endswith(":")
            message += (" " if before.endswith(":") else ", " if listing else "; ") + line
        raise UserError(message) from None


def _run(hydra_main, config_name: str) -> None:
    with exit_on_user_error():
        sys.argv = rewrite_style_override(sys.argv)
        check_overrides(config_name, sys.argv[1:])
    hydra_main()


def train() -> None:
    """Train a style: impasto-train style=starry_night [overrides]."""
    _run(_train, "train")


def optimize() -> None:
    """Gatys et al.'s slow method, the reference baseline: impasto-optimize style=starry_night content=photo.jpg."""
    _run(_optimize, "optimize")
