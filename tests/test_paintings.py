"""Several paintings in one network (conditional instance norm): selection, blends, old files, a new painting trained
on its norms alone, and training in sittings."""

import pytest
import torch
from torch import nn

from conftest import assert_user_error, cli, run
from impasto.style import load_style, parse_mix, read_meta, save_style, select
from impasto.transformer import StyleNorm, TransformerConfig, TransformerNet

SMALL = TransformerConfig(widths=(4, 8, 8), residual_blocks=1, down_kernel=4)


def randomized(net: TransformerNet, seed: int = 0) -> TransformerNet:
    """Random norm scales and shifts, so that paintings differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in net.norms():
            norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=g))
            norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=g))
    return net.eval()


def meta_of_several(style: str, *names: str) -> dict:
    """The metadata of a file of several paintings, `names`, with made-up painting images."""
    return {"style": style, "steps": 0, "paintings": [{"name": n, "style_image": f"{n}.jpg", "style_size": 64,
                                                       "style_blend": [1.0]} for n in names]}


def plain_copy(net: TransformerNet) -> nn.Module:
    """The same network with torch's own affine InstanceNorm2d in place of every StyleNorm."""
    import copy

    plain = copy.deepcopy(net)
    for name, module in list(plain.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, StyleNorm):
                norm = nn.InstanceNorm2d(child.weight.shape[-1], affine=True)
                norm.load_state_dict({"weight": child.weight.detach(), "bias": child.bias.detach()})
                setattr(module, child_name, norm)
    return plain


def test_a_one_painting_network_is_the_plain_network():
    torch.manual_seed(0)
    net = randomized(TransformerNet(SMALL))
    x = torch.rand(2, 3, 36, 44)
    assert torch.equal(net(x), plain_copy(net)(x))


def test_each_painting_of_a_network_paints_as_its_own_one_painting_network():
    torch.manual_seed(0)
    several = randomized(TransformerNet(TransformerConfig(**{**SMALL.__dict__, "styles": 3})))
    x = torch.rand(1, 3, 40, 40)
    for k in range(3):
        one = TransformerNet(SMALL).eval()
        state = {key: value[k] if key.endswith(("1.weight", "1.bias")) and value.dim() == 2 else value
                 for key, value in several.state_dict().items()}
        one.load_state_dict(state)
        several.select(k)
        assert torch.equal(several(x), one(x))


def test_blend_end_points_reproduce_each_painting_exactly_and_the_middle_is_neither():
    torch.manual_seed(0)
    net = randomized(TransformerNet(TransformerConfig(**{**SMALL.__dict__, "styles": 2})))
    names = ["a", "b"]
    x = torch.rand(1, 3, 32, 32)
    outs = {}
    for spec in ("a", "b", "a:1,b:0", "a:0,b:2", "a:0.5,b:0.5"):
        net.select(parse_mix(spec, names))
        outs[spec] = net(x)
    assert torch.equal(outs["a"], outs["a:1,b:0"])
    assert torch.equal(outs["b"], outs["a:0,b:2"])
    middle = outs["a:0.5,b:0.5"]
    assert not torch.allclose(middle, outs["a"]) and not torch.allclose(middle, outs["b"])


@pytest.mark.parametrize("spec, needle", [("c", "no painting 'c'"), ("a:x", "not a number"), ("a:-1", "0 or more"),
                                          ("a:0,b:0", "sum to 0"), ("a:inf", "finite")])
def test_a_bad_blend_is_one_clear_error(spec, needle):
    from impasto.errors import UserError

    with pytest.raises(UserError, match=needle):
        parse_mix(spec, ["a", "b"])


def test_a_file_of_several_paintings_needs_a_choice_and_names_them(tmp_path):
    from impasto.errors import UserError

    net = TransformerNet(TransformerConfig(**{**SMALL.__dict__, "styles": 2}))
    meta = {"style": "pair", "steps": 0, "paintings": [{"name": "a", "style_image": "a.jpg", "style_size": 64,
                                                        "style_blend": [1.0]},
                                                       {"name": "b", "style_image": "b.jpg", "style_size": 96,
                                                        "style_blend": [1.0]}]}
    path = save_style(tmp_path / "pair.safetensors", net, meta)
    loaded, meta = load_style(path)
    with pytest.raises(UserError, match="holds 2 paintings: pass --painting NAME, one of a, b"):
        select(loaded, meta, None)
    chosen = select(loaded, meta, "b")
    assert chosen["style"] == "b" and chosen["style_size"] == 96
    assert select(loaded, meta, "a:0.25,b:0.75")["style"] == "a:0.25,b:0.75"


def test_a_file_written_before_several_paintings_loads_and_paints_as_before(tmp_path):
    """A style file of the plain network (no `styles` key, (C,) norm parameters) is what every earlier export is."""
    import json

    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = plain_copy(randomized(TransformerNet(TransformerConfig(widths=(4, 8, 8), residual_blocks=1))))
    path = tmp_path / "old.safetensors"
    meta = {"style": "old", "steps": 1, "network": {"widths": [4, 8, 8], "residual_blocks": 1}}
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path),
              metadata={"format": "impasto-style", "format_version": "1", "meta": json.dumps(meta)})
    net, loaded_meta = load_style(path)
    assert net.config.styles == 1 and net.config.down_kernel == 3
    x = torch.rand(1, 3, 30, 34)
    assert torch.equal(net(x), reference.eval()(x))


def test_init_from_johnsons_grid_into_the_centred_one_starts_out_the_same(tmp_path):
    from impasto.style import load_weights_into, open_source

    torch.manual_seed(2)
    johnson = randomized(TransformerNet(TransformerConfig(widths=(4, 8, 8), residual_blocks=1, down_kernel=3)))
    path = save_style(tmp_path / "j.safetensors", johnson, {"style": "j", "steps": 0})
    centred = TransformerNet(SMALL).eval()
    load_weights_into(centred, open_source(str(path)))
    x = torch.rand(1, 3, 32, 48)  # sides that are multiples of 4: the centred grid adds no padding
    torch.testing.assert_close(centred(x), johnson(x))


TINY = ["experiment=quickstart", "data.size=64", "data.batch_size=2", "data.num_workers=0", "style.size=96",
        "model.widths=[8,16,16]", "model.residual_blocks=1", "trainer.log_every_n_steps=1",
        "log.preview_every_n_steps=0", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_paintings_train_together_then_a_new_one_on_its_norms_alone(tmp_path, photo):
    pair = run("train.py", *TINY, "style=[starry_night,the_scream]", "trainer.max_steps=4", "model.down_kernel=4",
               f"export.dir={tmp_path}", f"hydra.run.dir={tmp_path / 'pair'}")
    assert pair.returncode == 0, pair.stderr[-3000:]
    first = tmp_path / "paintings.safetensors"
    meta = read_meta(first)
    assert [p["name"] for p in meta["paintings"]] == ["starry_night", "the_scream"]
    assert [p["images"] for p in meta["paintings"]] == [4, 4] and meta["images"] == 8  # 2 steps each, 2 images

    added = run("train.py", *TINY, "style=udnie", f"init_from={first}", "finetune=norms", "trainer.max_steps=3",
                "export.name=three", f"export.dir={tmp_path}", f"hydra.run.dir={tmp_path / 'three'}")
    assert added.returncode == 0, added.stderr[-3000:]
    # the command the run prints to stylize with names the painting: the file holds three
    hint = (added.stdout + added.stderr).split("stylize with  python stylize.py ")[-1].splitlines()[0]
    assert hint == f"--style {tmp_path / 'three.safetensors'} --painting udnie PHOTO -o OUT.jpg", hint
    hinted = run("stylize.py", *hint.replace("PHOTO", str(photo)).replace("OUT.jpg", str(tmp_path / "h.png")).split())
    assert hinted.returncode == 0 and "style udnie" in hinted.stderr, hinted.stderr
    before, _ = load_style(first)
    after, meta = load_style(tmp_path / "three.safetensors")
    assert [p["name"] for p in meta["paintings"]] == ["starry_night", "the_scream", "udnie"]
    assert [p["images"] for p in meta["paintings"]] == [4, 4, 6]
    old, new = before.state_dict(), after.state_dict()
    for key, value in old.items():
        if value.shape == new[key].shape:
            assert torch.equal(value, new[key]), key  # every convolution, bit for bit
        else:  # a norm: the two paintings' rows bit for bit, the new painting's row trained away from its start
            assert torch.equal(value, new[key][:2]), key
    moved = [not torch.allclose(old[k].mean(0), new[k][2]) for k in old if old[k].shape != new[k].shape]
    assert any(moved)
    # the run kept the file's centred grid though `model` says Johnson's: its Lightning checkpoint exports the same
    again = cli("export", str(tmp_path / "three" / "checkpoints" / "last.ckpt"),
                str(tmp_path / "a.safetensors"))
    assert again.returncode == 0, again.stderr[-2000:]
    exported, _ = load_style(tmp_path / "a.safetensors")
    assert exported.config.down_kernel == 4 and all(torch.equal(v, new[k]) for k, v in exported.state_dict().items())

    out = tmp_path / "blend.png"
    blend = run("stylize.py", "--style", str(tmp_path / "three.safetensors"), "--painting",
                "starry_night:0.5,udnie:0.5", str(photo), "-o", str(out))
    assert blend.returncode == 0 and out.is_file(), blend.stderr
    assert "(14 training images)" in blend.stderr  # a blend's training is the whole file's
    assert_user_error(run("stylize.py", "--style", str(tmp_path / "three.safetensors"), str(photo), "-o",
                          str(tmp_path / "x.png")), "--painting NAME", "udnie")
    # by a painting's name alone, from a folder whose checkpoints/ holds the file
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "three.safetensors").rename(tmp_path / "checkpoints" / "three.safetensors")
    by_name = run(str(ROOT_STYLIZE), "--style", "udnie", str(photo), "-o", str(tmp_path / "u.png"), cwd=tmp_path)
    # one painting's training is its own images, not the file's nor its last sitting's steps
    assert by_name.returncode == 0 and "style udnie (6 training images)" in by_name.stderr, by_name.stderr


@pytest.mark.slow
def test_sittings_go_on_from_their_state_then_from_the_snapshot(tmp_path):
    common = [*TINY, "experiment=sittings", "data=embedded", "data.size=64", "data.num_workers=0",
              f"paths.state_dir={tmp_path / 'state'}", f"export.dir={tmp_path}"]
    common.remove("experiment=quickstart")
    snapshot = tmp_path / "starry_night.safetensors"
    for sitting, steps in enumerate((2, 5), 1):  # max_steps counts the run's steps over its sittings
        result = run("train.py", *common, f"trainer.max_steps={steps}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert ("resuming from" if sitting == 2 else "starting from scratch") in result.stdout + result.stderr
        assert read_meta(snapshot)["images"] == steps * 2
    import shutil

    shutil.rmtree(tmp_path / "state")  # another machine: only the committed snapshot is there
    result = run("train.py", *common, "trainer.max_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"starting from {snapshot}" in result.stdout + result.stderr
    meta = read_meta(snapshot)
    assert meta["images"] == 12 and meta["init_from"] == snapshot.name
    assert meta["peak"] == {"weight": 1.0, "bound": 20.0}  # the sittings' bound on the residual stream, recorded
    assert meta["hours"]["cpu"] > 0 and 0 < meta["hours"]["cpu_core"] < 3 * meta["hours"]["cpu"]  # 2 cores, and slack


def test_style_list_on_the_command_line_becomes_styles():
    from impasto.config import rewrite_style_override
    from impasto.errors import UserError

    argv = rewrite_style_override(["train.py", "style=[starry_night,udnie]", "trainer.max_steps=3"])
    assert argv == ["train.py", "trainer.max_steps=3", "style=starry_night", "styles=[starry_night,udnie]",
                    "export.name=paintings"]
    assert rewrite_style_override(["t", "style=[udnie]", "export.name=x"])[-1] == "styles=[udnie]"
    with pytest.raises(UserError, match="unknown style"):
        rewrite_style_override(["t", "style=[udnie,nope]"])
    with pytest.raises(UserError, match="twice"):
        rewrite_style_override(["t", "style=[udnie,udnie]"])


ROOT_STYLIZE = __import__("conftest").ROOT / "stylize.py"


def test_the_onnx_export_takes_the_paintings_weights_as_an_input(tmp_path):
    from impasto.color import blend_strength
    from impasto.onnx_style import OnnxStyle, export_onnx

    torch.manual_seed(3)
    net = randomized(TransformerNet(TransformerConfig(**{**SMALL.__dict__, "styles": 2})))
    meta = meta_of_several("pair", "a", "b")
    path = save_style(tmp_path / "pair.safetensors", net, meta)
    onnx_path = export_onnx(path, tmp_path / "pair.onnx")
    x = torch.rand(1, 3, 40, 36)
    for spec in ("a", "b", "a:0.3,b:0.7"):
        net.select(parse_mix(spec, ["a", "b"]))
        expected = blend_strength(net(x).clamp(0, 1), x, 1.0)
        got = torch.from_numpy(OnnxStyle(onnx_path, style=spec).run(x.numpy()))
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)
    from impasto.errors import UserError

    with pytest.raises(UserError, match="holds 2 paintings"):
        OnnxStyle(onnx_path)


def test_the_web_library_offers_each_painting_of_a_file_by_name(tmp_path):
    from impasto.web.library import StyleLibrary

    torch.manual_seed(4)
    net = randomized(TransformerNet(TransformerConfig(**{**SMALL.__dict__, "styles": 2})))
    meta = meta_of_several("pair", "a", "b")
    save_style(tmp_path / "pair.safetensors", net, meta)
    library = StyleLibrary([tmp_path], device="cpu", precision="fp32")
    assert sorted(library.styles) == ["a", "b"] and library.styles["b"].meta["style"] == "b"
    x = torch.rand(1, 3, 32, 32)
    for k, name in enumerate("ab"):
        net.select(k)
        torch.testing.assert_close(library.stylizer(name).raw(x), net(x))
    assert library.partners("a") == ["b"]
    net.select(parse_mix("a:0.75,b:0.25", ["a", "b"]))
    torch.testing.assert_close(library.stylizer("a", ("b", 0.25)).raw(x), net(x))
    from impasto.errors import UserError

    with pytest.raises(UserError, match="not a painting of a's file"):
        library.stylizer("a", ("c", 0.5))


def test_a_painting_of_its_own_is_offered_before_its_file_of_several_and_blends_through_that_file(tmp_path):
    from impasto.web.library import StyleLibrary

    torch.manual_seed(6)
    pair = randomized(TransformerNet(TransformerConfig(**{**SMALL.__dict__, "styles": 2})))
    meta = meta_of_several("pair", "s", "t")
    save_style(tmp_path / "pair.safetensors", pair, meta)
    alone = randomized(TransformerNet(SMALL))  # "s" trained further in a network of its own, named after "pair"
    save_style(tmp_path / "s.safetensors", alone, {"style": "s", "steps": 0})
    library = StyleLibrary([tmp_path], device="cpu", precision="fp32")
    assert library.styles["s"].path.name == "s.safetensors" and library.styles["t"].path.name == "pair.safetensors"
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(library.stylizer("s").raw(x), alone(x))
    assert library.partners("s") == ["t"] and library.partners("t") == ["s"]
    pair.select(parse_mix("s:0.75,t:0.25", ["s", "t"]))
    torch.testing.assert_close(library.stylizer("s", ("t", 0.25)).raw(x), pair(x))


def test_a_sheet_shows_a_painting_with_a_file_of_its_own_once_from_that_file(tmp_path, monkeypatch, capsys):
    from impasto import lookup
    from impasto.cli import stylize
    from impasto.images import load_image

    pair = randomized(TransformerNet(TransformerConfig(**{**SMALL.__dict__, "styles": 2})))
    meta = meta_of_several("pair", "s", "b")
    save_style(tmp_path / "shipped" / "pair.safetensors", pair, meta)
    save_style(tmp_path / "shipped" / "b.safetensors", randomized(TransformerNet(SMALL), 1), {"style": "b", "steps": 0})
    monkeypatch.setattr(lookup, "shipped_folder", lambda model="full": tmp_path / "shipped")
    from PIL import Image

    from impasto.inference import Stylizer

    loaded, from_style = [], Stylizer.from_style.__func__

    def recording(cls, path, device, precision, painting, **options):
        loaded.append((path.name, painting))
        return from_style(cls, path, device, precision, painting, **options)

    monkeypatch.setattr(Stylizer, "from_style", classmethod(recording))
    Image.new("RGB", (40, 30), (120, 80, 40)).save(tmp_path / "photo.png")
    stylize.main(["--sheet", str(tmp_path / "photo.png"), "-o", str(tmp_path / "sheet.png"), "--size", "32",
                  "--device", "cpu"])
    assert "a sheet of 2 paintings" in capsys.readouterr().err
    # b once, from its file of its own, in its place in the file of several (which its file's name sorts before)
    assert loaded == [("pair.safetensors", "s"), ("b.safetensors", "b")]
    assert load_image(tmp_path / "sheet.png", "sheet").width >= 3 * 32


def test_a_half_precision_snapshot_paints_as_its_fp32_network_within_50_db(tmp_path):
    torch.manual_seed(5)
    net = randomized(TransformerNet(SMALL))
    half = save_style(tmp_path / "half.safetensors", net, {"style": "h", "steps": 0}, half=True)
    full = save_style(tmp_path / "full.safetensors", net, {"style": "h", "steps": 0})
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_style(half)
    x = torch.rand(1, 3, 64, 64)
    full, approx = net(x).clamp(0, 1), loaded(x).clamp(0, 1)
    psnr = 10 * torch.log10(1 / (full - approx).square().mean())
    assert loaded.stem[0].weight.dtype == torch.float32 and psnr > 50, psnr


def test_a_file_of_several_named_after_one_of_them_paints_that_one_by_its_name(tmp_path, monkeypatch):
    from impasto.lookup import find_style

    net = TransformerNet(TransformerConfig(**{**SMALL.__dict__, "styles": 2}))
    meta = meta_of_several("b", "a", "b")
    save_style(tmp_path / "checkpoints" / "b.safetensors", net, meta)  # what experiment=new_painting style=b writes
    monkeypatch.chdir(tmp_path)
    from pathlib import Path

    assert find_style("b") == (Path("checkpoints/b.safetensors"), "b")
    assert find_style("a") == (Path("checkpoints/b.safetensors"), "a")
