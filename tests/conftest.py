import functools
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu are skipped, with the reason shown, where torch sees no CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run `python -m pytest -m gpu` on a machine with one")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@functools.cache
def shipped_style(name: str = "starry_night") -> Path:
    """One shipped painting as a style file of its own (impasto-export's extraction), in a folder of the test
    session's: what a user's one-painting file is."""
    from impasto.lookup import find_style
    from impasto.style import extract, load_style, save_style

    path, painting = find_style(name)
    folder = Path(tempfile.mkdtemp(prefix="impasto-shipped-"))
    return save_style(folder / f"{name}.safetensors", *extract(*load_style(path), painting or name))


def cli(command: str, *args: str, **options) -> subprocess.CompletedProcess:
    """Run an impasto command (gatys, compare, export, flicker, artifacts) as its console command impasto-<command>
    runs it."""
    return run("-m", f"impasto.cli.{command}", *args, **options)


def run(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a repo script (train.py, stylize.py, scripts/…) as a user would, in a subprocess."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """A clean failure: exit code 2, one `error:` line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout + result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def photo(tmp_path) -> Path:
    """A small photo-like image with an odd size."""
    torch.manual_seed(0)
    path = tmp_path / "photo.png"
    x = torch.linspace(0, 255, 45).view(1, 45).expand(37, 45)
    rgb = torch.stack([x, x.flip(1), (x * 0.5 + 60 * torch.rand(37, 45))], dim=-1).byte()
    Image.frombytes("RGB", (45, 37), rgb.numpy().tobytes()).save(path)
    return path


def tiny_style(path: Path, name: str = "tiny", seed: int | None = None) -> Path:
    """An untrained, tiny style file painting `name`, its weights drawn from `seed` where one is given."""
    from omegaconf import OmegaConf

    from impasto.style import save_style
    from impasto.transformer import TransformerConfig, TransformerNet

    if seed is not None:
        torch.manual_seed(seed)
    net = TransformerNet(TransformerConfig(widths=(4, 8, 8), residual_blocks=1))
    loss = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "loss" / "gatys.yaml"))
    return save_style(path, net, {"style": name, "steps": 0, "loss": loss})


@pytest.fixture
def tiny_ckpt(tmp_path) -> Path:
    """An untrained, tiny style checkpoint: enough for stylize.py's argument and file handling."""
    return tiny_style(tmp_path / "tiny.safetensors")
