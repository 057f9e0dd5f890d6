"""Measures of a completion (an inpainted image) against the truth, beyond the MSE.

A sharp, plausible completion that puts an edge a little off scores a worse MSE than a blurry
average of many completions, so the MSE alone rewards blur. Beside it:

- :func:`hidden_mse` and :func:`hidden_psnr`: the error on the hidden pixels only.
- :func:`ssim_map` / :func:`hidden_ssim`: the structural similarity (Wang et al. 2004) computed
  with a Gaussian window at every pixel, averaged over the hidden pixels: it compares local
  means, contrasts and correlations, so a blurred completion loses on contrast and structure.
- :func:`class_consistency`: whether a small Fashion-MNIST classifier (:func:`classifier`,
  trained and cached by the library) puts the completed image in the truth's class, and how sure
  it is.

Images are ``(B, C, H, W)`` in [0, 1]; ``hidden`` masks are ``(B, 1, H, W)`` bool (True = hidden),
as :attr:`vqtto.tasks.Task.measured` of an inpainting task.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import data as data_mod
from ..models import _cached, _device, _payload
from ..models.profiles import apply_overrides, classifier_preset
from . import psnr
from ..models.training import _Points, _Settings, cosine_decay, fit

__all__ = ["Classifier", "ClassifierConfig", "ClassifierHistory", "ClassifierTrainConfig", "TrainedClassifier",
           "class_consistency", "classifier", "classifier_config", "hidden_mse", "hidden_psnr", "hidden_ssim",
           "ssim_map"]


# --- pixel measures -------------------------------------------------------------------------------

def _check_pair(images, truth, hidden) -> None:
    for name, x in (("images", images), ("truth", truth)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a float (B, C, H, W) image tensor, got {got}")
    if images.shape != truth.shape:
        raise ValueError(f"images must have the truth's shape {tuple(truth.shape)}, got {tuple(images.shape)}")
    if hidden is not None:
        want = (truth.shape[0], 1, *truth.shape[2:])
        if not isinstance(hidden, torch.Tensor) or hidden.dtype != torch.bool or tuple(hidden.shape) != want:
            got = f"{hidden.dtype} {tuple(hidden.shape)}" if isinstance(hidden, torch.Tensor) else type(hidden).__name__
            raise ValueError(f"hidden must be a bool mask {want} (True = hidden), got {got}")
        if bool((hidden.flatten(1).sum(1) == 0).any()):
            raise ValueError("hidden must hide at least one pixel of every image")


def _over_hidden(values: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``(B, C, H, W)`` over the hidden pixels ``(B, 1, H, W)`` of each image -> ``(B,)``."""
    m = hidden.to(values.device).expand_as(values).to(values.dtype)
    return (values * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def hidden_mse(images: torch.Tensor, truth: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """``(B,)`` mean squared error of ``images`` against ``truth`` over the ``hidden`` pixels."""
    _check_pair(images, truth, hidden)
    return _over_hidden((images - truth.to(images.device)).pow(2), hidden).cpu()


def hidden_psnr(images: torch.Tensor, truth: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """``(B,)`` PSNR in dB of the hidden-pixel MSE (pixels in [0, 1])."""
    return psnr(hidden_mse(images, truth, hidden))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-x.pow(2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim_map(images: torch.Tensor, truth: torch.Tensor, *, window: int = 7, sigma: float = 1.5,
             c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """The SSIM at every pixel ``(B, C, H, W)`` of ``images`` against ``truth`` (both in [0, 1]).

    Local means, variances and covariance are Gaussian-weighted averages (``window`` x ``window``,
    std ``sigma``; the image is extended by reflection at its borders, so the map has the image's
    size); ``c1``, ``c2`` are the usual stabilisers for a dynamic range of 1. 1 where the two
    agree exactly, lower for a change of mean, contrast or structure.

    Args:
        window: odd integer >= 3, at most the image's smaller side.
        sigma: > 0.
    """
    _check_pair(images, truth, None)
    side = min(truth.shape[-2:])
    if isinstance(window, bool) or not isinstance(window, int) or window < 3 or window % 2 == 0 or window > side:
        raise ValueError(f"window must be an odd integer in [3, {side}] (the image's smaller side), got {window!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    x, y = images.float(), truth.float().to(images.device)
    c = x.shape[1]
    kernel = _gaussian_window(window, float(sigma), x.device).expand(c, 1, window, window)
    pad = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), kernel, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def hidden_ssim(images: torch.Tensor, truth: torch.Tensor, hidden: torch.Tensor, **options: Any) -> torch.Tensor:
    """``(B,)`` the :func:`ssim_map` averaged over the ``hidden`` pixels (and channels).

    The windows around hidden pixels near the region's edge also see visible pixels, so the
    measure includes how well the completion joins what was kept. ``options``: of :func:`ssim_map`.
    """
    _check_pair(images, truth, hidden)
    return _over_hidden(ssim_map(images, truth, **options), hidden).cpu()


# --- the classifier -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifierConfig:
    """A small CNN classifier: two 3x3 conv + ReLU + 2x2 max-pool blocks (``channels``, then
    ``2 * channels``), a hidden layer of ``hidden`` units, ``n_classes`` outputs.

    Attributes:
        in_channels: image channels (1 for Fashion-MNIST).
        height, width: the image size; both divisible by 4.
    """

    in_channels: int = 1
    height: int = 28
    width: int = 28
    channels: int = 16
    hidden: int = 64
    n_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("in_channels", "height", "width", "channels", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.height % 4 or self.width % 4:
            raise ValueError(f"height and width must be divisible by 4 (two 2x2 poolings), got {self.height}x{self.width}")
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, int) or self.n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {self.n_classes!r}")

    def as_dict(self) -> dict:
        return asdict(self)


class Classifier(nn.Module):
    """Images ``(B, C, H, W)`` in [0, 1] -> class logits ``(B, n_classes)``."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.net = nn.Sequential(
            nn.Conv2d(cfg.in_channels, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * c * (cfg.height // 4) * (cfg.width // 4), cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.n_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


@dataclass(frozen=True)
class ClassifierTrainConfig(_Settings):
    """How the classifier is trained (Adam, cosine-decayed learning rate, cross-entropy).

    Attributes:
        epochs, batch_size, lr, seed, evals_per_epoch: the :class:`~vqtto.models.training.Loop`'s.
        train_limit / test_limit: the first images of each split (None: all).
    """

    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    train_limit: int | None = None
    test_limit: int | None = None
    evals_per_epoch: int = 2

    def __post_init__(self) -> None:
        self.loop()
        for name in ("train_limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")


@dataclass
class ClassifierHistory(_Points):
    """Training cross-entropy (running mean) and test accuracy, one entry per evaluation point."""

    train_nats: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


@dataclass
class TrainedClassifier:
    """A trained classifier with its curves, final test metrics (``accuracy``, ``nats``) and full config."""

    model: Classifier
    history: ClassifierHistory
    test: dict[str, float]
    config: dict


@torch.no_grad()
def _test_metrics(model: Classifier, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                  batch_size: int = 1000) -> dict[str, float]:
    was_training = model.training
    model.eval()
    right = nats = 0.0
    for s in range(0, images.shape[0], batch_size):
        logits = model(images[s:s + batch_size].to(device))
        y = labels[s:s + batch_size].to(device)
        right += float((logits.argmax(1) == y).sum())
        nats += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train(was_training)
    n = images.shape[0]
    return {"accuracy": right / n, "nats": nats / n}


def classifier_config(dataset: str = "fashion-mnist", profile: str = "quick", **overrides: Any) -> dict:
    """The classifier's full config: data set, profile presets, then ``overrides`` (any
    :class:`ClassifierConfig` field but the image shape and classes, or :class:`ClassifierTrainConfig` field)."""
    data_mod.check_name(dataset)
    if dataset != "fashion-mnist":
        raise ValueError(f"dataset must be 'fashion-mnist' (the classifier's image shape is 1x28x28), got {dataset!r}")
    preset = classifier_preset(profile)
    model_fields = set(ClassifierConfig.__dataclass_fields__) - {"in_channels", "height", "width", "n_classes"}
    apply_overrides(preset, overrides, model_fields, set(ClassifierTrainConfig.__dataclass_fields__), "classifier")
    return {"dataset": dataset, "model": ClassifierConfig(**preset["model"]).as_dict(),
            "train": ClassifierTrainConfig(**preset["train"]).as_dict()}


def classifier(dataset: str = "fashion-mnist", profile: str = "quick", device: torch.device | str = "auto",
               progress: bool = True, **overrides: Any) -> TrainedClassifier:
    """A small CNN classifier of ``dataset``'s images from the cache, trained (with a progress bar) if absent.

    Its ``test`` metrics are the accuracy and cross-entropy on the test split (first ``test_limit``).
    ``overrides``: :class:`ClassifierConfig` / :class:`ClassifierTrainConfig` fields.
    """
    device = _device(device)
    config = classifier_config(dataset, profile, **overrides)
    cfg = ClassifierTrainConfig(**config["train"])

    def make() -> Classifier:
        return Classifier(ClassifierConfig(**config["model"]))

    def build() -> dict:
        torch.manual_seed(cfg.seed)
        model = make()
        train = data_mod.load(dataset, "train", limit=cfg.train_limit)
        test = data_mod.load(dataset, "test", limit=cfg.test_limit)

        def loss(x: torch.Tensor, y: torch.Tensor):
            nats = F.cross_entropy(model(x), y)
            return nats, {"nats": nats}

        c = fit(model, (train.images, train.labels), loss, cfg.loop(), device, lr_schedule=cosine_decay,
                evaluate=lambda: {"accuracy": _test_metrics(model, test.images, test.labels, device)["accuracy"]},
                progress=progress, desc="classifier")
        hist = ClassifierHistory(step=c.step, epoch=c.epoch, train_nats=c.train["nats"],
                                 test_accuracy=c.evals["accuracy"], seconds=c.seconds)
        return _payload(model, hist, _test_metrics(model, test.images, test.labels, device))

    model, payload = _cached("classifier", config, build, make, device)
    return TrainedClassifier(model=model, history=ClassifierHistory(**payload["history"]), test=payload["test"],
                             config=config)


@torch.no_grad()
def class_consistency(clf, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether the classifier puts each image in its label's class, and how sure it is.

    Args:
        clf: a :class:`TrainedClassifier` or :class:`Classifier`.
        images: ``(B, C, H, W)`` in [0, 1] (e.g. completions).
        labels: ``(B,)`` int64, the truth's classes.

    Returns:
        ``agree`` ``(B,)`` bool (predicted class == label) and ``confidence`` ``(B,)``, the
        classifier's probability of its predicted class; both on CPU.
    """
    model = getattr(clf, "model", clf)
    if not isinstance(model, Classifier):
        raise ValueError(f"clf must be a TrainedClassifier or Classifier, got {type(clf).__name__}")
    cfg = model.cfg
    want = (cfg.in_channels, cfg.height, cfg.width)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != want:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be (B, {want[0]}, {want[1]}, {want[2]}), got {got}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (images.shape[0],):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be ({images.shape[0]},) int64 class labels, got {got}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= cfg.n_classes):
        raise ValueError(f"labels must lie in [0, {cfg.n_classes}), got values in [{int(labels.min())}, {int(labels.max())}]")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    probs = torch.softmax(model(images.to(dev).float()), dim=1).cpu()
    model.train(was_training)
    confidence, predicted = probs.max(1)
    return predicted == labels.cpu(), confidence
