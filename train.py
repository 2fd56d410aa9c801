"""Train a style: python train.py style=starry_night [overrides]. See README.md and conf/train.yaml."""

from impasto.cli.train import main

if __name__ == "__main__":
    main()
