"""The style file format, defined once: training exports through it, stylize.py imports through it.

A `.safetensors` file holding the transformer's weights only (no loss network) and, in the header's metadata,
`format = impasto-style`, `format_version`, and a JSON `meta` entry: style name, network config, loss config,
steps, loss-network source, impasto version. safetensors holds tensors and strings only: loading it never
unpickles anything.
"""

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from . import ASSETS, __version__, lookup
from .errors import UserError
from .files import refuse_overwrite, write_atomic
from .formats import STYLE_FORMAT, STYLE_FORMAT_VERSION
from .lookup import images_seen, painting_names
from .transformer import TransformerConfig, TransformerNet

SUFFIX = ".safetensors"


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors holding a NaN or an infinity."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def save_style(path: str | os.PathLike, net: TransformerNet, meta: dict[str, Any], half: bool = False) -> Path:
    """Write the transformer and its metadata atomically (a temporary file, then a rename). Weights that are not
    finite (a diverged run) are refused: such a style would paint every photo black or NaN. `half`: the weights in
    fp16, half the bytes (loading turns them back to fp32)."""
    from safetensors.torch import save_file

    full_meta = {**meta, "network": net.config.to_dict(), "impasto_version": __version__}
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to(dtype).cpu().contiguous() for k, v in net.state_dict().items()}
    broken = non_finite(tensors)
    if broken:
        raise UserError(f"not writing {path}: {len(broken)} of the network's {len(tensors)} weight tensors are not "
                        f"finite (the first: {broken[0]}); the training run diverged")
    metadata = {"format": STYLE_FORMAT, "format_version": str(STYLE_FORMAT_VERSION),
                "meta": json.dumps(full_meta, sort_keys=True)}
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The style file's metadata, or a UserError naming the file if it is not an impasto style."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"style {path} does not exist: train a style first or pass an existing style file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception:  # safetensors raises several types for foreign files; all mean "not ours"
        header = {}
    if not header and lookup.header_meta(path, whole=False):
        raise UserError(f"{path} is an impasto style cut short (truncated): copy or export it again")
    if header.get("format") != STYLE_FORMAT:
        raise UserError(f"{path} is not an impasto style: pass a checkpoints/<style>.safetensors file exported by "
                        "train.py")
    if int(header.get("format_version", 0)) > STYLE_FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer impasto (format {header['format_version']}): upgrade impasto")
    return json.loads(header["meta"])


def load_style(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[TransformerNet, dict[str, Any]]:
    """Rebuild the transformer from a checkpoint alone: no training config needed."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    net = TransformerNet(TransformerConfig.from_dict(meta["network"]))
    weights = load_file(str(Path(path).expanduser()), device=str(device))
    broken = non_finite(weights)
    if broken:
        raise UserError(f"{path} holds weights that are not finite ({len(broken)} tensors, the first: {broken[0]}): "
                        "it comes from a diverged training run; retrain it or use another style")
    try:
        net.load_state_dict(weights)
    except RuntimeError:  # missing, extra or misshapen tensors under a right header
        raise UserError(f"{path} has an impasto style's header but not the weights of the network it describes "
                        f"({meta['network']}): a damaged or hand-made file; export it again") from None
    return net.to(device).eval(), meta


def parse_mix(spec: str, names: list[str]) -> torch.Tensor:
    """lookup.parse_mix as a tensor: one weight per painting of `names`."""
    return torch.tensor(lookup.parse_mix(spec, names), dtype=torch.float32)


def select(net: TransformerNet, meta: dict[str, Any], spec: str | None) -> dict[str, Any]:
    """Set the network to paint `spec` (a painting's name, or a blend `a:0.7,b:0.3`) and return the metadata of what
    it paints: for one painting of several, that painting's entry in the flat keys of a one-painting file."""
    names = painting_names(meta)
    if spec is None:
        if len(names) > 1:
            raise UserError(f"this style file holds {len(names)} paintings: pass --painting NAME, one of "
                            f"{', '.join(names)}, or a blend such as {names[0]}:0.5,{names[1]}:0.5")
        return meta
    mix = parse_mix(spec, names)
    if len(names) > 1:
        net.select(mix.to(next(net.parameters()).device))
    if "paintings" not in meta:
        return meta
    chosen = mix.nonzero().flatten().tolist()
    if len(chosen) == 1:
        return one_painting(meta, names[chosen[0]])
    return {**meta, "style": ",".join(f"{names[i]}:{mix[i]:.2f}" for i in chosen), "blend": True}


def one_painting(meta: dict[str, Any], name: str) -> dict[str, Any]:
    """The metadata of one painting of a file of several, in the flat keys of a one-painting file."""
    entry = next(p for p in meta["paintings"] if p["name"] == name)
    return {**meta, "style": name, "style_image": entry["style_image"], "style_size": entry["style_size"],
            "style_blend": entry["style_blend"], "painting_images": entry.get("images")}


def extract(net: TransformerNet, meta: dict[str, Any], name: str) -> tuple[TransformerNet, dict[str, Any]]:
    """One painting of a file of several as a network and metadata of its own, as if trained alone."""
    if "paintings" not in meta:
        if name != meta["style"]:
            raise UserError(f"this style file holds one painting, {meta['style']}, not {name}")
        return net, meta
    names = painting_names(meta)
    if name not in names:
        raise UserError(f"no painting {name!r} in this file; it holds {', '.join(names)}")
    k = names.index(name)
    one = TransformerNet(dataclasses.replace(net.config, styles=1))
    norms = net.norm_keys()
    one.load_state_dict({key: value[k] if key in norms else value for key, value in net.state_dict().items()})
    flat = one_painting(meta, name)
    flat.pop("paintings")
    return one.eval(), flat


def open_style(arg: str, device: str | torch.device = "cpu", spec: str | None = None,
               model: str = "full") -> tuple[TransformerNet, dict[str, Any]]:
    """The one way to load a style for inference: by file or name (lookup.find_style; a name among `model`'s shipped
    styles), with `spec` (select) or the painting the name picked out of a file of several."""
    path, painting = lookup.find_style(str(arg), model)
    net, meta = load_style(path, device)
    return net, select(net, meta, spec or painting)


def open_source(arg: str) -> tuple[TransformerNet, dict[str, Any]]:
    """init_from's style: a file, or a name (lookup.find_style). A painting named out of a file of several is that
    painting alone, as if trained alone; its metadata's `source` names the file."""
    path, painting = lookup.find_style(str(arg))
    net, meta = load_style(path)
    if painting is not None:
        net, meta = extract(net, meta, painting)
    return net, {**meta, "source": path.name + (f" ({painting})" if painting else "")}


def load_weights_into(transformer: TransformerNet, source: tuple[TransformerNet, dict[str, Any]],
                      names: list[str] | None = None) -> None:
    """Start from a style's weights (fine-tuning): `source` as open_source gives it. Its network must be the one
    `model` builds, up to the paintings. `names`: the transformer's paintings; each takes the norms of the source's
    painting of that name, or, for a painting the source does not hold, the mean of its paintings' (a one-painting
    source gives its norms to all)."""
    source, meta = source
    path = meta.get("source", "the style")
    same_trunk = dataclasses.replace(source.config, down_kernel=transformer.config.down_kernel,
                                     styles=transformer.config.styles)
    if same_trunk != transformer.config or source.config.down_kernel > transformer.config.down_kernel:
        raise UserError(f"init_from {path} holds a network with {source.config.to_dict()}, but model builds "
                        f"{transformer.config.to_dict()}: set model.widths and model.residual_blocks to match")
    weights = source.state_dict()
    if source.config.down_kernel == 3 and transformer.config.down_kernel == 4:
        # A 3x3 stride-2 kernel is a 4x4 one whose last row and column are zero (same padding, same samples):
        # the centred network starts out computing exactly what Johnson's did, and training moves it from there.
        for name in ("down1.0.weight", "down2.0.weight"):
            weights[name] = torch.nn.functional.pad(weights[name], (0, 1, 0, 1))
    held = painting_names(meta)
    names = names or held[:transformer.config.styles]
    target = transformer.state_dict()
    norms = transformer.norm_keys()
    for key, value in weights.items():
        if key not in norms or target[key].shape == value.shape and (source.config.styles == 1 or held == names):
            continue
        rows = value.reshape(len(held), -1)  # a norm's (C,) or (styles, C) parameters, one row per painting
        mean = rows.mean(dim=0)
        picked = torch.stack([rows[held.index(n)] if n in held else mean for n in names])
        weights[key] = picked.reshape(target[key].shape)
    transformer.load_state_dict(weights)


def images_per_painting(steps: int, batch_size: int, paintings: int) -> list[int]:
    """Images each of `paintings` trained in turn, one a step, saw in `steps` steps of `batch_size` images."""
    return [(steps // paintings + (k < steps % paintings)) * batch_size for k in range(paintings)]


def painting_meta(style_cfg, images: int = 0) -> dict[str, Any]:
    """One painting's entry: its name, image(s), size and blend, and the training images it has seen."""
    source = style_cfg["image"]
    count = 1 if isinstance(source, str) else len(source)
    blend = style_cfg.get("blend") or [1.0] * count
    return {
        "name": style_cfg["name"],
        "style_image": asset_name(source) if isinstance(source, str) else [asset_name(i) for i in source],
        "style_size": style_cfg["size"],
        "style_blend": [w / sum(blend) for w in blend],
        "images": images,
    }


def paintings_meta(names: list[str], style_cfgs: list, prior: dict[str, Any]) -> list[dict[str, Any]]:
    """Every painting of a run's network before it trains: those it trains from their configs, the others as the
    init_from file (`prior`) has them. A painting the file holds keeps its count of images."""
    held = {p["name"]: p for p in prior.get("paintings", [])}
    if prior and "paintings" not in prior:  # a one-painting file
        held[prior["style"]] = {"images": images_seen(prior)}
    configs = {str(c["name"]): c for c in style_cfgs}
    out = []
    for name in names:
        images = int(held.get(name, {}).get("images", 0))
        if name in configs:
            out.append(painting_meta(configs[name], images))
        else:
            out.append(held[name])
    return out


ASSET_PREFIX = "asset:"  # a style image shipped with impasto, named relative to its assets: the same on every machine


def asset_name(path: str) -> str:
    """`asset:styles/NAME.jpg` for an image inside impasto's assets; any other path as it is."""
    try:
        return ASSET_PREFIX + Path(path).resolve().relative_to(ASSETS.resolve()).as_posix()
    except ValueError:
        return path


def asset_path(name: str) -> str:
    """The file that asset_name named, on this machine."""
    return str(ASSETS / name.removeprefix(ASSET_PREFIX)) if name.startswith(ASSET_PREFIX) else name


def painting_images(meta: dict) -> list[str]:
    """The painting's image files a style's metadata records (one, or a blend's several), on this machine."""
    recorded = meta.get("style_image")
    return [asset_path(p) for p in ([recorded] if isinstance(recorded, str) else recorded or [])]


def prior_meta(names: list[str], style_cfgs: list, source: dict[str, Any] | None) -> dict[str, Any]:
    """What a new run starts from: its network's paintings (paintings_meta), and the images and hours of training
    in the init_from style (`source`, open_source's metadata). Kept in the run's checkpoints, so that a resumed run
    never reads the file again."""
    prior = source or {}
    return {"paintings": paintings_meta(names, style_cfgs, prior), "images": images_seen(prior),
            "hours": dict(prior.get("hours", {})), "init_from": prior.get("source")}


def recipe(config: dict, data_description: str, teacher: dict[str, Any] | None = None) -> dict:
    """What a style's metadata takes from its training run, out of the run's resolved config: the network, the loss,
    the paintings trained, the data, the residual stream's bound where it is on, and the teacher (open_source's
    metadata) of a distilled network. The LightningModule keeps it as its own argument (and checkpoints it); a
    checkpoint of an older run, which kept the whole config instead, gives it through here too."""
    made = {"model": config["model"], "loss": config["loss"], "style": config["style"],
            "trained": list(config.get("styles") or [config["style"]["name"]]), "name": config["export"]["name"],
            "data": {"description": data_description, "size": config["data"]["size"],
                     "batch_size": config["data"]["batch_size"]}}
    if (config.get("peak") or {}).get("weight"):  # the bound on the residual stream, a term of the objective
        made["peak"] = config["peak"]
    if teacher:  # its file's name and how far it had trained: the student's quality rests on it
        made["teacher"] = {"source": teacher["source"], "steps": teacher.get("steps"), "images": images_seen(teacher),
                           "hours": teacher.get("hours", {}), "weight": config.get("teacher_weight")}
    return made


def style_meta(recipe: dict, steps: int, prior: dict[str, Any], images: list[int], seconds: float = 0.0,
               device: str = "cpu", cpu_seconds: float = 0.0) -> dict:
    """The export's metadata, from the run's `recipe` and what it started from (`prior`, prior_meta). `images`: the
    images each trained painting saw in this run (in the order of `recipe["trained"]`); `seconds`: the run's wall
    seconds of training on `device` (cpu, cuda); `cpu_seconds`: the CPU time its process spent, every core's, which a
    shared machine does not inflate."""
    paintings = [dict(p) for p in prior["paintings"]]
    for name, count in zip(recipe["trained"], images):
        entry = next(p for p in paintings if p["name"] == name)
        entry["images"] = entry.get("images", 0) + count
    hours = dict(prior["hours"])
    hours[device] = round(hours.get(device, 0.0) + seconds / 3600, 6)
    hours["cpu_core"] = round(hours.get("cpu_core", 0.0) + cpu_seconds / 3600, 6)
    meta = {
        "steps": steps,
        "images": prior["images"] + sum(images),
        "hours": hours,
        "init_from": prior["init_from"],
        "loss": recipe["loss"],
        "loss_network": recipe["loss"]["network"]["weights"],
        "data": recipe["data"]["description"],
        "image_size": recipe["data"]["size"],
        "batch_size": recipe["data"]["batch_size"],
    }
    for key in ("peak", "teacher"):
        if key in recipe:
            meta[key] = recipe[key]
    if len(paintings) == 1:  # a one-painting file keeps the flat keys every reader knows
        painting = paintings[0]
        return {**meta, "style": painting["name"], "style_image": painting["style_image"],
                "style_size": painting["style_size"], "style_blend": painting["style_blend"]}
    return {**meta, "style": recipe["name"], "paintings": paintings}


def export_lightning_checkpoint(ckpt: str | Path, target: str | Path, overwrite: bool = False) -> Path:
    """Export the style in a Lightning checkpoint of train.py (an interrupted run's last.ckpt, say)."""
    ckpt, target = Path(ckpt).expanduser(), Path(target).expanduser()
    if not ckpt.is_file():
        raise UserError(f"Lightning checkpoint {ckpt} does not exist: look in outputs/<style>/<run>/checkpoints/")
    refuse_overwrite(target, overwrite)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        hparams, weights = state["hyper_parameters"], state["state_dict"]
        run = hparams["recipe"] if "recipe" in hparams else recipe(hparams, hparams["data_description"])
        prior = state.get("impasto_prior") or prior_meta([run["style"]["name"]], [run["style"]], None)
        # the grid as built, which init_from may have made centred whatever `model` said
        down_kernel = weights["transformer.down1.0.weight"].shape[-1]
        transformer = TransformerNet(TransformerConfig.from_dict({**run["model"], "down_kernel": down_kernel,
                                                                  "styles": len(prior["paintings"])}))
        transformer.load_state_dict({k.removeprefix("transformer."): v for k, v in weights.items()
                                     if k.startswith("transformer.")})
        average = state.get("impasto_average")
        if average:  # the run's average of its trained weights: what train.py exports (average=DECAY)
            transformer.load_state_dict(average["weights"], strict=False)
    except Exception as e:  # anything unreadable or foreign here is the user's file to fix
        raise UserError(f"{ckpt} is not a train.py checkpoint ({type(e).__name__}): pass "
                        "outputs/<style>/<run>/checkpoints/last.ckpt") from None
    steps = state["global_step"]
    images = images_per_painting(steps, run["data"]["batch_size"], len(run["trained"]))
    meta = style_meta(run, steps, prior, images, state.get("impasto_seconds", 0.0),
                      state.get("impasto_device", "cpu"), state.get("impasto_cpu_seconds", 0.0))
    if average:
        meta["average"] = {"decay": hparams["average"], "steps": average["steps"]}
    return save_style(target, transformer, meta)
