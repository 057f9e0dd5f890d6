"""Training loop of the VQ-VAE, with train and test curves of every loss term."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from .data import ImageSet
from .vqvae import VQVAE, codebook_usage


@dataclass(frozen=True)
class TrainConfig:
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
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.restart_every < 1:
            raise ValueError(f"restart_every must be >= 1, got {self.restart_every!r}")
        if self.evals_per_epoch < 1:
            raise ValueError(f"evals_per_epoch must be >= 1, got {self.evals_per_epoch!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    """Curves recorded during training; every list has one entry per evaluation point."""

    step: list[int] = field(default_factory=list)
    epoch: list[float] = field(default_factory=list)
    train_recon: list[float] = field(default_factory=list)
    train_quant: list[float] = field(default_factory=list)
    test_recon: list[float] = field(default_factory=list)
    test_quant: list[float] = field(default_factory=list)
    codes_used: list[int] = field(default_factory=list)
    perplexity: list[float] = field(default_factory=list)
    restarted: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(model: VQVAE, images: torch.Tensor, device: torch.device, batch_size: int = 500) -> dict[str, float]:
    """Test losses of ``model`` on ``images`` ``(N, C, H, W)``.

    Returns ``recon`` (pixel MSE), ``quant`` (codebook + beta * commitment, the quantisation
    loss), ``codes_used`` and ``perplexity`` of the test index grids.
    """
    was_training = model.training
    model.eval()
    recon = quant = 0.0
    indices = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device)
        parts = model.loss(x)
        n = x.shape[0]
        recon += float(parts["recon"]) * n
        quant += float(parts["codebook"] + model.cfg.beta * parts["commitment"]) * n
        indices.append(parts["indices"].cpu())
    model.train(was_training)
    usage = codebook_usage(torch.cat(indices), model.cfg.k)
    n = images.shape[0]
    return {"recon": recon / n, "quant": quant / n, **usage}


def train_vqvae(
    model: VQVAE,
    train: ImageSet,
    test: ImageSet,
    cfg: TrainConfig,
    device: torch.device,
    progress: bool = True,
) -> History:
    """Train ``model`` in place on ``train`` and record curves on ``test``.

    The training curves are running means over the steps since the previous evaluation point.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x_train = train.images[: cfg.train_limit]
    x_test = test.images[: cfg.test_limit]
    n = x_train.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    eval_every = max(1, steps_per_epoch // cfg.evals_per_epoch)
    hist = History()
    run_recon = run_quant = 0.0
    run_n = restarted = 0
    step = 0
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc=f"VQ-VAE k={model.cfg.k}", disable=not progress)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            x = x_train[order[start:start + cfg.batch_size]].to(device)
            parts = model.loss(x)
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            opt.step()
            step += 1
            run_recon += parts["recon"].item()
            run_quant += (parts["codebook"] + model.cfg.beta * parts["commitment"]).item()
            run_n += 1
            if cfg.dead_code_restart and step % cfg.restart_every == 0:
                with torch.no_grad():
                    restarted += model.quantizer.restart_dead_codes(model.encode(x), gen)
            if step % eval_every == 0 or step == cfg.epochs * steps_per_epoch:
                ev = evaluate(model, x_test, device)
                hist.step.append(step)
                hist.epoch.append(step / steps_per_epoch)
                hist.train_recon.append(run_recon / run_n)
                hist.train_quant.append(run_quant / run_n)
                hist.test_recon.append(ev["recon"])
                hist.test_quant.append(ev["quant"])
                hist.codes_used.append(ev["codes_used"])
                hist.perplexity.append(ev["perplexity"])
                hist.restarted.append(restarted)
                run_recon = run_quant = 0.0
                run_n = 0
                bar.set_postfix(test_mse=f"{ev['recon']:.4f}", codes=ev["codes_used"])
            bar.update(1)
    bar.close()
    hist.seconds = time.perf_counter() - t0
    model.eval()
    return hist
