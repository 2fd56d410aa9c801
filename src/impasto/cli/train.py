"""Train a style: `python train.py style=starry_night [overrides]` in a checkout, `impasto-train` once installed.
The Hydra configs ship inside the package (impasto/conf); run_hydra serves the Gatys command too."""

import sys

import hydra
from omegaconf import DictConfig

from ..config import CONF_DIR, rewrite_style_override
from ..errors import UserError, exit_on_user_error


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _train(cfg: DictConfig) -> None:
    from ..training.run import train

    with exit_on_user_error():
        train(cfg)


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


def run_hydra(hydra_main, config_name: str) -> None:
    """A Hydra command as users type it: style=[a,b] rewritten, the overrides checked, then Hydra."""
    with exit_on_user_error():
        sys.argv = rewrite_style_override(sys.argv)
        check_overrides(config_name, sys.argv[1:])
    hydra_main()


def main() -> None:
    run_hydra(_train, "train")


if __name__ == "__main__":
    main()
