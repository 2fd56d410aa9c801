from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from impasto.errors import UserError
from impasto.lookup import SHIPPED_STYLES, find_style
from impasto.style import load_style, read_meta, save_style
from impasto.transformer import TransformerConfig, TransformerNet


def test_round_trip_rebuilds_the_network(tmp_path):
    net = TransformerNet(TransformerConfig(widths=(4, 8, 16), residual_blocks=1)).eval()
    path = save_style(tmp_path / "s.safetensors", net, {"style": "s", "steps": 7})
    loaded, meta = load_style(path)
    assert meta["style"] == "s" and meta["steps"] == 7 and meta["network"]["widths"] == [4, 8, 16]
    x = torch.rand(1, 3, 20, 20)
    torch.testing.assert_close(loaded(x), net(x))
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert path.stat().st_mode & 0o044  # readable by others, as a normal file is (not mkstemp's 0600)


def test_foreign_files_are_rejected(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    pickle = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, pickle)
    for path in (other, pickle, tmp_path / "missing.safetensors"):
        with pytest.raises(UserError, match=str(path.name)):
            read_meta(path)


def test_a_style_is_found_by_name_in_checkpoints_then_among_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped, painting = find_style("udnie")  # one painting of the shipped file of several
    assert shipped == SHIPPED_STYLES / "paintings.safetensors" and painting == "udnie"
    assert "udnie" in [p["name"] for p in read_meta(shipped)["paintings"]]
    for own in ("starry_night", "the_scream", "great_wave", "shipwreck_minotaur"):  # a file of its own
        assert find_style(own) == (SHIPPED_STYLES / f"{own}.safetensors", None)
    net = TransformerNet(TransformerConfig(widths=(4, 8, 16), residual_blocks=1))
    retrained = save_style(tmp_path / "checkpoints" / "starry_night.safetensors", net, {"style": "starry_night"})
    assert find_style("starry_night") == (Path("checkpoints/starry_night.safetensors"), None) and retrained.is_file()
    assert find_style("elsewhere/none.safetensors") == (Path("elsewhere/none.safetensors"), None)  # a path stays
    with pytest.raises(UserError, match="no style named 'monet'.*starry_night"):
        find_style("monet")


def test_a_blend_finds_the_file_that_holds_all_its_paintings_past_a_painting_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = TransformerNet(TransformerConfig(widths=(4, 8, 16), residual_blocks=1))
    save_style(tmp_path / "checkpoints" / "starry_night.safetensors", net, {"style": "starry_night"})
    spec = "starry_night:0.5,the_scream:0.5"  # the retrained Starry Night alone cannot blend: the shipped file can
    assert find_style(spec) == (SHIPPED_STYLES / "paintings.safetensors", spec)
    assert find_style("starry_night:1") == (Path("checkpoints/starry_night.safetensors"), "starry_night:1")
    with pytest.raises(UserError, match="no style file holds all of monet, starry_night"):
        find_style("starry_night:0.5,monet:0.5")
