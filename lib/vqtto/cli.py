"""The command line: ``vqtto train | prior | search | book`` (also ``python -m vqtto``).

Each command first checks everything it was given (files, images, masks, checkpoints, the
output path) and refuses bad input with exit code 2 before any work; then it runs the same
library functions the notebooks call. Run under ``torchrun`` it trains data-parallel and shards
the search pairs across the ranks (:mod:`vqtto.distributed`); only rank 0 writes.

Checkpoints (``train --out``, ``prior --out``, ``search --model``) are the cache's files
(:mod:`vqtto.artifacts`: one JSON header line and tensors read with ``weights_only=True``), so
loading one runs no code and any cache file is a checkpoint.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import artifacts, distributed, search
from . import data as data_mod
from . import images as images_mod
from .device import pick_device
from .profiles import PROFILES

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

EPILOG = """\
exit codes:
  0  done
  2  bad arguments or input (a missing or unreadable file, an image of the wrong size, an existing
     output, ...): refused before any work, nothing written
  1  failure while running (under torchrun: the failed rank prints "rank R failed: ...")

several processes (one per GPU, or CPU processes with gloo):
  torchrun --nproc_per_node=2 -m vqtto train --k 512 --profile full
  torchrun --nproc_per_node=2 -m vqtto search --pairs 200 --out found/
"""

DATASET_SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                  "miniimagenet": (3, data_mod.MINIIMAGENET_SIZE, data_mod.MINIIMAGENET_SIZE)}


class BadInput(ValueError):
    """Input the command refuses before any work (exit code 2); the message names it."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option (but not an absent one, None); descriptions and epilogs kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


# --- output paths ----------------------------------------------------------------------------------

def check_output(path: Path, overwrite: bool, folder: bool) -> None:
    """Refuse an output ``path`` that exists (unless ``overwrite``), is of the other kind, or cannot be written."""
    if path.exists():
        if not overwrite:
            raise BadInput(f"--out {path} exists; pass --overwrite to replace it")
        if path.is_dir() != folder:
            raise BadInput(f"--out {path} is {'a file' if folder else 'a folder'}; --overwrite replaces only "
                           f"{'a folder' if folder else 'a file'}")
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise BadInput(f"--out {path}: cannot write in {parent}")


def write_folder(path: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder next to ``path`` and rename it into place (replacing an old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        fill(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- models: checkpoints and the cache -------------------------------------------------------------

def read_checkpoint(path: Path, kind: str) -> tuple[dict, dict]:
    """The ``(config, payload)`` of the checkpoint at ``path``, verified, holding a ``kind``; no code runs."""
    try:
        with open(path, "rb") as fh:
            header = json.loads(fh.readline())
    except OSError as err:
        raise BadInput(f"--model {path}: cannot read it ({err.strerror or err})") from None
    except ValueError:
        raise BadInput(f"--model {path}: not a vqtto checkpoint (no JSON header line)") from None
    if not isinstance(header, dict) or "kind" not in header or "config" not in header:
        raise BadInput(f"--model {path}: not a vqtto checkpoint")
    if header["kind"] != kind:
        raise BadInput(f"--model {path}: holds a {header['kind']!r} checkpoint, not a {kind!r} one")
    try:
        return header["config"], artifacts.read(path, kind, header["config"])
    except (artifacts.CorruptArtifact, artifacts.ArtifactMismatch) as err:
        raise BadInput(f"--model {err}") from None


def image_shape(config: dict) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images a VQ-VAE of ``config`` was trained on."""
    dataset = config["dataset"]
    return tuple(dataset["shape"]) if isinstance(dataset, dict) else DATASET_SHAPES[dataset]


@dataclass
class VQVAESource:
    """The VQ-VAE a command uses: a verified checkpoint, or the cache's (trained there if absent).

    Attributes:
        config: its full config (what keys the cache).
        payload: the checkpoint's contents; None for the cache's model.
        cached: ``dataset``, ``k`` and ``profile`` of the cache's model; None for a checkpoint.
        label: how messages and the record name it.
    """

    config: dict
    payload: dict | None
    cached: dict | None
    label: str

    @classmethod
    def from_args(cls, model: Path | None, dataset: str, k: int, profile: str) -> "VQVAESource":
        from . import models

        if model is not None:
            config, payload = read_checkpoint(model, "vqvae")
            return cls(config, payload, None, str(model))
        cached = {"dataset": dataset, "k": k, "profile": profile}
        return cls(models.vqvae_config(dataset, k, profile), None, cached,
                   f"the cache's {dataset} VQ-VAE, k={k}, profile {profile}")

    def load(self, device: torch.device, progress: bool):
        """The :class:`vqtto.models.TrainedVQVAE` (the cache's is trained and cached if absent)."""
        from . import models

        if self.payload is None:
            return models.vqvae(**self.cached, device=device, progress=progress)
        return trained_vqvae(self.config, self.payload, device)


def trained_vqvae(config: dict, payload: dict, device: torch.device):
    """A checkpoint's payload -> :class:`vqtto.models.TrainedVQVAE` on ``device``, in eval mode."""
    from .models import TrainedVQVAE
    from .training import History
    from .vqvae import VQVAE, VQVAEConfig

    model = VQVAE(VQVAEConfig(**config["model"]))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return TrainedVQVAE(model=model, history=History(**payload["history"]), test=payload["test"], config=config)


def state_payload(model: torch.nn.Module, history, test: dict) -> dict:
    """What a checkpoint keeps of a trained model: CPU weights, its curves, its test metrics."""
    return {"state_dict": {n: t.cpu() for n, t in model.state_dict().items()}, "history": history.as_dict(),
            "test": test}


def export(kind: str, config: dict, out: Path | None) -> Path:
    """Copy the cache's file of ``(kind, config)`` to ``out`` atomically (when given); returns the cache path."""
    path = artifacts.path_for(kind, config)
    if out is not None:
        artifacts.write_atomically(out, path.read_bytes())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(out, 0o666 & ~umask)  # a file for the user, not the cache's private temporary
    return path


# --- reading inputs --------------------------------------------------------------------------------

def read_inputs(path: Path, option: str) -> tuple[torch.Tensor, list[str]]:
    """Images of a file or folder -> ``(N, C, H, W)`` and names; an :class:`BadInput` naming ``option``."""
    try:
        return images_mod.read_images(path)
    except images_mod.ImageError as err:
        raise BadInput(f"{option} {err}") from None


def read_folder_set(folder: Path) -> tuple[torch.Tensor, dict]:
    """A training folder -> images ``(N, C, H, W)`` and the ``dataset`` entry of its model's config."""
    imgs, _ = read_inputs(folder, "--images")
    c, h, w = imgs.shape[1:]
    if h % 4 or w % 4:
        raise BadInput(f"--images {folder}: images are {w}x{h}; the VQ-VAE needs sides divisible by 4")
    return imgs, {"folder": str(folder.resolve()), "images": int(imgs.shape[0]), "shape": [int(c), int(h), int(w)],
                  "sha256": images_mod.digest(imgs)}


def folder_images(entry: dict) -> torch.Tensor:
    """The images a folder-trained model was trained on, checked against its config's digest."""
    imgs, again = read_folder_set(Path(entry["folder"]))
    if again["sha256"] != entry["sha256"]:
        raise BadInput(f"{entry['folder']}: its images changed since the model was trained on them")
    return imgs


# --- train -----------------------------------------------------------------------------------------

def _train_overrides(args) -> dict:
    return {name: getattr(args, name) for name in ("epochs", "seed", "batch_size") if getattr(args, name) is not None}


def check_train(args) -> Callable[[], int]:
    """Validate ``vqtto train``; returns the work."""
    from . import models

    if args.out is not None:
        check_output(args.out, args.overwrite, folder=False)
    overrides = _train_overrides(args)
    if args.images is None:
        config = models.vqvae_config(args.dataset, args.k, args.profile, **overrides)
        imgs = None
    else:
        imgs, entry = read_folder_set(args.images)
        config = models.vqvae_config("fashion-mnist" if imgs.shape[1] == 1 else "cifar10", args.k, args.profile,
                                     **overrides)
        config["dataset"] = entry
    train = config["train"]
    n = imgs.shape[0] if imgs is not None else None
    if n is not None:
        n = min(n, train["train_limit"] or n)
        distributed.check_split(n, train["batch_size"], distributed.launched_size())

    def build(device: torch.device, progress: bool) -> tuple[dict, str]:
        if imgs is None:
            tv = models.vqvae(args.dataset, k=args.k, profile=args.profile, device=device, progress=progress,
                              **overrides)
        else:
            tv = _train_on_folder(config, imgs, device, progress)
        return tv.config, (f"VQ-VAE k={tv.k}: test MSE {tv.test['recon']:.5f}, {tv.test['codes_used']} codes used, "
                           f"perplexity {tv.test['perplexity']:.1f}")

    return _training_work(args, "vqvae", build)


def _training_work(args, kind: str, build: Callable[[torch.device, bool], tuple[dict, str]]) -> Callable[[], int]:
    """The work of ``train`` and ``prior``: ``build(device, progress) -> (config, summary)`` on every
    rank into the staged cache; rank 0 then exports the cache file to ``--out`` and reports."""
    def work() -> int:
        world, device = distributed.init(pick_device(args.device))
        with distributed.staged_cache():
            config, summary = build(device, not args.quiet and world.main)
        if world.main:
            path = export(kind, config, args.out)
            print(summary)
            print(f"checkpoint: {args.out or path}")
        return EXIT_OK

    return work


def _train_on_folder(config: dict, imgs: torch.Tensor, device: torch.device, progress: bool):
    """Train (or load from the cache) a VQ-VAE of ``config`` on a folder's images; evaluated on them too."""
    from .training import TrainConfig, train_vqvae, vqvae_metrics
    from .vqvae import VQVAE, VQVAEConfig

    cfg = TrainConfig(**config["train"])
    data = data_mod.ImageSet(imgs, torch.zeros(imgs.shape[0], dtype=torch.long), "folder")

    def build() -> dict:
        torch.manual_seed(cfg.seed)
        model = VQVAE(VQVAEConfig(**config["model"]))
        hist = train_vqvae(model, data, data, cfg, device, progress=progress)
        return state_payload(model, hist, vqvae_metrics(model, imgs[: cfg.test_limit], device))

    return trained_vqvae(config, artifacts.load_or_build("vqvae", config, build), device)


# --- prior -----------------------------------------------------------------------------------------

def check_prior(args) -> Callable[[], int]:
    """Validate ``vqtto prior``; returns the work."""
    from . import models

    if args.out is not None:
        check_output(args.out, args.overwrite, folder=False)
    source = VQVAESource.from_args(args.model, args.dataset, args.k, args.profile)
    overrides = _train_overrides(args)
    folder = isinstance(source.config["dataset"], dict)
    if folder and args.class_conditional:
        raise BadInput(f"--class-conditional: the model {source.label} was trained on a folder, which has no labels")
    models.prior_config(source.config, args.profile, args.class_conditional, **overrides)  # validates

    def build(device: torch.device, progress: bool) -> tuple[dict, str]:
        if args.model is None:
            trained = models.prior(args.dataset, k=args.k, profile=args.profile, device=device, progress=progress,
                                   class_conditional=args.class_conditional, **overrides)
            config, test = trained.config, trained.test
        else:
            config, test = _train_prior(source.load(device, progress), args, overrides, device, progress)
        return config, (f"PixelCNN prior k={config['model']['k']}: test {test['nats_per_position']:.4f} nats per "
                        f"position, {test['bits_per_image']:.1f} bits per image (uniform: {test['uniform_nats']:.4f})")

    return _training_work(args, "pixelcnn", build)


def _train_prior(vq, args, overrides: dict, device: torch.device, progress: bool) -> tuple[dict, dict]:
    """A prior over the codes of a checkpoint's VQ-VAE (a known data set's splits, or its folder)."""
    from . import codes, models, pixelcnn
    from .pixelcnn import GatedPixelCNN, PixelCNNConfig
    from .training import PriorTrainConfig, train_prior

    limits = models.prior_config(vq.config, args.profile, args.class_conditional, **overrides)["train"]
    if isinstance(vq.config["dataset"], dict):
        grids = codes.encode(vq.model, folder_images(vq.config["dataset"]), device, progress=progress)
        sets = [codes.CodeSet(grids, torch.zeros(len(grids), dtype=torch.long), vq.k, "folder")] * 2
    else:
        sets = [codes.index_dataset(vq, split, limit=limits[f"{split}_limit"], device=device, progress=progress)
                for split in ("train", "test")]
    config = models.prior_config(vq.config, args.profile, args.class_conditional, grid=sets[0].grid_shape, **overrides)
    cfg = PriorTrainConfig(**config["train"])

    def build() -> dict:
        torch.manual_seed(cfg.seed)
        prior = GatedPixelCNN(PixelCNNConfig(**config["model"]))
        hist = train_prior(prior, sets[0], sets[1], cfg, device, progress=progress)
        return state_payload(prior, hist, pixelcnn.evaluate(prior, sets[1].indices, sets[1].labels, device))

    return config, artifacts.load_or_build("pixelcnn", config, build)["test"]


# --- search ----------------------------------------------------------------------------------------

#: method -> (search function, the arguments the method fixes)
METHODS: dict[str, tuple[Callable, dict]] = {
    "alg1": (search.gradient_descent, {}),
    "alg2": (search.straight_through, {"mask": "all"}),
    "alg3": (search.straight_through, {"mask": "single"}),
    "top": (search.straight_through, {"mask": "top"}),
    "greedy": (search.greedy_coordinate, {}),
    "relaxed": (search.relaxed_straight_through, {"prior": None, "movable": None, "radius": None}),
    "gwg": (search.gibbs_with_gradients, {"start": None, "movable": None, "prior": None, "radius": None, "seed": 0}),
    "screened-sa": (search.screened_annealing, {"start": None, "movable": None, "prior": None, "radius": None, "seed": 0}),
}
#: The methods that can stay within a Hamming radius of the source's code (``--task edit``).
RADIUS_METHODS = ("relaxed", "gwg", "screened-sa")


class _SettingsPassed(Exception):
    """Raised by :class:`_ModelStandIn` when a search reaches its model: its settings were accepted."""


class _ModelStandIn:
    """What :func:`check_settings` hands a search instead of a model. Every search checks its
    settings before it touches the model, so reaching ``codebook`` means they passed."""

    @property
    def codebook(self):
        raise _SettingsPassed


def check_settings(method: str, settings: dict) -> None:
    """Refuse settings the search of ``method`` refuses (a :class:`BadInput` with its message), running nothing."""
    fn, fixed = METHODS[method]
    try:
        fn(_ModelStandIn(), torch.zeros(1, 1, 1, 1), search.mse_to(torch.zeros(1, 1, 1, 1)), **fixed, **settings)
    except _SettingsPassed:
        return
    except (ValueError, TypeError) as err:
        raise BadInput(f"--method {method}: {err}") from None


TASKS = ("reconstruct", "super-resolve", "inpaint", "edit")


def method_settings(method: str) -> dict:
    """The settings ``--method`` takes, with their defaults (read from the search function's signature)."""
    fn, fixed = METHODS[method]
    skip = {"progress", *fixed} | ({"m"} if method in ("alg2", "alg3") else set())
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip}


def _setting_doc(name: str) -> tuple[str, str]:
    """The first clause of the setting's description in a search function's docstring, and its annotation."""
    text, annotation = name.replace("_", " "), ""
    for fn, _ in reversed(list(METHODS.values())):  # the first method's description wins
        param = inspect.signature(fn).parameters.get(name)
        if param is None:
            continue
        annotation = str(param.annotation)
        found = re.search(rf"^\s+{name}: (.+?)(?=\n\s+\w+: |\n\s*\n|\Z)", fn.__doc__ or "", re.M | re.S)
        if found:
            text = re.split(r"(?<=[^.])[.;] ", " ".join(found.group(1).replace("``", "").split()), maxsplit=1)[0]
    return text.rstrip("."), annotation


def all_settings() -> dict[str, dict[str, object]]:
    """setting -> {method: default} over every method."""
    table: dict[str, dict[str, object]] = {}
    for method in METHODS:
        for name, default in method_settings(method).items():
            table.setdefault(name, {})[method] = default
    return table


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """One option per search setting; its help lists each method's default (unset: the method's default)."""
    group = parser.add_argument_group("search settings (each applies only to the methods listed with it)")
    for name, per_method in all_settings().items():
        text, annotation = _setting_doc(name)
        defaults = ", ".join(f"{m} {d}" for m, d in per_method.items())
        flag = f"--{name.replace('_', '-')}"
        if "bool" in annotation:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=f"{text} (default: {defaults})")
            continue
        kind = int if annotation.startswith("int") else float if annotation.startswith("float") else str
        group.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS, help=f"{text} (default: {defaults})")


@dataclass
class SearchInputs:
    """What a search runs on, checked: sources and targets ``(B, C, H, W)`` (targets may be
    ``(B, C, H/f, W/f)`` for super-resolution), their names, and the inpainting mask ``(H, W)``."""

    sources: torch.Tensor
    targets: torch.Tensor
    source_names: list
    target_names: list
    mask: torch.Tensor | None


def _pairs_inputs(args, source: VQVAESource) -> SearchInputs:
    from . import pairs

    dataset = source.config["dataset"]
    if not isinstance(dataset, str):
        raise BadInput(f"--pairs draws test images of the model's data set, but {source.label} was trained on a folder; "
                       "give --source/--target")
    if args.pairs < 1:
        raise BadInput(f"--pairs must be >= 1, got {args.pairs}")
    pp = pairs.test_pairs(dataset, args.pairs, args.pair_seed)
    return SearchInputs(pp.sources, pp.targets, [f"{dataset} test #{i}" for i in pp.source_ids.tolist()],
                        [f"{dataset} test #{i}" for i in pp.target_ids.tolist()], None)


def _file_inputs(args, shape: tuple[int, int, int]) -> SearchInputs:
    """Sources and targets from files; for super-resolve, low-resolution images ``(C, H/f, W/f)`` may be
    given as targets, or as sources alone (the search then starts from them upsampled)."""
    sources, source_names = read_inputs(args.source, "--source")
    low = (shape[0], shape[1] // args.factor, shape[2] // args.factor)
    super_resolve = args.task == "super-resolve"
    if super_resolve and args.target is None and tuple(sources.shape[1:]) == low:
        targets, target_names = sources, source_names
        sources = torch.nn.functional.interpolate(sources, scale_factor=args.factor, mode="bilinear")
        return SearchInputs(sources, targets, source_names, target_names, None)
    _check_shape(sources, shape, f"--source {args.source}")
    if args.target is None:
        targets, target_names = sources, source_names
    else:
        targets, target_names = read_inputs(args.target, "--target")
        if not (super_resolve and tuple(targets.shape[1:]) == low):
            _check_shape(targets, shape, f"--target {args.target}")
    n, m = len(sources), len(targets)
    if n != m and 1 not in (n, m):
        raise BadInput(f"--source gives {n} images and --target {m}: give as many of each, or one of either")
    if m == 1 and n > 1:
        targets, target_names = targets.expand(n, -1, -1, -1), target_names * n
    if n == 1 and m > 1:
        sources, source_names = sources.expand(m, -1, -1, -1), source_names * m
    return SearchInputs(sources, targets, source_names, target_names, None)


def _check_shape(images: torch.Tensor, shape, what: str) -> None:
    """check_shape with the error as :class:`BadInput`."""
    try:
        images_mod.check_shape(images, shape, what)
    except images_mod.ImageError as err:
        raise BadInput(str(err)) from None


def check_search(args) -> Callable[[], int]:
    """Validate ``vqtto search``; returns the work."""
    check_output(args.out, args.overwrite, folder=True)
    if args.task == "edit":
        if args.radius is None or args.radius < 1:
            raise BadInput(f"--task edit needs --radius, an integer >= 1 (positions that may differ from the source's "
                           f"code), got {args.radius}")
        if args.method not in RADIUS_METHODS:
            raise BadInput(f"--task edit needs a --method that stays within a radius: one of {', '.join(RADIUS_METHODS)}; "
                           f"got {args.method}")
        if args.target is None and args.pairs is None:
            raise BadInput("--task edit needs --target: the edited image the search should reach")
    elif args.radius is not None:
        raise BadInput(f"--radius applies to --task edit, not {args.task}")
    given = {name for name in all_settings() if hasattr(args, name)}
    allowed = method_settings(args.method)
    if given - set(allowed):
        raise BadInput(f"--method {args.method} does not take {', '.join('--' + n.replace('_', '-') for n in sorted(given - set(allowed)))}; "
                       f"it takes {', '.join('--' + n.replace('_', '-') for n in allowed)}")
    settings = {**allowed, **{name: getattr(args, name) for name in given}}
    check_settings(args.method, settings)
    if (args.source is None) == (args.pairs is None):
        raise BadInput("give --source (and --target) image files or folders, or --pairs N; not both")
    if args.source is None and args.target is not None:
        raise BadInput("--target needs --source")
    if args.mask is not None and args.task != "inpaint":
        raise BadInput(f"--mask applies to --task inpaint, not {args.task}")
    if args.task == "inpaint" and args.mask is None:
        raise BadInput("--task inpaint needs --mask (a PNG: white = visible pixels)")
    source = VQVAESource.from_args(args.model, "fashion-mnist", 512, "quick")
    shape = image_shape(source.config)
    if args.task == "super-resolve" and (args.factor < 1 or shape[1] % args.factor or shape[2] % args.factor):
        raise BadInput(f"--factor {args.factor} must be >= 1 and divide the model's image size {shape[2]}x{shape[1]}")
    inputs = _file_inputs(args, shape) if args.source is not None else _pairs_inputs(args, source)
    if args.mask is not None:
        try:
            inputs.mask = images_mod.read_mask(args.mask, shape[1:])
        except images_mod.ImageError as err:
            raise BadInput(f"--mask {err}") from None
    return lambda: _run_search(args, source, inputs, settings)


def task_loss(task: str, targets: torch.Tensor, mask: torch.Tensor | None, factor: int) -> search.PairLoss:
    """The per-pair loss of ``task`` on ``targets`` ``(B, C, H, W)`` (low-resolution ones for super-resolve)."""
    if task == "super-resolve":
        return search.downscaled_mse_to(targets, factor)
    if task == "inpaint":
        return search.masked_mse_to(targets, mask.to(targets.device))
    return search.mse_to(targets)


@torch.no_grad()
def _encode(model, images: torch.Tensor, device: torch.device, batch: int = 500) -> torch.Tensor:
    """Images ``(B, C, H, W)`` -> continuous start latents ``(B, D, h, w)`` on ``device``."""
    return torch.cat([model.encode(images[s:s + batch].to(device)) for s in range(0, images.shape[0], batch)])


def _run_search(args, source: VQVAESource, inputs: SearchInputs, settings: dict) -> int:
    world, device = distributed.init(pick_device(args.device))
    progress = not args.quiet and world.main
    with distributed.staged_cache():
        vq = source.load(device, progress)
    model = vq.model
    fn, fixed = METHODS[args.method]
    loss = task_loss(args.task, inputs.targets.to(device), inputs.mask, args.factor)

    def run(rows: torch.Tensor) -> search.SearchTrace:
        z = _encode(model, inputs.sources[rows], device)
        fixed_here = {**fixed, "radius": args.radius} if args.task == "edit" else fixed
        return fn(model, z, loss.rows(rows.to(device)), progress=progress, **fixed_here, **settings)

    if world.size > 1 and world.main and args.method == "relaxed" and settings.get("noise", 0) > 0:
        print("note: the relaxed search draws its Gumbel noise for the whole batch of pairs, so with noise > 0 its "
              "results depend on how the pairs are split across processes", file=sys.stderr)
    t0 = time.perf_counter()
    trace = distributed.sharded(run, len(inputs.sources))
    wall = time.perf_counter() - t0
    if world.main:
        write_folder(args.out, lambda tmp: _write_search(tmp, args, source, inputs, model, loss, trace, wall))
        print(f"{len(trace)} pairs searched with {args.method} ({args.task}) in {wall:.1f} s on {world.size} "
              f"process(es): mean best loss {trace.best_losses.mean():.5f} (start {torch.stack([l[0] for l in trace.losses]).mean():.5f}); "
              f"results in {args.out}")
    return EXIT_OK


def _write_search(folder: Path, args, source: VQVAESource, inputs: SearchInputs, model, loss, trace, wall: float) -> None:
    """The found images (PNG), their codes (``codes.pt``) and ``record.json`` into ``folder``."""
    from .progress import progress_bar

    best = trace.best_indices
    device = model.codebook.device
    found_loss = []
    names = []
    for start in progress_bar(range(0, len(trace), 256), desc="writing", disable=args.quiet):
        rows = torch.arange(start, min(start + 256, len(trace)))
        with torch.no_grad():
            imgs = model.decode_indices(best[rows].to(device))
            found_loss += loss.rows(rows.to(device))(imgs).tolist()
        for i, img in zip(rows.tolist(), imgs):
            names.append(f"found_{i:03d}.png")
            images_mod.write_png(folder / names[-1], img)
    torch.save({"start": torch.stack([g[0] for g in trace.grids]), "best": best, "final": trace.final_indices},
               folder / "codes.pt")
    settings = {name: value for name, value in vars(args).items() if name not in ("handler", "argv")}
    record = {
        "command": shlex.join(["vqtto", *args.argv]),
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}, "search": trace.params},
        "model": {"source": source.label, "config": source.config},
        "method": trace.method,
        "pairs": [{"source": s, "target": t, "found": f, "found_loss": fl, "start_loss": float(l[0]),
                   "best_loss": float(l.min()), "distinct_grids": int(g.shape[0]), "stop_reason": r}
                  for s, t, f, fl, l, g, r in zip(inputs.source_names, inputs.target_names, names, found_loss,
                                                  trace.losses, trace.grids, trace.stop_reason)],
        "costs": {"decoded_images": trace.decoded_images, "search_seconds": trace.seconds, "wall_seconds": wall,
                  "processes": distributed.world().size},
        "codes": "codes.pt: start, best, final index grids (B, h, w) int64; found_NNN.png decode best",
    }
    (folder / "record.json").write_text(json.dumps(record, indent=2))


# --- the parser ------------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser, out_help: str, out_required: bool = False) -> None:
    p.add_argument("--out", type=Path, required=out_required, default=None, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist", choices=data_mod.DATASETS, help="a data set the library knows")
    p.add_argument("--k", type=int, default=512, help="codebook size")
    p.add_argument("--profile", default="quick", choices=PROFILES, help="model presets (vqtto.profiles)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the profile's)")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation and batch order (default: the profile's, 0)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="global batch (split across torchrun's processes; default: the profile's)")


def build_parser() -> argparse.ArgumentParser:
    from . import book

    parser = argparse.ArgumentParser(prog="vqtto", description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,prior,search,book}")

    t = sub.add_parser("train", help="train a VQ-VAE on a known data set or a folder of images", formatter_class=HelpFormatter,
                       description="Train a VQ-VAE (or load it from the cache) and keep it in the cache; --out also "
                                   "writes it as a checkpoint file.", epilog=EPILOG)
    _model_options(t)
    t.add_argument("--images", type=Path, default=None,
                   help="a folder of grayscale or RGB PNG/JPEG images, all of one size (instead of --dataset); "
                        "the test curves are measured on them too")
    _common(t, "checkpoint file to write (default: the cache only)")
    t.set_defaults(handler=check_train)

    p = sub.add_parser("prior", help="train a PixelCNN prior over a trained VQ-VAE's codes", formatter_class=HelpFormatter,
                       description="Train a PixelCNN prior over the index grids of a VQ-VAE: the cache's "
                                   "(--dataset, --k, --profile) or a checkpoint (--model).", epilog=EPILOG)
    _model_options(p)
    p.add_argument("--model", type=Path, default=None, help="VQ-VAE checkpoint (default: the cache's model of --dataset, --k, --profile)")
    p.add_argument("--class-conditional", action="store_true", help="condition the prior on the class labels")
    _common(p, "checkpoint file to write (default: the cache only)")
    p.set_defaults(handler=check_prior)

    s = sub.add_parser("search", help="search a VQ-VAE's codes for images that meet a constraint",
                       formatter_class=HelpFormatter, epilog=EPILOG,
                       description="Start from each source image's code and search for the code whose decoded image "
                                   "best meets the task's constraint on the target. Writes found_NNN.png, codes.pt "
                                   "and record.json into --out.")
    s.add_argument("--model", type=Path, default=None,
                   help="VQ-VAE checkpoint (default: the book's quick Fashion-MNIST model, k=512, from the cache)")
    s.add_argument("--source", type=Path, default=None,
                   help="source image file or folder (super-resolve: may be the low-resolution images alone)")
    s.add_argument("--target", type=Path, default=None, help="target image file or folder (default: the source)")
    s.add_argument("--pairs", type=int, default=None, help="instead of files: N random test pairs of the model's data set")
    s.add_argument("--pair-seed", type=int, default=0, help="seed of the --pairs draw (the book's chapters use 0)")
    s.add_argument("--task", default="reconstruct", choices=TASKS, help="the constraint on the target")
    s.add_argument("--factor", type=int, default=2, help="super-resolve: average-pooling factor")
    s.add_argument("--mask", type=Path, default=None, help="inpaint: mask image, white = visible pixels")
    s.add_argument("--radius", type=int, default=None,
                   help="edit: the found code differs from the source's in at most this many positions (>= 1; "
                        "methods relaxed, gwg and screened-sa)")
    s.add_argument("--method", default="alg2", choices=list(METHODS),
                   help="alg1: continuous gradient descent; alg2/alg3/top: straight-through (all / one / top-m "
                        "positions); greedy: greedy coordinate; relaxed: relaxed straight-through; gwg: "
                        "Gibbs-with-gradients; screened-sa: gradient-screened annealing")
    _add_settings(s)
    _common(s, "output folder (required)", out_required=True)
    s.set_defaults(handler=check_search)

    b = sub.add_parser("book", help="execute the book's chapters, build the site (python -m vqtto.book)",
                       formatter_class=HelpFormatter, description=book.__doc__)
    book.add_commands(b.add_subparsers(dest="cmd", required=True))
    b.set_defaults(handler=lambda args: lambda: book.run_command(args))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 2 bad input, 1 failure while running)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    name = f"vqtto {args.command}"
    try:
        work = args.handler(args)
    except (BadInput, images_mod.ImageError, ValueError, data_mod.DataUnavailable) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return work()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:  # noqa: BLE001 - a failure while running, whatever it was
        if distributed.world().size > 1:
            distributed.report_failure(err)
            sys.stderr.flush()
            os._exit(EXIT_FAILED)  # at once, so that the other ranks' collectives fail instead of waiting
        print(f"{name}: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        distributed.leave()
