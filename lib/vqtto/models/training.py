"""Training: one loop (:func:`fit`) and its two uses, the VQ-VAE and the PixelCNN prior, with their curves.

:func:`fit` runs Adam over shuffled mini-batches of in-memory tensors and records, at regular
evaluation points, the running means of the training terms and whatever an ``evaluate``
callback measures. Everything random in it draws from one ``torch.Generator`` seeded by
:attr:`Loop.seed`, in a fixed order: one ``randperm`` per epoch, then whatever the ``on_step``
callback draws (the VQ-VAE's dead-code restarts), so a seed fixes the trained weights.

The same loop trains data-parallel when the process belongs to a torch.distributed group of
``N`` ranks (``torchrun``; see :mod:`vqtto.distributed`): ``batch_size`` is then the *global*
batch, every rank draws the same permutation, takes its contiguous share of each batch and steps
through DistributedDataParallel; evaluation runs on rank 0 and is broadcast, and the dead-code
restarts use the code counts and encoder outputs of the whole global batch, so every rank holds
the same weights. With one process the helpers are the identity and the results are those of the
plain loop, bit for bit.

:func:`train_vqvae` and :func:`train_prior` are thin uses of it; ``vqtto.bench`` uses it with a
wall-clock budget.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn
from ..progress import progress_bar

from .. import distributed
from . import pixelcnn
from ..data import ImageSet
from .pixelcnn import GatedPixelCNN
from .autoencoder import VQVAE, codebook_usage

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
StepHook = Callable[[int, Batch, torch.Generator], None]


# --- the loop ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Loop:
    """How :func:`fit` runs.

    Attributes:
        batch_size: examples per step.
        lr: initial Adam learning rate.
        seed: seeds the batch order and everything ``on_step`` draws.
        epochs: passes over the data; None: as many as ``seconds`` allows.
        evals_per_epoch: evaluation points per epoch (one more after the last step).
        seconds: stop after the first step that ends past this wall-clock budget (None: no budget).
    """

    batch_size: int
    lr: float
    seed: int = 0
    epochs: int | None = 1
    evals_per_epoch: int = 1
    seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "evals_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.epochs is None and self.seconds is None:
            raise ValueError("epochs=None trains until the time budget runs out: give seconds too")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1 or None, got {self.epochs!r}")


@dataclass
class Curves:
    """What :func:`fit` recorded; the lists have one entry per evaluation point.

    Attributes:
        step, epoch: where each point lies (``epoch`` in fractions of an epoch).
        train: term name -> running mean of that term over the steps since the previous point.
        evals: name -> value returned by the ``evaluate`` callback at each point.
        steps, examples: optimiser steps taken and training examples they saw.
        seconds: wall time of the loop.
    """

    step: list[int] = field(default_factory=list)
    epoch: list[float] = field(default_factory=list)
    train: dict[str, list[float]] = field(default_factory=dict)
    evals: dict[str, list] = field(default_factory=dict)
    steps: int = 0
    examples: int = 0
    seconds: float = 0.0

    def record(self, step: int, steps_per_epoch: int, train: dict[str, float], evals: dict[str, float]) -> None:
        self.step.append(step)
        self.epoch.append(step / steps_per_epoch)
        for name, value in train.items():
            self.train.setdefault(name, []).append(value)
        for name, value in evals.items():
            self.evals.setdefault(name, []).append(value)


def cosine_decay(step: int, total_steps: int) -> float:
    """Learning-rate factor decaying from 1 at step 0 to 0 at ``total_steps`` along a half cosine."""
    return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


class _Running:
    """Running sums of the logged terms since the last evaluation point."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.item()
        self.n += 1

    def means(self) -> dict[str, float]:
        means = {name: total / self.n for name, total in self.sums.items()}
        self.sums, self.n = {}, 0
        return means


def _optimiser(model: nn.Module, loop: Loop, lr_schedule, total_steps: int | None):
    """Adam at ``loop.lr``, and the LambdaLR scheduler of ``lr_schedule`` (or None)."""
    opt = torch.optim.Adam(model.parameters(), lr=loop.lr)
    if lr_schedule is None:
        return opt, None
    if total_steps is None:
        raise ValueError("a learning-rate schedule needs a fixed number of epochs")
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_schedule(s, total_steps))


def fit(model: nn.Module, data: Batch, loss_fn: LossFn, loop: Loop, device: torch.device, *,
        on_step: StepHook | None = None, evaluate: Callable[[], dict[str, float]] | None = None,
        lr_schedule: Callable[[int, int], float] | None = None, progress: bool = True,
        desc: str = "training") -> Curves:
    """Train ``model`` in place with Adam on mini-batches of ``data``; return its :class:`Curves`.

    Args:
        data: tensors sharing their first dimension ``N`` (e.g. images ``(N, C, H, W)``, or index
            grids ``(N, h, w)`` and labels ``(N,)``); each step takes the same rows of all of them.
        loss_fn: ``loss_fn(*batch)`` with the batch's tensors on ``device`` -> ``(loss, terms)``:
            the scalar to minimise and a dict of scalar tensors whose running means are recorded.
        loop: batch size, learning rate, seed, length and evaluation points.
        on_step: ``on_step(step, batch, generator)`` after each optimiser step (step counts from 1).
        evaluate: called at each evaluation point -> dict of numbers recorded in ``Curves.evals``.
        lr_schedule: ``lr_schedule(step, total_steps)`` -> factor of ``loop.lr`` (needs ``loop.epochs``).
        progress: show a progress bar named ``desc``.

    Evaluation points fall every ``max(1, steps_per_epoch // loop.evals_per_epoch)`` steps and
    after the last step. The model is left in eval mode.

    In a torch.distributed group (:mod:`vqtto.distributed`) ``loop.batch_size`` is the global
    batch; each rank's ``loss_fn`` and ``on_step`` see its share of it, ``evaluate`` runs on rank
    0 only (its numbers are broadcast), and ``Curves`` are the global batch's on every rank.
    """
    gen = torch.Generator().manual_seed(loop.seed)
    model.to(device).train()
    n = data[0].shape[0]
    distributed.check_split(n, loop.batch_size)
    step = distributed.DataParallelStep(model, loss_fn, device)
    steps_per_epoch = math.ceil(n / loop.batch_size)
    total_steps = None if loop.epochs is None else loop.epochs * steps_per_epoch
    opt, sched = _optimiser(model, loop, lr_schedule, total_steps)
    eval_every = max(1, steps_per_epoch // loop.evals_per_epoch)
    curves, running = Curves(), _Running()
    bar = progress_bar(total=total_steps, desc=desc, disable=not progress)
    t0 = time.perf_counter()

    def out_of_time() -> bool:  # the ranks agree, so that they stop at the same step
        return loop.seconds is not None and distributed.any_rank(time.perf_counter() - t0 >= loop.seconds)

    for _ in itertools.count() if loop.epochs is None else range(loop.epochs):
        if out_of_time():
            break
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, loop.batch_size):
            rows = step.share(order[start:start + loop.batch_size])
            batch = tuple(t[rows].to(device) for t in data)
            loss, terms = step.loss(*batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            curves.steps += 1
            curves.examples += step.n_global
            running.add(step.terms(terms))
            if on_step is not None:
                on_step(curves.steps, batch, gen)
            if curves.steps % eval_every == 0 or curves.steps == total_steps:
                evals = distributed.from_rank0(evaluate) if evaluate is not None else {}
                curves.record(curves.steps, steps_per_epoch, running.means(), evals)
                bar.set_postfix({name: f"{value:.4g}" for name, value in evals.items()})
            bar.update(1)
            if out_of_time():
                break
    bar.close()
    step.close()
    curves.seconds = time.perf_counter() - t0
    model.eval()
    return curves


class _AsDict:
    def as_dict(self) -> dict:
        """The dataclass as a dict (what the cache stores)."""
        return asdict(self)


class _Settings(_AsDict):
    """What the two train configs share: the :class:`Loop` they run."""

    def loop(self) -> Loop:
        return Loop(self.batch_size, self.lr, self.seed, self.epochs, self.evals_per_epoch)


@dataclass
class _Points(_AsDict):
    """What the two histories share: where the evaluation points lie, and the loop's wall time."""

    step: list[int] = field(default_factory=list)
    epoch: list[float] = field(default_factory=list)
    seconds: float = 0.0


# --- the VQ-VAE ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig(_Settings):
    """How a VQ-VAE is trained.

    Attributes:
        epochs: passes over the training images (>= 1).
        batch_size: images per step.
        lr: Adam learning rate.
        seed: seeds the initialisation, the batch order and the code restarts.
        dead_code_restart: every ``restart_every`` steps, move unused codes onto encoder outputs.
        restart_every: steps between dead-code checks.
        train_limit: use only the first ``train_limit`` training images (None: all).
        test_limit: evaluate on the first ``test_limit`` test images (None: all).
        evals_per_epoch: points per epoch on the train/test curves.
    """

    epochs: int = 1
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    dead_code_restart: bool = True
    restart_every: int = 100
    train_limit: int | None = None
    test_limit: int | None = 2000
    evals_per_epoch: int = 8

    def __post_init__(self) -> None:
        self.loop()  # validates epochs, batch_size, lr, evals_per_epoch
        if self.restart_every < 1:
            raise ValueError(f"restart_every must be >= 1, got {self.restart_every!r}")


@dataclass
class History(_Points):
    """Curves recorded during training; every list has one entry per evaluation point."""

    train_recon: list[float] = field(default_factory=list)
    train_quant: list[float] = field(default_factory=list)
    test_recon: list[float] = field(default_factory=list)
    test_quant: list[float] = field(default_factory=list)
    codes_used: list[int] = field(default_factory=list)
    perplexity: list[float] = field(default_factory=list)
    restarted: list[int] = field(default_factory=list)


def _quant(model: VQVAE, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The quantisation loss: codebook + beta * commitment."""
    return parts["codebook"] + model.cfg.beta * parts["commitment"]


def vqvae_loss(model: VQVAE) -> LossFn:
    """The loss of :func:`fit` for a VQ-VAE: images ``(B, C, H, W)`` -> (total, {recon, quant})."""
    def loss(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = model.loss(x)
        return parts["total"], {"recon": parts["recon"], "quant": _quant(model, parts)}
    return loss


class DeadCodeRestarts:
    """An ``on_step`` hook: every ``every`` steps, restart the codes no encoder output used since the
    previous check, drawing from the batch's encoder outputs with the loop's generator.

    In a torch.distributed group the code counts are summed over the ranks and the encoder
    outputs ``(B, D, h, w)`` of the whole global batch are gathered in rank order, so every rank
    makes the same draw from the same generator and moves the same codes to the same vectors.
    ``count`` is the number of codes moved so far.
    """

    def __init__(self, model: VQVAE, every: int) -> None:
        self.model, self.every, self.count = model, every, 0

    def __call__(self, step: int, batch: Batch, gen: torch.Generator) -> None:
        if step % self.every == 0:
            with torch.no_grad():
                z_e = distributed.gather_rows(self.model.encode(batch[0]))
                distributed.sum_(self.model.quantizer.window_counts)
                self.count += self.model.quantizer.restart_dead_codes(z_e, gen)


#: Test images per forward pass of :func:`vqvae_metrics`, by device type: on one CPU thread 256 runs the
#: quick VQ-VAE's evaluation 1.4x faster than 500 (0.66 against 0.95 s over 2,000 Fashion-MNIST test
#: images; 128 and 64 no faster, 1,000 slower), the same numbers up to float rounding.
EVAL_BATCH = {"cpu": 256}
#: ... and on an accelerator.
GPU_EVAL_BATCH = 500


@torch.no_grad()
def vqvae_metrics(model: VQVAE, images: torch.Tensor, device: torch.device, batch_size: int | None = None) -> dict[str, float]:
    """Test losses of ``model`` on ``images`` ``(N, C, H, W)``, ``batch_size`` at a time (None: :data:`EVAL_BATCH`).

    Returns ``recon`` (pixel MSE), ``quant`` (codebook + beta * commitment, the quantisation
    loss), ``codes_used`` and ``perplexity`` of the test index grids.
    """
    if batch_size is None:
        batch_size = EVAL_BATCH.get(torch.device(device).type, GPU_EVAL_BATCH)
    was_training = model.training
    model.eval()
    recon = quant = 0.0
    indices = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device)
        parts = model.loss(x)
        n = x.shape[0]
        recon += float(parts["recon"]) * n
        quant += float(_quant(model, parts)) * n
        indices.append(parts["indices"].cpu())
    model.train(was_training)
    usage = codebook_usage(torch.cat(indices), model.cfg.k)
    n = images.shape[0]
    return {"recon": recon / n, "quant": quant / n, **usage}


def train_vqvae(model: VQVAE, train: ImageSet, test: ImageSet, cfg: TrainConfig, device: torch.device,
                progress: bool = True) -> History:
    """Train ``model`` in place on ``train`` and record curves on ``test``.

    The training curves are running means over the steps since the previous evaluation point.
    """
    x_test = test.images[: cfg.test_limit]
    restarts = DeadCodeRestarts(model, cfg.restart_every) if cfg.dead_code_restart else None

    def on_test() -> dict[str, float]:
        return {**vqvae_metrics(model, x_test, device), "restarted": restarts.count if restarts else 0}

    c = fit(model, (train.images[: cfg.train_limit],), vqvae_loss(model), cfg.loop(), device, on_step=restarts,
            evaluate=on_test, progress=progress, desc=f"VQ-VAE k={model.cfg.k}")
    return History(step=c.step, epoch=c.epoch, train_recon=c.train["recon"], train_quant=c.train["quant"],
                   test_recon=c.evals["recon"], test_quant=c.evals["quant"], codes_used=c.evals["codes_used"],
                   perplexity=c.evals["perplexity"], restarted=c.evals["restarted"], seconds=c.seconds)


# --- the PixelCNN prior --------------------------------------------------------------------------

@dataclass(frozen=True)
class PriorTrainConfig(_Settings):
    """How a PixelCNN prior is trained (Adam, learning rate decayed to 0 along a cosine).

    Attributes:
        epochs: passes over the training grids.
        batch_size: grids per step.
        lr: initial Adam learning rate.
        seed: seeds initialisation and batch order.
        train_limit / test_limit: encode and use only the first images of each split (None: all).
        evals_per_epoch: points per epoch on the train/validation curves.
        val_limit: the validation curve uses the first ``val_limit`` test grids (None: all); the
            final test metrics always use every test grid.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    train_limit: int | None = None
    test_limit: int | None = None
    evals_per_epoch: int = 4
    val_limit: int | None = 2000

    def __post_init__(self) -> None:
        self.loop()  # validates epochs, batch_size, lr, evals_per_epoch
        for name in ("train_limit", "test_limit", "val_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value!r}")


@dataclass
class PriorHistory(_Points):
    """Train and validation loss in nats per position, one entry per evaluation point."""

    train_nats: list[float] = field(default_factory=list)
    val_nats: list[float] = field(default_factory=list)


def prior_loss(model: GatedPixelCNN) -> LossFn:
    """The loss of :func:`fit` for a prior: grids ``(B, h, w)`` [, labels ``(B,)``] -> (nats, {nats})."""
    def loss(z: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        nats = model.loss(z, labels)
        return nats, {"nats": nats}
    return loss


def train_prior(model: GatedPixelCNN, train, val, cfg: PriorTrainConfig, device: torch.device,
                progress: bool = True) -> PriorHistory:
    """Train ``model`` in place on the index grids of ``train`` and record curves on ``val``.

    Args:
        train, val: objects with ``indices`` ``(N, h, w)`` int64 and ``labels`` ``(N,)`` (e.g.
            :class:`vqtto.data.codes.CodeSet`); the labels are used when the prior is class-conditional.

    The learning rate decays along :func:`cosine_decay`; the training curve is the running mean
    of the batch losses since the previous point.
    """
    z_val, y_val = val.indices[: cfg.val_limit], val.labels[: cfg.val_limit]
    data = (train.indices, train.labels) if model.cfg.n_classes else (train.indices,)

    def on_val() -> dict[str, float]:
        return {"nats": pixelcnn.evaluate(model, z_val, y_val, device)["nats_per_position"]}

    c = fit(model, data, prior_loss(model), cfg.loop(), device, evaluate=on_val, lr_schedule=cosine_decay,
            progress=progress, desc=f"PixelCNN k={model.cfg.k}")
    return PriorHistory(step=c.step, epoch=c.epoch, train_nats=c.train["nats"], val_nats=c.evals["nats"],
                        seconds=c.seconds)
