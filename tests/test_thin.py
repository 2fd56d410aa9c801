"""The thin network (model=thin) and distillation (teacher=STYLE): a network learns a trained style's stylizations,
painting by painting, beside the perceptual loss or, with its weights at 0, alone and without a VGG pass."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, assert_user_error, run, shipped_style
from impasto.images import load_image, to_tensor
from impasto.lookup import find_style
from impasto.rewrite import CPUTransformer
from impasto.style import load_style, read_meta, select
from impasto.transformer import TransformerConfig, TransformerNet

TINY = ["experiment=quickstart", "data.size=64", "data.batch_size=2", "data.num_workers=0", "style.size=96",
        "model.widths=[8,16,16]", "model.residual_blocks=1", "model.down_kernel=4", "trainer.log_every_n_steps=1",
        "log.preview_every_n_steps=0", "trainer.enable_progress_bar=false"]


def test_the_thin_model_is_a_sixth_of_the_work_and_its_cpu_pass_is_exact():
    thin = TransformerConfig.from_dict(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "thin.yaml")))
    full = TransformerConfig.from_dict(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "full.yaml")))
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for name, config in (("thin", thin), ("full", full)):
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            TransformerNet(config)(torch.rand(1, 3, 128, 128))
        flops[name] = counter.get_total_flops()
    assert flops["thin"] < flops["full"] / 5
    torch.manual_seed(0)
    net = TransformerNet(thin).eval()
    x = torch.rand(1, 3, 68, 92)
    with torch.inference_mode():
        assert (CPUTransformer(net)(x) - net(x)).abs().max() < 1e-4


def distance_to_teacher(student: str, painting: str, taught: str | None = None) -> float:
    """Mean squared difference between the student's stylization in `painting` and the teacher's (the shipped
    paintings) in `taught` (the same painting unless given), of a preview photo no training run here sees."""
    photo = to_tensor(load_image(ROOT / "src" / "impasto" / "assets" / "preview" / "chelsea.jpg").resize((96, 64)))
    outputs = []
    for path, name in ((student, painting), (find_style("paintings")[0], taught or painting)):
        net, meta = load_style(path)
        select(net, meta, name)
        with torch.inference_mode():
            outputs.append(net.eval()(photo[None]).clamp(0, 1))
    return (outputs[0] - outputs[1]).square().mean().item()


@pytest.mark.slow
def test_a_student_learns_its_teachers_paintings_in_the_teachers_order(tmp_path):
    # the teacher alone (every perceptual weight 0): the objective is its pictures
    common = [*TINY, "teacher=paintings", "style=[shipwreck_minotaur,great_wave]", "optim.lr=3e-3",
              "loss.content_weight=0", "loss.style_weight=0", "loss.tv_weight=0", f"export.dir={tmp_path}"]
    for steps in (1, 60):
        result = run("train.py", *common, f"trainer.max_steps={steps}", f"export.name=s{steps}",
                     f"hydra.run.dir={tmp_path / str(steps)}")
        assert result.returncode == 0, result.stderr[-3000:]
    meta = read_meta(tmp_path / "s60.safetensors")
    # the teacher's order, not the list's
    assert [p["name"] for p in meta["paintings"]] == ["great_wave", "shipwreck_minotaur"]
    teacher = read_meta(find_style("paintings")[0])
    assert meta["teacher"]["source"] == "paintings.safetensors" and meta["teacher"]["steps"] == teacher["steps"]
    state = torch.load(tmp_path / "60" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not any(k.startswith(("teacher.", "loss.network.")) for k in state)
    student = str(tmp_path / "s60.safetensors")
    for painting, other in (("great_wave", "shipwreck_minotaur"), ("shipwreck_minotaur", "great_wave")):
        before = distance_to_teacher(str(tmp_path / "s1.safetensors"), painting)
        after = distance_to_teacher(student, painting)
        assert after < 0.5 * before, (painting, before, after)
        # each painting learned the teacher's same painting, not the other one or an average of the two
        assert after < 0.75 * distance_to_teacher(student, other, painting), painting
    resumed = run("train.py", *common, "trainer.max_steps=62", "export.name=s60", "export.overwrite=true",
                  f"ckpt_path={tmp_path / '60' / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'r'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_meta(tmp_path / "s60.safetensors")["steps"] == 62


def test_a_teacher_without_the_painting_is_one_clear_error(tmp_path):
    result = run("train.py", *TINY, f"teacher={shipped_style('the_scream')}", "style=starry_night",
                 "trainer.max_steps=1", f"export.dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_user_error(result, "cannot teach starry_night")


def test_model_thin_paints_a_shipped_painting_by_name_with_the_thin_network(tmp_path, photo):
    from impasto.lookup import shipped_folder, shipped_styles

    assert shipped_styles("thin") == shipped_styles()  # every shipped painting has its thin network
    out = tmp_path / "thin.png"
    fp32 = ["--precision", "fp32"]  # the network is what is checked here, on CPUs where auto would be bf16 too
    result = run("stylize.py", "--model", "thin", "--style", "the_scream", str(photo), "-o", str(out), *fp32)
    assert result.returncode == 0 and out.is_file(), result.stderr
    full = run("stylize.py", "--style", "the_scream", str(photo), "-o", str(tmp_path / "full.png"), *fp32)
    assert full.returncode == 0, full.stderr
    thin_path, painting = find_style("the_scream", "thin")
    assert thin_path.parent == shipped_folder("thin") and painting == "the_scream"
    expected = stylize_file(thin_path, painting, photo)
    got = to_tensor(load_image(out))
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6  # the thin network's picture, to 8-bit rounding
    assert (to_tensor(load_image(tmp_path / "full.png")) - expected).abs().mean() > 0.02  # not the full one's


def stylize_file(path, painting: str, photo) -> torch.Tensor:
    from impasto.inference import Stylizer

    stylizer = Stylizer.from_style(path, "cpu", "fp32", painting)
    return stylizer.image(to_tensor(load_image(photo)).unsqueeze(0))[0].clamp(0, 1)


def test_the_web_page_serves_the_thin_networks_with_model_thin(tmp_path):
    from impasto.lookup import shipped_folder, shipped_styles
    from impasto.web.__main__ import parse_args, style_folders
    from impasto.web.library import StyleLibrary

    for model in ("thin", "full"):
        folders = style_folders(parse_args(["--model", model, "--checkpoints", str(tmp_path)]))
        styles = StyleLibrary(folders, "cpu", "fp32").styles
        assert set(shipped_styles()) <= set(styles)
        assert all(styles[name].path.parent == shipped_folder(model) for name in shipped_styles()), model


def test_the_web_page_reads_no_thin_file_without_model_thin(tmp_path, monkeypatch):
    import impasto.style
    from impasto.lookup import shipped_folder
    from impasto.web.__main__ import parse_args, style_folders
    from impasto.web.library import StyleLibrary

    read = []
    real = impasto.style.read_meta
    monkeypatch.setattr(impasto.style, "read_meta", lambda path: read.append(path) or real(path))
    StyleLibrary(style_folders(parse_args(["--checkpoints", str(tmp_path)])), "cpu", "fp32")
    assert read and all(path.parent == shipped_folder("full") for path in read)


def test_the_thin_sittings_learn_from_the_shipped_network_in_a_state_folder_of_their_own():
    import yaml

    job = yaml.safe_load(run("train.py", "--cfg", "job", "experiment=thin", "style=udnie").stdout)
    assert job["model"]["widths"] == [8, 16, 64] and job["teacher"] == "paintings" and job["data"]["size"] == 256
    thin = run("train.py", "--cfg", "hydra", "experiment=thin", "style=udnie").stdout
    full = run("train.py", "--cfg", "hydra", "experiment=sittings", "style=udnie").stdout
    assert "dir: ${paths.state_dir}/${export.name}-thin" in thin and "-thin" not in full
