"""Trained models from the cache: a data set's VQ-VAE and the PixelCNN prior over its codes.

Each model is keyed by its full configuration (profile presets from :mod:`vqtto.models.profiles`, then
the caller's overrides); a model absent from the cache is trained with a progress bar and saved.

    vq = models.vqvae("fashion-mnist", k=40, profile="quick")
    prior = models.prior("fashion-mnist", k=512, profile="quick")   # trains/loads its VQ-VAE too
    prior.train_codes, prior.test_codes                             # the index grids it was trained on

Checkpoint files (what ``vqtto train --out`` writes) are the cache's files: :func:`read_checkpoint`
verifies one and :class:`ModelSource` names the VQ-VAE a command uses (a checkpoint or the cache's).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import cache as artifacts
from ..data import codes
from .. import data as data_mod
from ..device import pick_device
from .pixelcnn import GatedPixelCNN, PixelCNNConfig
from .pixelcnn import evaluate as prior_metrics
from .profiles import apply_overrides, prior_preset, vqvae_preset
from .training import History, PriorHistory, PriorTrainConfig, TrainConfig, train_prior, train_vqvae, vqvae_metrics
from .autoencoder import VQVAE, VQVAEConfig


def _device(device: torch.device | str) -> torch.device:
    return pick_device(device) if isinstance(device, str) else device


def _payload(model: nn.Module, history, test: dict[str, float]) -> dict:
    """What the cache keeps of a trained model: CPU weights, its curves, its test metrics."""
    return {"state_dict": {name: t.cpu() for name, t in model.state_dict().items()},
            "history": history.as_dict(), "test": test}


def _cached(kind: str, config: dict, build: Callable[[], dict], make: Callable[[], nn.Module],
            device: torch.device) -> tuple[nn.Module, dict]:
    """The payload of ``(kind, config)`` (loaded, or built and saved) and a ``make()`` model holding its
    weights, on ``device``, in eval mode. The model is made after any build, as the seeds expect."""
    payload = artifacts.load_or_build(kind, config, build)
    model = make()
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return model, payload


# --- the VQ-VAE ----------------------------------------------------------------------------------

@dataclass
class TrainedVQVAE:
    """A trained VQ-VAE with its history, the test metrics of the final model and its full config."""

    model: VQVAE
    history: History
    test: dict[str, float]
    config: dict

    @property
    def k(self) -> int:
        return self.model.cfg.k


def vqvae_config(dataset: str, k: int, profile: str = "quick", **overrides: Any) -> dict:
    """The full configuration of a VQ-VAE: profile preset, then ``overrides``.

    ``overrides`` may name any :class:`VQVAEConfig` or :class:`TrainConfig` field.
    """
    data_mod.check_name(dataset)
    preset = vqvae_preset(profile)
    apply_overrides(preset, overrides, set(VQVAEConfig.__dataclass_fields__), set(TrainConfig.__dataclass_fields__),
                    "VQ-VAE")
    preset["model"]["k"] = k
    preset["model"]["in_channels"] = 1 if dataset == "fashion-mnist" else 3
    model_cfg = VQVAEConfig(**preset["model"])  # validates
    train_cfg = TrainConfig(**preset["train"])
    return {"dataset": dataset, "model": model_cfg.as_dict(), "train": train_cfg.as_dict()}


def vqvae(dataset: str = "fashion-mnist", k: int = 512, profile: str = "quick", device: torch.device | str = "auto",
          progress: bool = True, **overrides: Any) -> TrainedVQVAE:
    """A trained VQ-VAE from the cache, trained (with a progress bar) and cached if absent.

    ``overrides``: :class:`VQVAEConfig` / :class:`TrainConfig` fields, e.g. ``seed=1``.
    Example: ``models.vqvae("fashion-mnist", k=40, profile="quick")``.
    """
    device = _device(device)
    config = vqvae_config(dataset, k, profile, **overrides)
    train_cfg = TrainConfig(**config["train"])

    def build() -> dict:
        torch.manual_seed(train_cfg.seed)
        model = VQVAE(VQVAEConfig(**config["model"]))
        train = data_mod.load(dataset, "train", limit=train_cfg.train_limit)
        test = data_mod.load(dataset, "test", limit=train_cfg.test_limit)
        hist = train_vqvae(model, train, test, train_cfg, device, progress=progress)
        return _payload(model, hist, vqvae_metrics(model, test.images, device))

    model, payload = _cached("vqvae", config, build, lambda: VQVAE(VQVAEConfig(**config["model"])), device)
    return TrainedVQVAE(model=model, history=History(**payload["history"]), test=payload["test"], config=config)


# --- the PixelCNN prior --------------------------------------------------------------------------

@dataclass
class TrainedPrior:
    """A trained prior (the PixelCNN, or the masked-token prior of :mod:`~vqtto.models.masked`) with
    its curves, test metrics and config, the VQ-VAE whose codes it models and the index grids it was
    trained (``train_codes``) and tested (``test_codes``) on."""

    model: nn.Module
    history: PriorHistory
    test: dict[str, float]
    config: dict
    vqvae: TrainedVQVAE
    train_codes: codes.CodeSet
    test_codes: codes.CodeSet

    @property
    def k(self) -> int:
        return self.model.cfg.k


def prior_config(vqvae_config: dict, profile: str = "quick", class_conditional: bool = False,
                 grid: tuple[int, int] = (7, 7), **overrides: Any) -> dict:
    """The full configuration of a prior: the VQ-VAE's config, the profile's presets, ``overrides``.

    ``overrides`` may name any :class:`PixelCNNConfig` (except k, height, width, n_classes) or
    :class:`PriorTrainConfig` field.
    """
    preset = prior_preset(profile)
    model_fields = set(PixelCNNConfig.__dataclass_fields__) - {"k", "height", "width", "n_classes"}
    apply_overrides(preset, overrides, model_fields, set(PriorTrainConfig.__dataclass_fields__), "prior")
    n_classes = 10 if class_conditional else 0
    model = PixelCNNConfig(k=vqvae_config["model"]["k"], height=grid[0], width=grid[1], n_classes=n_classes,
                           **preset["model"])
    train = PriorTrainConfig(**preset["train"])
    return {"vqvae": vqvae_config, "model": model.as_dict(), "train": train.as_dict()}


def prior(dataset: str = "fashion-mnist", k: int = 512, profile: str = "quick", device: torch.device | str = "auto",
          progress: bool = True, class_conditional: bool = False, vqvae_options: dict | None = None,
          **overrides: Any) -> TrainedPrior:
    """A PixelCNN prior over the codes of ``vqvae(dataset, k, profile)``, from the cache.

    The VQ-VAE comes from the cache (trained if absent), the training and test sets are encoded
    into index grids (cached, :func:`vqtto.data.codes.index_dataset`), and the prior is trained with
    a progress bar and cached under its full config, which includes the VQ-VAE's.

    Args:
        class_conditional: condition on the data set's class labels.
        vqvae_options: keyword options for :func:`vqvae` (e.g. ``{"seed": 0}``).
        overrides: :class:`PixelCNNConfig` / :class:`PriorTrainConfig` fields.
    """
    device = _device(device)
    vq = vqvae(dataset, k=k, profile=profile, device=device, progress=progress, **(vqvae_options or {}))
    limits = prior_config(vq.config, profile, class_conditional, **overrides)["train"]
    train = codes.index_dataset(vq, "train", limit=limits["train_limit"], device=device, progress=progress)
    test = codes.index_dataset(vq, "test", limit=limits["test_limit"], device=device, progress=progress)
    config = prior_config(vq.config, profile, class_conditional, grid=train.grid_shape, **overrides)
    train_cfg = PriorTrainConfig(**config["train"])

    def build() -> dict:
        torch.manual_seed(train_cfg.seed)
        model = GatedPixelCNN(PixelCNNConfig(**config["model"]))
        hist = train_prior(model, train, test, train_cfg, device, progress=progress)
        return _payload(model, hist, prior_metrics(model, test.indices, test.labels, device))

    model, payload = _cached("pixelcnn", config, build, lambda: GatedPixelCNN(PixelCNNConfig(**config["model"])), device)
    return TrainedPrior(model=model, history=PriorHistory(**payload["history"]), test=payload["test"],
                        config=config, vqvae=vq, train_codes=train, test_codes=test)


# --- checkpoint files ----------------------------------------------------------------------------

#: ``(C, H, W)`` of the images of each data set the library knows.
DATASET_SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                  "miniimagenet": (3, data_mod.MINIIMAGENET_SIZE, data_mod.MINIIMAGENET_SIZE)}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, not a vqtto checkpoint, of another kind, corrupt."""


def read_checkpoint(path: Path, kind: str | tuple[str, ...]) -> tuple[dict, dict]:
    """The ``(config, payload)`` of the checkpoint at ``path``, verified, holding a ``kind`` (or one of
    several kinds, then the payload's ``"kind"`` says which); no code runs.

    Raises:
        CheckpointError: naming ``path`` and what is wrong with it.
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    try:
        with open(path, "rb") as fh:
            header = json.loads(fh.readline())
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read it ({err.strerror or err})") from None
    except ValueError:
        raise CheckpointError(f"{path}: not a vqtto checkpoint (no JSON header line)") from None
    if not isinstance(header, dict) or "kind" not in header or "config" not in header:
        raise CheckpointError(f"{path}: not a vqtto checkpoint")
    if header["kind"] not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        raise CheckpointError(f"{path}: holds a {header['kind']!r} checkpoint, not a {wanted} one")
    try:
        payload = artifacts.read(path, header["kind"], header["config"])
        return header["config"], ({**payload, "kind": header["kind"]} if len(kinds) > 1 else payload)
    except (artifacts.CorruptArtifact, artifacts.ArtifactMismatch) as err:
        raise CheckpointError(str(err)) from None


def image_shape(config: dict) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images a VQ-VAE of ``config`` was trained on."""
    dataset = config["dataset"]
    return tuple(dataset["shape"]) if isinstance(dataset, dict) else DATASET_SHAPES[dataset]


def vqvae_from(config: dict, payload: dict, device: torch.device) -> TrainedVQVAE:
    """A checkpoint's ``(config, payload)`` -> :class:`TrainedVQVAE` on ``device``, in eval mode."""
    model = VQVAE(VQVAEConfig(**config["model"]))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return TrainedVQVAE(model=model, history=History(**payload["history"]), test=payload["test"], config=config)


def prior_from(config: dict, payload: dict, device: torch.device, kind: str = "pixelcnn") -> nn.Module:
    """A prior checkpoint's ``(config, payload)`` -> the :class:`GatedPixelCNN` (``kind`` "pixelcnn") or
    :class:`~vqtto.models.masked.MaskedTokenPrior` ("masked-prior") on ``device``, in eval mode."""
    if kind == "masked-prior":
        from .masked import MaskedPriorConfig, MaskedTokenPrior

        model = MaskedTokenPrior(MaskedPriorConfig(**config["model"]))
    else:
        model = GatedPixelCNN(PixelCNNConfig(**config["model"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()


@dataclass
class ModelSource:
    """The VQ-VAE a command uses: a verified checkpoint, or the cache's (trained there if absent).

    Attributes:
        config: its full config (what keys the cache).
        payload: the checkpoint's contents; None for the cache's model.
        cached: ``dataset``, ``k`` and ``profile`` of the cache's model; None for a checkpoint.
        label: how messages and records name it.
    """

    config: dict
    payload: dict | None
    cached: dict | None
    label: str

    @classmethod
    def of(cls, checkpoint: Path | None, dataset: str = "fashion-mnist", k: int = 512,
           profile: str = "quick") -> "ModelSource":
        """The checkpoint at ``checkpoint`` (verified now), or the cache's model of ``dataset``, ``k``, ``profile``."""
        if checkpoint is not None:
            config, payload = read_checkpoint(checkpoint, "vqvae")
            return cls(config, payload, None, str(checkpoint))
        return cls(vqvae_config(dataset, k, profile), None, {"dataset": dataset, "k": k, "profile": profile},
                   f"the cache's {dataset} VQ-VAE, k={k}, profile {profile}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return image_shape(self.config)

    def load(self, device: torch.device, progress: bool) -> TrainedVQVAE:
        """The :class:`TrainedVQVAE` (the cache's is trained and cached if absent)."""
        if self.payload is None:
            return vqvae(**self.cached, device=device, progress=progress)
        return vqvae_from(self.config, self.payload, device)

    def cached_prior(self, profile: str) -> tuple[dict, dict] | None:
        """``(config, payload)`` of the unconditional PixelCNN over this model's codes if the cache
        holds one (for a known data set at ``profile``), else None; nothing is trained."""
        if self.cached is None:
            return None
        shape = self.image_shape
        grid = (shape[1] // 4, shape[2] // 4)
        config = prior_config(self.config, profile, grid=grid)
        path = artifacts.path_for("pixelcnn", config)
        if not path.exists():
            return None
        return config, artifacts.read(path, "pixelcnn", config)


def vqvae_on_images(config: dict, images: torch.Tensor, device: torch.device, progress: bool) -> TrainedVQVAE:
    """Train (or load from the cache) a VQ-VAE of ``config`` on ``images`` ``(N, C, H, W)``; evaluated on them too."""
    cfg = TrainConfig(**config["train"])
    data = data_mod.ImageSet(images, torch.zeros(images.shape[0], dtype=torch.long), "folder")

    def build() -> dict:
        torch.manual_seed(cfg.seed)
        model = VQVAE(VQVAEConfig(**config["model"]))
        hist = train_vqvae(model, data, data, cfg, device, progress=progress)
        return _payload(model, hist, vqvae_metrics(model, images[: cfg.test_limit], device))

    return vqvae_from(config, artifacts.load_or_build("vqvae", config, build), device)


def prior_of(vq: TrainedVQVAE, profile: str, class_conditional: bool, device: torch.device, progress: bool,
             images: torch.Tensor | None = None, **overrides: Any) -> tuple[dict, dict]:
    """A PixelCNN over the codes of a checkpoint's VQ-VAE ``vq``: over its data set's splits, or over
    ``images`` (the folder it was trained on); from the cache or trained. Returns ``(config, test metrics)``."""
    limits = prior_config(vq.config, profile, class_conditional, **overrides)["train"]
    if images is not None:
        grids = codes.encode(vq.model, images, device, progress=progress)
        sets = [codes.CodeSet(grids, torch.zeros(len(grids), dtype=torch.long), vq.k, "folder")] * 2
    else:
        sets = [codes.index_dataset(vq, split, limit=limits[f"{split}_limit"], device=device, progress=progress)
                for split in ("train", "test")]
    config = prior_config(vq.config, profile, class_conditional, grid=sets[0].grid_shape, **overrides)
    cfg = PriorTrainConfig(**config["train"])

    def build() -> dict:
        torch.manual_seed(cfg.seed)
        model = GatedPixelCNN(PixelCNNConfig(**config["model"]))
        hist = train_prior(model, sets[0], sets[1], cfg, device, progress=progress)
        return _payload(model, hist, prior_metrics(model, sets[1].indices, sets[1].labels, device))

    return config, artifacts.load_or_build("pixelcnn", config, build)["test"]


def export(kind: str, config: dict, out: Path | None) -> Path:
    """Copy the cache's file of ``(kind, config)`` to ``out`` atomically (when given); returns the cache path."""
    path = artifacts.path_for(kind, config)
    if out is not None:
        artifacts.write_atomically(out, path.read_bytes())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(out, 0o666 & ~umask)  # a file for the user, not the cache's private temporary
    return path
