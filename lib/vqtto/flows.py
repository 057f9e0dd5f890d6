"""Normalizing flows onto Gumbel-softmax targets (paper, section 5.4), and a PULSE-style search.

Three models, one trainer:

* :func:`paper_flow` - the paper's model, built from normflows' own classes: a diagonal Gaussian
  base in R^k, affine coupling blocks with MLP conditioners (each followed by a swap of the two
  halves), and a target whose ``log_prob`` is the Gumbel-softmax formula (:class:`FormulaTarget`).
  The flow's samples lie anywhere in R^k, the target's density only on the simplex: see
  :meth:`vqtto.gumbel.GumbelSoftmax.formula_anywhere` for what the formula returns elsewhere.
* :func:`simplex_flow` - the same coupling blocks in R^(k-1), followed by :class:`LogSoftmaxZero`,
  a bijection of R^(k-1) onto the open simplex (softmax of the logits ``(u, 0)``) with its exact
  log-determinant. Its samples are points of the simplex by construction, given by their
  log-coordinates, and the target is evaluated in log space (:class:`LogSimplexTarget`).
* :class:`GridSimplexFlow` - one simplex flow per position of a code grid, sharing weights through
  a learned position embedding, for a product of per-position Gumbel-softmax targets.

:func:`train_reverse_kld` fits any of them by reverse KL and records divergence (a non-finite loss
or gradient ends the run, logged with its step) instead of raising. :func:`pulse_search` is the
reduction to PULSE that the paper proposes: Gaussian ``z`` on a sphere -> flow -> relaxed one-hot
vectors per position -> mixture of code vectors -> decoder, optimised for a loss on the image.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import normflows as nf
import torch
from torch import nn
from tqdm.auto import tqdm

from .gumbel import GumbelSoftmax

OPTIMIZERS = ("adam", "sgd-nesterov")
FLOW_KINDS = ("paper", "simplex")


# --- targets --------------------------------------------------------------------------------

class FormulaTarget(nf.distributions.Target):
    """The paper's target: ``log_prob(x)`` is the Gumbel-softmax formula at ``x`` in R^k, as is.

    For ``x`` off the simplex this is NaN (a negative coordinate), infinite (a zero coordinate) or
    a finite value of an unnormalisable function (positive coordinates not summing to 1).
    """

    def __init__(self, gs: GumbelSoftmax) -> None:
        super().__init__()
        self.gs = gs
        self.n_dims = gs.k

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.gs.formula_anywhere(z)


class LogSimplexTarget(nf.distributions.Target):
    """Gumbel-softmax target for samples given by their log-coordinates ``log y`` ``(B, ..., k)``.

    ``log_prob`` sums over any dimensions between the batch and the class dimension, so a
    ``(P, k)`` batch of distributions is a product over the ``P`` positions.
    """

    def __init__(self, gs: GumbelSoftmax) -> None:
        super().__init__()
        self.gs = gs
        self.n_dims = gs.k

    def log_prob(self, log_y: torch.Tensor) -> torch.Tensor:
        lp = self.gs.log_prob_log(log_y)
        return lp.reshape(lp.shape[0], -1).sum(1)


# --- the bijection onto the simplex ---------------------------------------------------------

class LogSoftmaxZero(nf.flows.Flow):
    """``u`` in R^(k-1) -> ``log y`` with ``y = softmax((u_1, ..., u_(k-1), 0) / tau)`` on the open simplex.

    The map ``u -> (y_1, ..., y_(k-1))`` has Jacobian ``(diag(y') - y' y'^T) / tau`` (``y' = y_(1:k-1)``),
    whose determinant is ``tau^-(k-1) prod_(i<k) y_i (1 - sum_(i<k) y_i) = tau^-(k-1) prod_(i<=k) y_i``,
    so ``log|det J| = sum_i log y_i - (k-1) log tau`` exactly. The output is ``log y`` (``(..., k)``)
    so that nothing underflows at small temperatures; the density it carries is the density of
    ``y_(1:k-1)``, the coordinates :class:`vqtto.gumbel.GumbelSoftmax` writes its density in.

    Why divide by ``tau``: a Gumbel-softmax sample is exactly this map applied to
    ``u_i = log pi_i + g_i - log pi_k - g_k`` (differences of Gumbel variables), whatever ``tau`` is.
    With the temperature inside the bijection, the flow before it has a ``tau``-free job of unit scale.
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        self.tau = float(tau)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.cat([u, torch.zeros_like(u[..., :1])], -1) / self.tau
        log_y = torch.log_softmax(logits, -1)
        n_free = u[0].numel()
        return log_y, log_y.reshape(log_y.shape[0], -1).sum(1) - n_free * math.log(self.tau)

    def inverse(self, log_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = (log_y[..., :-1] - log_y[..., -1:]) * self.tau
        n_free = u[0].numel()
        return u, -(log_y.reshape(log_y.shape[0], -1).sum(1) - n_free * math.log(self.tau))


# --- the two flows for one simplex ----------------------------------------------------------

def _coupling_stack(dim: int, n_blocks: int, hidden: int) -> list[nf.flows.Flow]:
    """``n_blocks`` x (normflows AffineCouplingBlock with an MLP conditioner, then a swap)."""
    if dim < 2:
        raise ValueError(f"a coupling flow needs dimension >= 2, got {dim}")
    first, second = (dim + 1) // 2, dim // 2  # sizes of torch.chunk(2) halves
    layers: list[nf.flows.Flow] = []
    for _ in range(n_blocks):
        net = nf.nets.MLP([first, hidden, hidden, 2 * second], init_zeros=True)
        layers += [nf.flows.AffineCouplingBlock(net), nf.flows.Permute(dim, mode="swap")]
    return layers


def _base(dim: int, mean: float) -> nf.distributions.DiagGaussian:
    base = nf.distributions.DiagGaussian(dim, trainable=False)
    base.loc.fill_(float(mean))
    return base


def _check_flow_args(k: int, n_blocks: int, hidden: int) -> None:
    if not isinstance(k, int) or k < 3:
        raise ValueError(f"k (number of classes) must be an int >= 3 for these flows, got {k!r}")
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks!r}")
    if hidden < 1:
        raise ValueError(f"hidden (MLP width) must be >= 1, got {hidden!r}")


def paper_flow(gs: GumbelSoftmax, n_blocks: int = 16, hidden: int = 64, base_mean: float = 0.0) -> nf.NormalizingFlow:
    """The paper's flow: Gaussian in R^k -> coupling blocks -> R^k, target :class:`FormulaTarget`."""
    _check_flow_args(gs.k, n_blocks, hidden)
    return nf.NormalizingFlow(_base(gs.k, base_mean), _coupling_stack(gs.k, n_blocks, hidden), FormulaTarget(gs))


def simplex_flow(gs: GumbelSoftmax, n_blocks: int = 16, hidden: int = 64, base_mean: float = 0.0) -> nf.NormalizingFlow:
    """Gaussian in R^(k-1) -> coupling blocks -> :class:`LogSoftmaxZero` (at the target's ``tau``) -> ``log y``."""
    _check_flow_args(gs.k, n_blocks, hidden)
    layers = _coupling_stack(gs.k - 1, n_blocks, hidden) + [LogSoftmaxZero(gs.tau)]
    return nf.NormalizingFlow(_base(gs.k - 1, base_mean), layers, LogSimplexTarget(gs))


def build_flow(kind: str, gs: GumbelSoftmax, n_blocks: int, hidden: int, base_mean: float) -> nf.NormalizingFlow:
    """``kind`` in :data:`FLOW_KINDS` -> :func:`paper_flow` or :func:`simplex_flow`."""
    if kind == "paper":
        return paper_flow(gs, n_blocks, hidden, base_mean)
    if kind == "simplex":
        return simplex_flow(gs, n_blocks, hidden, base_mean)
    raise ValueError(f"flow kind must be one of {FLOW_KINDS}, got {kind!r}")


# --- training by reverse KL, divergence recorded ---------------------------------------------

@dataclass
class FlowRun:
    """One reverse-KL training run.

    Attributes:
        losses: the reverse-KL estimate (normflows' ``reverse_kld``) at each completed step.
        diverged_at: the step whose loss or gradient was not finite (None: ran to the end).
        reason: ``"non-finite loss"`` or ``"non-finite gradient"`` (None when not diverged).
        final_kl: reverse KL estimated on ``n_eval`` fresh samples after training (None if diverged).
        seconds: wall time of the run.
        meta: what the caller wants to keep beside it (configuration, seed, k, kind).
    """

    losses: list[float]
    diverged_at: int | None
    reason: str | None
    final_kl: float | None
    seconds: float
    meta: dict = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """``adam`` or ``sgd-nesterov`` (momentum 0.9), the two optimisers of the paper's configurations."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd-nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def train_reverse_kld(
    flow: nn.Module,
    steps: int,
    batch: int = 256,
    optimizer: str = "adam",
    lr: float = 1e-3,
    seed: int = 0,
    n_eval: int = 2048,
    clip: float | None = None,
    progress: bool = False,
    meta: dict | None = None,
) -> FlowRun:
    """Minimise ``flow.reverse_kld(batch)`` for ``steps`` steps; never raises on divergence.

    A step whose loss is NaN/inf, or whose gradient has a NaN/inf entry, ends the run: its index is
    stored in :attr:`FlowRun.diverged_at` and no optimiser step is taken with it. ``clip`` (when
    not None) rescales a finite gradient to norm at most ``clip`` before the step; the check for
    non-finite gradients comes first, so clipping never hides a divergence.
    """
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps!r}, batch={batch!r}")
    torch.manual_seed(seed)
    params = [p for p in flow.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr)
    losses: list[float] = []
    diverged_at, reason = None, None
    start = time.perf_counter()
    for step in tqdm(range(steps), disable=not progress, desc="reverse KL", leave=False):
        loss = flow.reverse_kld(batch)
        if not torch.isfinite(loss):
            diverged_at, reason = step, "non-finite loss"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            diverged_at, reason = step, "non-finite gradient"
            break
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        losses.append(float(loss.detach()))
    final = None
    if diverged_at is None:
        with torch.no_grad():
            value = float(flow.reverse_kld(n_eval))
        if math.isfinite(value):
            final = value
        else:
            diverged_at, reason = steps, "non-finite loss"
    return FlowRun(losses, diverged_at, reason, final, time.perf_counter() - start, dict(meta or {}))


# --- what the paper's target sees -------------------------------------------------------------

@torch.no_grad()
def where_samples_fall(flow: nf.NormalizingFlow, n: int = 4096, atol: float = 1e-3) -> dict[str, float]:
    """Fractions of ``n`` flow samples (in R^k) by what the simplex formula returns there.

    Returns ``nan`` (some coordinate < 0: log of a negative number), ``off_simplex_finite``
    (all > 0, sum not within ``atol`` of 1: finite but meaningless) and ``on_simplex``.
    """
    x, _ = flow.sample(n)
    negative = (x < 0).any(1)
    on = (~negative) & ((x.sum(1) - 1).abs() <= atol)
    return {"nan": float(negative.float().mean()),
            "off_simplex_finite": float(((~negative) & ~on).float().mean()),
            "on_simplex": float(on.float().mean())}


# --- one flow per code-grid position -----------------------------------------------------------

class _PositionCoupling(nn.Module):
    """Affine coupling on the last dimension, conditioned on the other half and the position."""

    def __init__(self, dim: int, embed: int, hidden: int, flip: bool) -> None:
        super().__init__()
        self.flip = flip
        self.first = dim // 2
        self.second = dim - self.first
        self.net = nf.nets.MLP([self.first + embed, hidden, hidden, 2 * self.second], init_zeros=True)

    def forward(self, z: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.flip:
            z = z.flip(-1)
        z1, z2 = z[..., : self.first], z[..., self.first:]
        params = self.net(torch.cat([z1, emb.expand(*z1.shape[:-1], emb.shape[-1])], -1))
        shift, log_scale = params[..., : self.second], params[..., self.second:]
        z = torch.cat([z1, z2 * log_scale.exp() + shift], -1)
        return z, log_scale.reshape(z.shape[0], -1).sum(1)


class GridSimplexFlow(nn.Module):
    """Independent simplex flows for ``P`` positions: ``(B, P, k-1)`` Gaussian -> ``(B, P, k)`` ``log y``.

    Position ``p`` maps its own standard-normal noise through coupling layers conditioned on a
    learned embedding of ``p`` and then :class:`LogSoftmaxZero`; positions never see each other,
    so the model is a product of ``P`` flows on the simplex (with shared weights).
    """

    def __init__(self, positions: int, k: int, tau: float, n_blocks: int = 4, hidden: int = 64, embed: int = 8) -> None:
        super().__init__()
        _check_flow_args(k, n_blocks, hidden)
        self.positions, self.k, self.dim = positions, k, k - 1
        self.embedding = nn.Parameter(torch.randn(positions, embed) * 0.1)
        self.layers = nn.ModuleList(_PositionCoupling(k - 1, embed, hidden, flip=i % 2 == 1) for i in range(n_blocks))
        self.to_simplex = LogSoftmaxZero(tau)
        self.target: LogSimplexTarget | None = None

    @property
    def latent_dim(self) -> int:
        return self.positions * self.dim

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, P, k-1)`` -> (``(B, P, k)`` log-coordinates, ``(B,)`` log|det J| of the whole map)."""
        log_det = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for layer in self.layers:
            z, ld = layer(z, self.embedding)
            log_det = log_det + ld
        log_y, ld = self.to_simplex(z)
        return log_y, log_det + ld

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples ``(n, P, k)`` (log-coordinates) and their log density ``(n,)``."""
        z = torch.randn(n, self.positions, self.dim, device=self.embedding.device)
        log_y, log_det = self(z)
        log_base = -0.5 * (z.pow(2).sum((1, 2)) + self.latent_dim * math.log(2 * math.pi))
        return log_y, log_base - log_det

    def reverse_kld(self, num_samples: int = 1) -> torch.Tensor:
        """Reverse KL estimate to :attr:`target` (set it first), as normflows defines it."""
        if self.target is None:
            raise ValueError("set GridSimplexFlow.target (a LogSimplexTarget over (P, k)) before training")
        log_y, log_q = self.sample(num_samples)
        return (log_q - self.target.log_prob(log_y)).mean()


def fit_code_categorical(indices: torch.Tensor, k: int, pseudocount: float = 0.5) -> torch.Tensor:
    """Per-position class frequencies of index grids, smoothed so that no class has probability 0.

    Args:
        indices: ``(N, h, w)`` int64 index grids (e.g. encoded training images).
        k: codebook size.
        pseudocount: added to every count (> 0).
    Returns:
        ``(h*w, k)`` probabilities, one row per position in raster order.
    """
    if pseudocount <= 0:
        raise ValueError(f"pseudocount must be > 0, got {pseudocount!r}")
    n, h, w = indices.shape
    flat = indices.reshape(n, h * w).cpu()
    counts = torch.full((h * w, k), float(pseudocount))
    counts.scatter_add_(1, flat.t().contiguous(), torch.ones(h * w, n))
    return counts / counts.sum(1, keepdim=True)


# --- the reduction to PULSE ---------------------------------------------------------------------

@dataclass
class PulseResult:
    """A PULSE-style search through a flow, one per target image.

    Attributes:
        best_indices: ``(B, h, w)`` int64, the argmax index grid with the lowest loss seen.
        best_losses: ``(B,)`` loss of ``decode_indices(best_indices)``.
        final_indices: ``(B, h, w)`` the argmax grid at the last step.
        start_indices: ``(B, h, w)`` the argmax grid of the starting ``z`` (a sample of the flow).
        relaxed_losses: ``(steps, B)`` loss of the decoded codebook mixture at each step.
        argmax_losses: ``(steps, B)`` loss of the decoded argmax grid at each step.
    """

    best_indices: torch.Tensor
    best_losses: torch.Tensor
    final_indices: torch.Tensor
    start_indices: torch.Tensor
    relaxed_losses: torch.Tensor
    argmax_losses: torch.Tensor


def sphere(z: torch.Tensor) -> torch.Tensor:
    """Project each ``z[b]`` onto the sphere of radius ``sqrt(numel(z[b]))`` (where Gaussians live)."""
    flat = z.reshape(z.shape[0], -1)
    radius = math.sqrt(flat.shape[1])
    return (flat * (radius / flat.norm(dim=1, keepdim=True).clamp_min(1e-12))).reshape(z.shape)


def pulse_search(
    model: nn.Module,
    flow: GridSimplexFlow,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    grid: tuple[int, int],
    steps: int = 200,
    lr: float = 0.1,
    seed: int = 0,
    tau_schedule: tuple[float, float] | None = None,
    progress: bool = False,
) -> PulseResult:
    """Optimise Gaussian ``z`` on the sphere so that the flow's relaxed codes decode to a low loss.

    Each step: ``log y = flow(z)`` ``(B, P, k)``; codes ``= y @ codebook`` reshaped to
    ``(B, D, h, w)``; image ``= model.decode(codes)``; ``loss_fn(image)`` ``(B,)``; an Adam step on
    ``z``; then ``z`` is projected back onto the sphere of radius ``sqrt(P (k-1))``. The argmax
    grid of every step is decoded too and the best one kept (decoding a grid is cheap).

    ``tau_schedule=(start, end)`` anneals the temperature of the flow's last layer
    (:class:`LogSoftmaxZero`) geometrically from ``start`` to ``end`` over the steps. The layers
    before it model the ``tau``-free logit differences, so changing ``tau`` there keeps the same
    prior over which code wins at each position and only sharpens or softens the relaxation:
    soft early (useful gradients), nearly one-hot late (the mixture decodes like its argmax).

    Args:
        model: a VQ-VAE (latent-decoder protocol: ``codebook``, ``decode``, ``decode_indices``).
        flow: a trained :class:`GridSimplexFlow` whose ``P`` equals ``h * w`` and ``k`` the codebook's.
        loss_fn: images ``(B, C, H, W)`` -> ``(B,)`` per-image losses.
        grid: ``(h, w)`` of the code grid.
    """
    h, w = grid
    codebook = model.codebook.detach()
    if flow.positions != h * w or flow.k != codebook.shape[0]:
        raise ValueError(f"flow has P={flow.positions}, k={flow.k}; model needs P={h * w}, k={codebook.shape[0]}")
    device = codebook.device
    for p in flow.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    z = sphere(torch.randn(batch, flow.positions, flow.dim, generator=gen)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best_losses = torch.full((batch,), float("inf"), device=device)
    best_idx = torch.zeros(batch, h, w, dtype=torch.long, device=device)
    relaxed_hist, argmax_hist = [], []
    trained_tau = flow.to_simplex.tau
    for step in tqdm(range(steps), disable=not progress, desc="PULSE through flow", leave=False):
        if tau_schedule is not None:
            start, end = tau_schedule
            flow.to_simplex.tau = start * (end / start) ** (step / max(1, steps - 1))
        log_y, _ = flow(z)
        codes = (log_y.exp() @ codebook).reshape(batch, h, w, -1).permute(0, 3, 1, 2)
        losses = loss_fn(model.decode(codes))
        with torch.no_grad():
            idx = log_y.argmax(-1).reshape(batch, h, w)
            hard = loss_fn(model.decode_indices(idx))
            better = hard < best_losses
            best_losses = torch.where(better, hard, best_losses)
            best_idx[better] = idx[better]
            if step == 0:
                start_idx = idx.clone()
        relaxed_hist.append(losses.detach().cpu())
        argmax_hist.append(hard.cpu())
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        with torch.no_grad():
            z.copy_(sphere(z))
    flow.to_simplex.tau = trained_tau
    for p in flow.parameters():
        p.requires_grad_(True)
    return PulseResult(best_idx, best_losses, idx, start_idx, torch.stack(relaxed_hist), torch.stack(argmax_hist))


def per_image_mse(target: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images (B, C, H, W) -> (B,)`` mean squared error to ``target`` ``(B, C, H, W)``."""
    return lambda x: (x - target).pow(2).flatten(1).mean(1)


@torch.no_grad()
def own_code_loss(model: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    """``(B,)`` MSE of each target to the decoding of its own encoder code (the reference loss)."""
    rec = model.decode_indices(model.nearest(model.encode(targets)))
    return (rec - targets).pow(2).flatten(1).mean(1)
