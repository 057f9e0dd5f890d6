"""The command line: ``vqtto train | prior | search | book`` (also ``python -m vqtto``).

Each command first checks everything it was given (files, images, masks, checkpoints, the
output path) and refuses bad input with exit code 2 before any work; then it runs the same
library functions the notebooks call. Run under ``torchrun`` it trains data-parallel and shards
the search pairs across the ranks (:mod:`vqtto.distributed`); only rank 0 writes.

Checkpoints (``train --out``, ``prior --out``, ``search --model``) are the cache's files
(:mod:`vqtto.cache`: one JSON header line and tensors read with ``weights_only=True``), so
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from . import distributed, search
from . import tasks as tasks_mod
from . import data as data_mod
from .data import images as images_mod
from .device import pick_device
from .models.profiles import PROFILES

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


# --- models: checkpoints and the cache (vqtto.models does the work) ------------------------------

def model_source(path: Path | None, dataset: str = "fashion-mnist", k: int = 512, profile: str = "quick"):
    """:meth:`vqtto.models.ModelSource.of`, its checkpoint errors as :class:`BadInput` naming ``--model``."""
    from . import models

    try:
        return models.ModelSource.of(path, dataset, k, profile)
    except models.CheckpointError as err:
        raise BadInput(f"--model {err}") from None


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
            tv = models.vqvae_on_images(config, imgs, device, progress)
        return tv.config, (f"VQ-VAE k={tv.k}: test MSE {tv.test['recon']:.5f}, {tv.test['codes_used']} codes used, "
                           f"perplexity {tv.test['perplexity']:.1f}")

    return _training_work(args, "vqvae", build)


def _training_work(args, kind: str, build: Callable[[torch.device, bool], tuple[dict, str]]) -> Callable[[], int]:
    """The work of ``train`` and ``prior``: ``build(device, progress) -> (config, summary)`` on every
    rank into the staged cache; rank 0 then exports the cache file to ``--out`` and reports."""
    from . import models

    def work() -> int:
        world, device = distributed.init(pick_device(args.device))
        with distributed.staged_cache():
            config, summary = build(device, not args.quiet and world.main)
        if world.main:
            path = models.export(kind, config, args.out)
            print(summary)
            print(f"checkpoint: {args.out or path}")
        return EXIT_OK

    return work


# --- prior -----------------------------------------------------------------------------------------

def check_prior(args) -> Callable[[], int]:
    """Validate ``vqtto prior``; returns the work."""
    from . import models

    if args.out is not None:
        check_output(args.out, args.overwrite, folder=False)
    source = model_source(args.model, args.dataset, args.k, args.profile)
    overrides = _train_overrides(args)
    folder = isinstance(source.config["dataset"], dict)
    if folder and args.class_conditional:
        raise BadInput(f"--class-conditional: the model {source.label} was trained on a folder, which has no labels")
    if args.kind == "masked":
        return _check_masked_prior(args, overrides)
    models.prior_config(source.config, args.profile, args.class_conditional, **overrides)  # validates

    def build(device: torch.device, progress: bool) -> tuple[dict, str]:
        if args.model is None:
            trained = models.prior(args.dataset, k=args.k, profile=args.profile, device=device, progress=progress,
                                   class_conditional=args.class_conditional, **overrides)
            config, test = trained.config, trained.test
        else:
            vq = source.load(device, progress)
            folder = folder_images(vq.config["dataset"]) if isinstance(vq.config["dataset"], dict) else None
            config, test = models.prior_of(vq, args.profile, args.class_conditional, device, progress, folder,
                                           **overrides)
        return config, (f"PixelCNN prior k={config['model']['k']}: test {test['nats_per_position']:.4f} nats per "
                        f"position, {test['bits_per_image']:.1f} bits per image (uniform: {test['uniform_nats']:.4f})")

    return _training_work(args, "pixelcnn", build)


def _check_masked_prior(args, overrides: dict) -> Callable[[], int]:
    """``vqtto prior --kind masked``: the masked-token prior over the cache's model's codes."""
    from .models import masked as masked_prior

    if args.model is not None or args.class_conditional:
        raise BadInput("--kind masked trains over the cache's models (--dataset, --k, --profile); it takes neither "
                       "--model nor --class-conditional")
    source = model_source(None, args.dataset, args.k, args.profile)
    masked_prior.masked_prior_config(source.config, args.profile, **overrides)  # validates

    def build(device: torch.device, progress: bool) -> tuple[dict, str]:
        trained = masked_prior.masked_prior(args.dataset, k=args.k, profile=args.profile, device=device,
                                            progress=progress, **overrides)
        return trained.config, (f"masked-token prior k={trained.k}: test pseudo-NLL "
                                f"{trained.test['pseudo_nats_per_position']:.4f} nats per position")

    return _training_work(args, "masked-prior", build)


# --- search ----------------------------------------------------------------------------------------

#: ``--task`` name -> the :data:`vqtto.tasks.KINDS` it poses: the names of the :mod:`vqtto.tasks`
#: constructors (``super-resolve`` is ``tasks.super_resolve``), one vocabulary for both.
TASK_KINDS = {name.replace("_", "-"): kind for kind, name in tasks_mod.CONSTRUCTORS.items()}
TASKS = tuple(TASK_KINDS)
#: Options of ``search`` that every method takes (solve's own), so not among the method settings.
GENERAL = ("budget", "chains", "seed")


def method_settings(method: str) -> dict:
    """The settings ``--method`` takes as options, with their defaults (its registry settings less :data:`GENERAL`)."""
    return {n: d for n, d in search.registry.settings_of(method).items() if n not in GENERAL}


def _setting_doc(name: str) -> tuple[str, str]:
    """The first clause of the setting's description in a search function's docstring, and its annotation."""
    text, annotation = name.replace("_", " "), ""
    for spec in reversed(list(search.REGISTRY.values())):  # the first method's description wins
        param = inspect.signature(spec.fn).parameters.get(name)
        if param is None:
            continue
        annotation = str(param.annotation)
        found = re.search(rf"^\s+{name}: (.+?)(?=\n\s+\w+: |\n\s*\n|\Z)", spec.fn.__doc__ or "", re.M | re.S)
        if found:
            text = re.split(r"(?<=[^.])[.;] ", " ".join(found.group(1).replace("``", "").split()), maxsplit=1)[0]
    return text.rstrip("."), annotation


def all_settings() -> dict[str, dict[str, object]]:
    """setting -> {method: default} over every method of the registry."""
    table: dict[str, dict[str, object]] = {}
    for method in search.registry.ids():
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
    """What a search runs on, checked: the evidence ``targets`` ``(B, C, H, W)`` (super-resolve:
    possibly ``(B, C, H/f, W/f)``), the start images ``sources`` (None: start from the evidence),
    their names, and the hidden pixels ``(H, W)`` bool of inpainting."""

    targets: torch.Tensor
    sources: torch.Tensor | None
    source_names: list
    target_names: list
    hidden: torch.Tensor | None = None


def _pairs_inputs(args, source) -> SearchInputs:
    from .data import pairs

    dataset = source.config["dataset"]
    if not isinstance(dataset, str):
        raise BadInput(f"--pairs draws test images of the model's data set, but {source.label} was trained on a folder; "
                       "give --source/--target")
    pp = pairs.test_pairs(dataset, args.pairs, args.pair_seed)
    return SearchInputs(pp.targets, pp.sources, [f"{dataset} test #{i}" for i in pp.source_ids.tolist()],
                        [f"{dataset} test #{i}" for i in pp.target_ids.tolist()])


def _file_inputs(args, shape: tuple[int, int, int]) -> SearchInputs:
    """The evidence (``--target``, else ``--source``) and the start images (``--source`` when a
    ``--target`` is given); super-resolve takes low-resolution evidence ``(C, H/f, W/f)`` too."""
    first, first_names = read_inputs(args.source, "--source")
    low = (shape[0], shape[1] // args.factor, shape[2] // args.factor)
    super_resolve = args.task == "super-resolve"
    if args.target is None:
        if not (super_resolve and tuple(first.shape[1:]) == low):
            _check_shape(first, shape, f"--source {args.source}")
        return SearchInputs(first, None, first_names, first_names)
    _check_shape(first, shape, f"--source {args.source}")
    targets, target_names = read_inputs(args.target, "--target")
    if not (super_resolve and tuple(targets.shape[1:]) == low):
        _check_shape(targets, shape, f"--target {args.target}")
    n, m = len(first), len(targets)
    if n != m and 1 not in (n, m):
        raise BadInput(f"--source gives {n} images and --target {m}: give as many of each, or one of either")
    if m == 1 and n > 1:
        targets, target_names = targets.expand(n, -1, -1, -1), target_names * n
    if n == 1 and m > 1:
        first, first_names = first.expand(m, -1, -1, -1), first_names * m
    return SearchInputs(targets, first, first_names, target_names)


def _check_shape(images: torch.Tensor, shape, what: str) -> None:
    """check_shape with the error as :class:`BadInput`."""
    try:
        images_mod.check_shape(images, shape, what)
    except images_mod.ImageError as err:
        raise BadInput(str(err)) from None


#: ``search`` option -> (lowest, highest, whether the lowest is excluded, what it counts): every number
#: the command takes besides the method settings (which their searches check), refused outside.
BOUNDS = {
    "budget": (0.0, 1e6, True, "decoder-call equivalents per image"),
    "weight": (0.0, 1e3, False, "task loss per nat per position"),
    "samples": (1, 4096, False, "the prior's draws per image"),
    "chains": (1, 1024, False, "chains per image"),
    "pairs": (1, 100_000, False, "test pairs"),
    "pair_seed": (0, 2**32 - 1, False, "a seed"),
    "seed": (0, 2**32 - 1, False, "a seed"),
    "radius": (1, 4096, False, "token positions that may differ from the source's code"),
    "factor": (2, 64, False, "the average-pooling factor"),
}


def check_bounds(args) -> None:
    """Refuse any option of :data:`BOUNDS` outside its range (None: not given), naming it and the range."""
    for name, (lo, hi, open_lo, what) in BOUNDS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        ok = (lo < value if open_lo else lo <= value) and value <= hi  # NaN fails both
        if not ok:
            flag = "--" + name.replace("_", "-")
            raise BadInput(f"{flag} must be in {'(' if open_lo else '['}{lo:g}, {hi:g}] ({what}), got {value}")


def _check_task_options(args) -> None:
    """The options that belong to one task: --radius (edit), --mask (inpaint), --factor (super-resolve)."""
    if args.task == "edit":
        if args.radius is None or args.radius < 1:
            raise BadInput(f"--task edit needs --radius, an integer >= 1 (positions that may differ from the source's "
                           f"code), got {args.radius}")
        if not search.registry.get(args.method).radius:
            raise BadInput(f"--task edit needs a --method that stays within a radius: one of "
                           f"{', '.join(search.registry.supporting(radius=True))}; got {args.method}")
        if args.target is None and args.pairs is None:
            raise BadInput("--task edit needs --target: the edited image the search should reach")
    elif args.radius is not None:
        raise BadInput(f"--radius applies to --task edit, not {args.task}")
    if args.mask is not None and args.task != "inpaint":
        raise BadInput(f"--mask applies to --task inpaint, not {args.task}")
    if args.task == "inpaint" and args.mask is None:
        raise BadInput("--task inpaint needs --mask (a PNG: white = visible pixels)")
    if args.task == "inpaint" and not search.registry.get(args.method).movable:
        raise BadInput(f"--task inpaint needs a --method that keeps the visible region's codes: one of "
                       f"{', '.join(search.registry.supporting(movable=True))}; got {args.method}")


def _settings(args) -> dict:
    """The method settings given on the command line, checked against the method (nothing runs)."""
    given = {name for name in all_settings() if hasattr(args, name)}
    allowed = method_settings(args.method)
    if given - set(allowed):
        flags = lambda names: ", ".join("--" + n.replace("_", "-") for n in sorted(names))  # noqa: E731
        raise BadInput(f"--method {args.method} does not take {flags(given - set(allowed))}; it takes {flags(allowed)}")
    settings = {name: getattr(args, name) for name in given}
    if args.chains is not None and args.prior is None and search.registry.get(args.method).chains:
        settings["chains"] = args.chains
    try:
        search.registry.check_settings(args.method, settings)
    except ValueError as err:
        raise BadInput(f"--method {args.method}: {err}") from None
    return settings


#: Where a guided search's chains start (``--starts``).
STARTS = ("auto", "exemplars", "prior")


@dataclass
class PriorChoice:
    """The prior a search uses: its config and payload (None: no prior), where it came from, and its weight."""

    config: dict | None
    payload: dict | None
    label: str
    weight: float | None
    starts: str = "prior"


def _prior_choice(args, source) -> PriorChoice:
    """``--prior`` (verified against the model), else the cache's prior over the cache's model for
    the tasks where the book uses one (not reconstruct), unless ``--no-prior``."""
    from . import models, tasks

    if args.prior is not None:
        if args.no_prior:
            raise BadInput("--prior and --no-prior contradict each other")
        try:
            config, payload = models.read_checkpoint(args.prior, ("pixelcnn", "masked-prior"))
        except models.CheckpointError as err:
            raise BadInput(f"--prior {err}") from None
        if config.get("vqvae") != source.config:
            raise BadInput(f"--prior {args.prior} models the codes of another VQ-VAE than {source.label}")
        if config["model"].get("n_classes"):  # a PixelCNN's; a masked prior has none
            raise BadInput(f"--prior {args.prior} is class-conditional; a search needs an unconditional prior")
        chosen = PriorChoice(config, payload, str(args.prior), None)
    elif args.no_prior or args.task == "reconstruct" or source.cached is None:
        chosen = PriorChoice(None, None, "none", None)
    else:
        found = source.cached_prior(source.cached["profile"])
        chosen = (PriorChoice(None, None, "none (none in the cache)", None) if found is None else
                  PriorChoice(found[0], {**found[1], "kind": "pixelcnn"}, "the cache's PixelCNN over the model's codes",
                              None))
    if chosen.config is None:
        if args.weight is not None:
            raise BadInput("--weight needs a prior: give --prior (or use the cache's, without --no-prior)")
        if args.starts == "exemplars":
            raise BadInput("--starts exemplars needs a prior: give --prior (or use the cache's, without --no-prior)")
        return chosen
    if args.method not in tasks.guided.GUIDED:
        raise BadInput(f"--method {args.method} cannot search with a prior; one of {', '.join(tasks.guided.GUIDED)} "
                       f"can (or pass --no-prior)")
    chosen.weight = tasks.default_weight(TASK_KINDS[args.task]) if args.weight is None else args.weight
    chosen.starts = _starts(args, source)
    chains, budget = args.chains or 4, tasks.DEFAULT_BUDGET if args.budget is None else args.budget
    if chains > args.samples:
        raise BadInput(f"--chains ({chains}) must be <= --samples ({args.samples}): each chain starts at one draw")
    if args.task != "edit" and budget <= args.samples:
        raise BadInput(f"--budget ({budget:g}) must exceed --samples ({args.samples}): each draw costs one equivalent")
    return chosen


def _starts(args, source) -> str:
    """``--starts`` resolved: exemplars (the model's training images nearest to the evidence) or the
    prior's draws. ``auto`` takes exemplars for inpaint and super-resolve where the training images
    are known (a cache model's data set, or the folder it was trained on)."""
    known = isinstance(source.config.get("dataset"), (str, dict))
    if args.starts == "exemplars":
        if args.task not in ("inpaint", "super-resolve"):
            raise BadInput(f"--starts exemplars applies to --task inpaint or super-resolve, not {args.task}")
        if not known:
            raise BadInput("--starts exemplars needs the model's training images, which its checkpoint does not name")
        return "exemplars"
    if args.starts == "auto" and known and args.task in ("inpaint", "super-resolve"):
        return "exemplars"
    return "prior"


def training_images(source) -> torch.Tensor:
    """The images ``(N, C, H, W)`` the model behind ``source`` was trained on (its data set's training
    split, or its training folder, checked against the digest in its config)."""
    from . import data

    entry = source.config["dataset"]
    return folder_images(entry) if isinstance(entry, dict) else data.load(entry, "train").images


def check_search(args) -> Callable[[], int]:
    """Validate ``vqtto search``; returns the work."""
    check_output(args.out, args.overwrite, folder=True)
    check_bounds(args)
    _check_task_options(args)
    settings = _settings(args)
    if (args.source is None) == (args.pairs is None):
        raise BadInput("give --source (and --target) image files or folders, or --pairs N; not both")
    if args.source is None and args.target is not None:
        raise BadInput("--target needs --source")
    source = model_source(args.model)
    shape = source.image_shape
    if args.task == "super-resolve" and (args.factor < 2 or shape[1] % args.factor or shape[2] % args.factor):
        raise BadInput(f"--factor {args.factor} must be >= 2 and divide the model's image size {shape[2]}x{shape[1]}")
    prior = _prior_choice(args, source)
    inputs = _file_inputs(args, shape) if args.source is not None else _pairs_inputs(args, source)
    if args.mask is not None:
        try:
            visible = images_mod.read_mask(args.mask, shape[1:])
        except images_mod.ImageError as err:
            raise BadInput(f"--mask {err}") from None
        inputs.hidden = visible < 0.5
    return lambda: _run_search(args, source, prior, inputs, settings)


def build_task(args, model, inputs: SearchInputs, shape: tuple[int, int, int]):
    """The :class:`vqtto.tasks.Task` of the command: what the user gave, as the library poses it
    (``shape``: the model's ``(C, H, W)``)."""
    from . import tasks
    from .latent import encode_grids

    dev = model.codebook.device
    targets = inputs.targets.to(dev)
    if args.task == "super-resolve":
        low = targets if targets.shape[-1] != shape[2] else search.downscale(targets, args.factor)
        task = tasks.super_resolve(low, args.factor)
    elif args.task == "inpaint":
        task = tasks.inpaint(targets, inputs.hidden.to(dev), model)
    elif args.task == "edit":
        return tasks.edit(targets, encode_grids(model, inputs.sources), args.radius)
    else:
        task = tasks.reconstruct(targets)
    return task if inputs.sources is None else replace(task, source=inputs.sources.to(dev))


def _run_search(args, source, prior: PriorChoice, inputs: SearchInputs, settings: dict) -> int:
    from . import models, tasks

    world, device = distributed.init(pick_device(args.device))
    progress = not args.quiet and world.main
    with distributed.staged_cache():
        vq = source.load(device, progress)
    model = vq.model
    pixelcnn = None if prior.config is None else models.prior_from(prior.config, prior.payload, device,
                                                                   prior.payload["kind"])
    task = build_task(args, model, inputs, source.image_shape)
    budget = tasks.DEFAULT_BUDGET if args.budget is None else args.budget
    kw = dict(method=args.method, prior=pixelcnn, weight=prior.weight, budget=budget, seed=args.seed,
              settings=settings, progress=progress)
    if pixelcnn is not None:
        kw.update(samples=args.samples, chains=args.chains or 4)
        if prior.starts == "exemplars":
            kw["exemplars"] = training_images(source).to(device)
    tasks.check_solve(task, args.method, pixelcnn, prior.weight, budget, kw.get("samples", 32), kw.get("chains", 4))
    t0 = time.perf_counter()
    seeds = search.pair_seeds(args.seed, len(task))  # one per image, so a share draws what the whole run draws

    def solve_share(rows: torch.Tensor):
        return tasks.solve(model, task.rows(rows.to(device)), **{**kw, "seed": [seeds[i] for i in rows.tolist()]})

    found = distributed.sharded(solve_share, len(task), join=tasks.Solution.join)
    wall = time.perf_counter() - t0
    if world.main:
        write_folder(args.out, lambda tmp: _write_search(tmp, args, source, prior, inputs, found, wall))
        print(f"{len(found)} images solved with {found.method} ({args.task}, prior: {prior.label}, starts: {prior.starts if prior.config else '-'}) in {wall:.1f} s on "
              f"{world.size} process(es): mean loss {found.losses.mean():.5f} (start {found.start_losses.mean():.5f}); "
              f"results in {args.out}")
    return EXIT_OK


def _write_search(folder: Path, args, source, prior: PriorChoice, inputs: SearchInputs, found, wall: float) -> None:
    """The found images (PNG), their codes (``codes.pt``) and ``record.json`` into ``folder``."""
    from .progress import progress_bar

    names = []
    for i in progress_bar(range(len(found)), desc="writing", disable=args.quiet):
        names.append(f"found_{i:03d}.png")
        images_mod.write_png(folder / names[-1], found.images[i])
    torch.save({"start": found.start, "best": found.grids, "final": found.final}, folder / "codes.pt")
    trace = found.trace
    distinct = [int(g.shape[0]) for g in trace.grids] if trace is not None else [None] * len(found)
    stops = list(trace.stop_reason) if trace is not None else ["budget"] * len(found)
    best = trace.best_losses.tolist() if trace is not None else found.losses.tolist()
    options = {name: value for name, value in vars(args).items() if name not in ("handler", "argv")}
    record = {
        "command": shlex.join(["vqtto", *args.argv]),
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in options.items()}, "search": found.settings},
        "model": {"source": source.label, "config": source.config},
        "prior": {"source": prior.label, "weight": prior.weight, "starts": prior.starts, "config": prior.config},
        "method": found.method,
        "pairs": [{"source": s, "target": t, "found": f, "found_loss": float(fl), "start_loss": float(sl),
                   "best_loss": float(bl), "distinct_grids": d, "stop_reason": r}
                  for s, t, f, fl, sl, bl, d, r in zip(inputs.source_names, inputs.target_names, names,
                                                       found.losses.tolist(), found.start_losses.tolist(), best,
                                                       distinct, stops)],
        "costs": {"decoded_images": found.decoded_images, "equivalents_per_pair": found.equivalents,
                  "search_seconds": found.seconds * len(found), "wall_seconds": wall,
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
    p.add_argument("--profile", default="quick", choices=PROFILES, help="model presets (vqtto.models.profiles)")
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
    p.add_argument("--kind", default="pixelcnn", choices=("pixelcnn", "masked"),
                   help="pixelcnn: raster-order PixelCNN; masked: a bidirectional masked-token prior (MaskGIT-style), "
                        "whose completions see every visible code")
    _common(p, "checkpoint file to write (default: the cache only)")
    p.set_defaults(handler=check_prior)

    s = sub.add_parser("search", help="solve a task in a VQ-VAE's codes: reconstruct, super-resolve, inpaint, edit",
                       formatter_class=HelpFormatter, epilog=EPILOG,
                       description="Find the codes whose decoded image best meets the task's constraint, with "
                                   "vqtto.tasks.solve: the book's best method by default, with the PixelCNN prior in "
                                   "the search when one is given (--prior) or cached for the model (not for "
                                   "reconstruct). Writes found_NNN.png, codes.pt and record.json into --out.")
    s.add_argument("--model", type=Path, default=None,
                   help="VQ-VAE checkpoint (default: the book's quick Fashion-MNIST model, k=512, from the cache)")
    s.add_argument("--source", type=Path, default=None,
                   help="image file or folder: the evidence when --target is absent (super-resolve: may be "
                        "low-resolution), else the images the search starts from (edit: the originals)")
    s.add_argument("--target", type=Path, default=None,
                   help="the evidence: target, masked or edited images, or low-resolution ones (default: --source)")
    s.add_argument("--pairs", type=int, default=None, help="instead of files: N random test pairs of the model's data set")
    s.add_argument("--pair-seed", type=int, default=0, help="seed of the --pairs draw (the book's chapters use 0)")
    s.add_argument("--task", default="reconstruct", choices=TASKS, help="the constraint on the evidence")
    s.add_argument("--factor", type=int, default=2, help="super-resolve: average-pooling factor")
    s.add_argument("--mask", type=Path, default=None, help="inpaint: mask image, white = visible pixels")
    s.add_argument("--radius", type=int, default=None,
                   help="edit: the found code differs from the source's in at most this many positions (>= 1; "
                        "methods " + ", ".join(search.registry.supporting(radius=True)) + ")")
    s.add_argument("--method", default=search.DEFAULT, choices=search.registry.ids(),
                   help="; ".join(f"{m}: {spec.summary}" for m, spec in search.REGISTRY.items()))
    s.add_argument("--budget", type=float, default=None,
                   help="decoder-call equivalents per image, the prior's draws included (default: "
                        "vqtto.tasks.DEFAULT_BUDGET, 1000)")
    s.add_argument("--prior", type=Path, default=None,
                   help="prior checkpoint over the model's codes (vqtto prior --out; PixelCNN or masked): put it in "
                        "the search")
    s.add_argument("--no-prior", action="store_true", help="do not use the cache's prior even where there is one")
    s.add_argument("--weight", type=float, default=None,
                   help="the prior's weight, task loss per nat per position (default: the book's tuned weight for "
                        "the task, vqtto.tasks.default_weight)")
    s.add_argument("--starts", choices=STARTS, default="auto",
                   help="with a prior, where the chains start (inpaint, super-resolve): 'exemplars', the codes of the "
                        "model's training images nearest to each image's evidence; 'prior', the prior's draws; "
                        "'auto' (default): exemplars where the model's training images are known, as chapter 8 "
                        "measures best")
    s.add_argument("--samples", type=int, default=32, help="with a prior: its draws per image (each chain starts at one)")
    s.add_argument("--chains", type=int, default=None, help="chains per image (with a prior: 4; samplers: theirs)")
    s.add_argument("--seed", type=int, default=0, help="seed of the draws and of the searches that draw")
    _add_settings(s)
    _common(s, "output folder (required)", out_required=True)
    s.set_defaults(handler=check_search)

    b = sub.add_parser("book", help="execute the book's chapters, build the site (python -m vqtto.book)",
                       formatter_class=HelpFormatter, description=book.__doc__)
    book.add_commands(b.add_subparsers(dest="cmd", required=True), HelpFormatter)
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
