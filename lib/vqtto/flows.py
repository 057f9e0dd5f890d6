"""Normalizing flows onto Gumbel-softmax relaxations (paper, section 5.4), and searching through them.

Three models, one trainer:

* :func:`paper_flow` - the paper's model, built from normflows' own classes: a diagonal Gaussian
  base in R^k, affine coupling blocks with MLP conditioners (each followed by a swap of the two
  halves), and the Gumbel-softmax formula as target. The flow's samples lie anywhere in R^k, the
  target's density only on the simplex. The paper does not say how its target read a point of R^k;
  two readings are built: as the point ``y`` itself (:class:`FormulaTarget`, NaN wherever a
  coordinate is negative) or as log-coordinates ``x = log y`` (:class:`LogOrthantTarget`, torch's
  ``ExpRelaxedCategorical`` density, finite everywhere). Both extend the formula off the simplex to
  a density that is invariant to rescaling ``y`` and integrates to infinity
  (:func:`scaled_reverse_kl` checks the invariance).
* :func:`simplex_flow` - the same coupling blocks in R^(k-1), followed by :class:`LogSoftmaxZero`,
  a bijection of R^(k-1) onto the open simplex (softmax of the logits ``(u, 0)``) with its exact
  log-determinant. Its samples are points of the simplex by construction, given by their
  log-coordinates, and the target is evaluated in log space (:class:`LogSimplexTarget`).
  :func:`untempered_simplex_flow` is its ablation without the temperature in the bijection.
* :class:`GridSimplexFlow` - one simplex flow per position of a code grid, sharing weights through
  a learned position embedding, for a product of per-position Gumbel-softmax targets
  (:func:`fit_code_categorical` fits the categorical they relax, :func:`fit_grid_flow` the flow).

:func:`train_reverse_kld` fits any of them by reverse KL and records divergence (a non-finite loss
or gradient ends the run, logged with its step and the layer where the first non-finite value
appeared) instead of raising, and along the run the log-scale of its samples (:func:`log_scale`);
:func:`run_toy_experiment` runs the paper's toy experiment (its four :data:`CONFIGURATIONS`) with it. :func:`pulse_search`
is the reduction to PULSE that the paper proposes: Gaussian ``z`` on a sphere -> flow -> relaxed
one-hot vectors per position -> mixture of code vectors -> decoder, optimised for a loss on the image.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import normflows as nf
import torch
from torch import nn
from .progress import progress_bar

from .gumbel import GumbelSoftmax, zipf_probs

OPTIMIZERS = ("adam", "sgd-nesterov")
# The flows compared on the toy targets: the paper's flow in R^k, the flow onto the simplex, and the
# flow onto the simplex without the temperature inside its softmax bijection (an ablation).
FLOW_KINDS = ("paper", "simplex", "simplex-untempered")


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


class LogOrthantTarget(nf.distributions.Target):
    """The paper's target read in log-coordinates: a point ``x`` of R^k stands for ``y = exp(x)``.

    ``log_prob(x) = formula(exp x) + sum_i x_i`` (the formula pulled back through the bijection
    ``exp``), written without leaving log space:
    ``lgamma(k) + (k-1) log tau + sum_i (log pi_i - tau x_i) - k logsumexp_i(log pi_i - tau x_i)``.
    This is ``torch.distributions.relaxed_categorical.ExpRelaxedCategorical.log_prob``, finite at
    every ``x``. On the simplex (``logsumexp(x) = 0``) it is the Gumbel-softmax density of ``log y``;
    off it, it is constant along the diagonal ``x + s 1`` (a rescaling ``y -> e^s y``), so it integrates to
    infinity over R^k, as the formula does over the orthant.
    """

    def __init__(self, gs: GumbelSoftmax) -> None:
        super().__init__()
        self.gs = gs
        self.n_dims = gs.k

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        a = self.gs.log_pi.to(x) - self.gs.tau * x
        const = math.lgamma(self.gs.k) + (self.gs.k - 1) * math.log(self.gs.tau)
        return const + a.sum(-1) - self.gs.k * torch.logsumexp(a, -1)


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


def paper_flow(gs: GumbelSoftmax, n_blocks: int = 16, hidden: int = 64, base_mean: float = 0.0,
               literal: bool = False) -> nf.NormalizingFlow:
    """The paper's flow: Gaussian in R^k -> ``n_blocks`` coupling blocks -> R^k.

    The target is the Gumbel-softmax formula read in log-coordinates (:class:`LogOrthantTarget`),
    or with ``literal=True`` at the point itself (:class:`FormulaTarget`). The couplings start as
    the identity (zero last layers, normflows' ``init_zeros``), so the first samples are the base's.
    """
    _check_flow_args(gs.k, n_blocks, hidden)
    target = FormulaTarget(gs) if literal else LogOrthantTarget(gs)
    return nf.NormalizingFlow(_base(gs.k, base_mean), _coupling_stack(gs.k, n_blocks, hidden), target)


def simplex_flow(gs: GumbelSoftmax, n_blocks: int = 16, hidden: int = 64, base_mean: float = 0.0) -> nf.NormalizingFlow:
    """Gaussian in R^(k-1) -> coupling blocks -> :class:`LogSoftmaxZero` (at the target's ``tau``) -> ``log y``."""
    _check_flow_args(gs.k, n_blocks, hidden)
    layers = _coupling_stack(gs.k - 1, n_blocks, hidden) + [LogSoftmaxZero(gs.tau)]
    return nf.NormalizingFlow(_base(gs.k - 1, base_mean), layers, LogSimplexTarget(gs))


def untempered_simplex_flow(gs: GumbelSoftmax, n_blocks: int = 16, hidden: int = 64,
                            base_mean: float = 0.0) -> nf.NormalizingFlow:
    """:func:`simplex_flow` with ``tau = 1`` in its last layer: the softmax of ``(u, 0)`` itself.

    The target keeps its temperature; the coupling blocks must learn the ``1/tau`` scale themselves.
    """
    flow = simplex_flow(gs, n_blocks, hidden, base_mean)
    flow.flows[-1].tau = 1.0
    return flow


def build_flow(kind: str, gs: GumbelSoftmax, n_blocks: int, hidden: int, base_mean: float) -> nf.NormalizingFlow:
    """``kind`` in :data:`FLOW_KINDS` -> :func:`paper_flow`, :func:`simplex_flow` or :func:`untempered_simplex_flow`."""
    builders = {"paper": paper_flow, "simplex": simplex_flow, "simplex-untempered": untempered_simplex_flow}
    if kind not in builders:
        raise ValueError(f"flow kind must be one of {FLOW_KINDS}, got {kind!r}")
    return builders[kind](gs, n_blocks, hidden, base_mean)


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
        log_scale: per completed step, the 10%, 50% and 90% quantiles over the batch of
            :func:`log_scale` of the samples (0 on the simplex; ``s`` for a point ``e^s`` times one of it).
        max_abs: per completed step, the largest absolute coordinate of the batch's samples.
        nan_origin: where the first non-finite value of the diverging step appeared (a layer of the
            flow, ``"target log-density"`` or ``"gradient"``; None when not diverged).
    """

    losses: list[float]
    diverged_at: int | None
    reason: str | None
    final_kl: float | None
    seconds: float
    meta: dict = field(default_factory=dict)
    log_scale: list[list[float]] = field(default_factory=list)
    max_abs: list[float] = field(default_factory=list)
    nan_origin: str | None = None

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


def log_scale(x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` log-scale of samples given in log-coordinates ``(B, ..., k)``: ``log sum_i y_i``, averaged
    over any positions. 0 on the simplex; ``s`` for ``e^s`` times a point of the simplex."""
    lse = torch.logsumexp(x.detach(), -1)
    return lse.reshape(lse.shape[0], -1).mean(1)


def _layer_name(layer: nn.Module, index: int, layers: nn.ModuleList) -> str:
    """``"coupling block 3 of 16"``, ``"softmax bijection"``, ...: how a layer is named in a divergence."""
    if isinstance(layer, nf.flows.AffineCouplingBlock):
        blocks = [i for i, m in enumerate(layers) if isinstance(m, nf.flows.AffineCouplingBlock)]
        return f"coupling block {blocks.index(index) + 1} of {len(blocks)}"
    return "softmax bijection" if isinstance(layer, LogSoftmaxZero) else type(layer).__name__


def reverse_kld_parts(flow: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[], str]]:
    """``n`` samples of ``flow``, their log density, the target's log density there, and where a non-finite value began.

    The reverse-KL estimate is ``log_q.mean() - log_p.mean()``, as normflows' ``reverse_kld`` computes
    it (same random draws, same values). For a normflows flow the layers are applied one by one and
    a finiteness flag kept per layer (as tensors: nothing is synchronised unless asked); the returned
    function names the first layer whose output or running log density was not finite, else the
    target, and is meant to be called only once the loss was found non-finite.
    """
    if isinstance(flow, GridSimplexFlow):
        x, log_q = flow.sample(n)
        log_p = flow.target.log_prob(x)
        return x, log_q, log_p, lambda: "flow" if not bool(torch.isfinite(x).all()) else "target log-density"
    x, log_q = flow.q0(n)
    finite = []
    for layer in flow.flows:
        x, log_det = layer(x)
        log_q = log_q - log_det
        finite.append(torch.isfinite(x).all() & torch.isfinite(log_q).all())
    log_p = flow.p.log_prob(x)

    def origin() -> str:
        bad = [i for i, ok in enumerate(finite) if not bool(ok)]
        return _layer_name(flow.flows[bad[0]], bad[0], flow.flows) if bad else "target log-density"

    return x, log_q, log_p, origin


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
    """Minimise the reverse-KL estimate of :func:`reverse_kld_parts` for ``steps`` steps; never raises on divergence.

    A step whose loss is NaN/inf, or whose gradient has a NaN/inf entry, ends the run: its index is
    stored in :attr:`FlowRun.diverged_at`, where the first non-finite value appeared in
    :attr:`FlowRun.nan_origin`, and no optimiser step is taken with it. Every completed step also
    records the quantiles of the batch's :func:`log_scale` and its largest coordinate. ``clip``
    (when not None) rescales a finite gradient to norm at most ``clip`` before the step; the check
    for non-finite gradients comes first, so clipping never hides a divergence.
    """
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps!r}, batch={batch!r}")
    torch.manual_seed(seed)
    params = [p for p in flow.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr)
    run = FlowRun([], None, None, None, 0.0, dict(meta or {}))
    probs = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    start = time.perf_counter()
    for step in progress_bar(range(steps), disable=not progress, desc="reverse KL", leave=False):
        x, log_q, log_p, origin = reverse_kld_parts(flow, batch)
        loss = log_q.mean() - log_p.mean()
        if not torch.isfinite(loss):
            run.diverged_at, run.reason, run.nan_origin = step, "non-finite loss", origin()
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            run.diverged_at, run.reason, run.nan_origin = step, "non-finite gradient", "gradient"
            break
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        run.losses.append(float(loss.detach()))
        run.log_scale.append(torch.quantile(log_scale(x).double(), probs.to(x.device)).tolist())
        run.max_abs.append(float(x.detach().abs().max()))
    if run.diverged_at is None:
        with torch.no_grad():
            _, log_q, log_p, origin = reverse_kld_parts(flow, n_eval)
            value = float(log_q.mean() - log_p.mean())
        if math.isfinite(value):
            run.final_kl = value
        else:
            run.diverged_at, run.reason, run.nan_origin = steps, "non-finite loss", origin()
    run.seconds = time.perf_counter() - start
    return run


def scaled_reverse_kl(gs: GumbelSoftmax, base_mean: float, scales: list[float], n: int = 4096,
                      seed: int = 0) -> dict[float, float]:
    """Reverse-KL estimate against the literal formula (:class:`FormulaTarget`) of ``c x``, ``x ~ N(base_mean, I_k)``.

    For each scale ``c`` the same ``n`` draws (float64) are rescaled; ``log q_c(c x) = log q(x) - k log c``
    is the density of the rescaled Gaussian. Because the formula is homogeneous of degree ``-k`` on the
    orthant, the estimate is the same for every ``c`` (up to rounding): rescaling is a free direction
    of the loss. Returns ``{c: estimate}``.
    """
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, gs.k, generator=gen, dtype=torch.float64)
    log_q = -0.5 * (eps.pow(2).sum(1) + gs.k * math.log(2 * math.pi))
    return {c: float((log_q - gs.k * math.log(c) - gs.formula_anywhere(c * (base_mean + eps))).mean())
            for c in scales}


# --- what the paper's target sees -------------------------------------------------------------

@torch.no_grad()
def where_samples_fall(flow: nf.NormalizingFlow, n: int = 4096, atol: float = 1e-3) -> dict[str, float]:
    """Fractions of ``n`` flow samples (in R^k) by what the simplex formula returns there.

    Returns ``nan`` (some coordinate < 0: the literal reading takes the log of a negative number),
    ``off_simplex_finite`` (all > 0, sum not within ``atol`` of 1: finite, off the simplex),
    ``on_simplex``, and ``log_reading_finite`` (the samples read as log-coordinates,
    :class:`LogOrthantTarget`, where the density is finite).
    """
    x, _ = flow.sample(n)
    negative = (x < 0).any(1)
    on = (~negative) & ((x.sum(1) - 1).abs() <= atol)
    gs = flow.p.gs
    return {"nan": float(negative.float().mean()),
            "off_simplex_finite": float(((~negative) & ~on).float().mean()),
            "on_simplex": float(on.float().mean()),
            "log_reading_finite": float(torch.isfinite(LogOrthantTarget(gs).log_prob(x)).float().mean())}


# --- the paper's toy experiment ----------------------------------------------------------------

@contextmanager
def one_thread():
    """Run the block with one CPU thread, then restore the thread count.

    The flows here work on small tensors: on 2 busy cores, two threads spend their time waiting on
    each other (a toy run or a code-grid flow step is 20x slower with 2 threads than with 1).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)



@dataclass(frozen=True)
class Configuration:
    """One of the paper's four settings of the toy experiment: base mean, target temperature, optimiser."""

    base_mean: float
    tau: float
    optimizer: str

    def label(self, number: int) -> str:
        """How configuration ``number`` is named in tables and figures, e.g. ``(1) mean 0, τ=0.1, Adam``."""
        opt = "Adam" if self.optimizer == "adam" else "SGD-Nesterov"
        return f"({number}) mean {self.base_mean:g}, τ={self.tau:g}, {opt}"


# The paper's four configurations (section 5.4), numbered as there.
CONFIGURATIONS = {
    1: Configuration(0.0, 0.1, "adam"),
    2: Configuration(5.0, 0.1, "sgd-nesterov"),
    3: Configuration(5.0, 1.0, "sgd-nesterov"),
    4: Configuration(0.0, 0.1, "sgd-nesterov"),
}


def toy_target(k: int, tau: float, zipf_s: float = 1.0) -> GumbelSoftmax:
    """The toy target: Gumbel-softmax over ``k`` classes, ``pi_i ~ 1/i^zipf_s``, temperature ``tau``.

    The paper gives neither ``k`` nor ``pi``; a Zipf law mimics the skewed code usage of a VQ-VAE.
    """
    return GumbelSoftmax(zipf_probs(k, zipf_s), tau)


def run_toy_experiment(configurations: list[int], ks: list[int], kinds: list[str], seeds: int, *, steps: int,
                       batch: int, n_blocks: int, hidden: int, lr_adam: float, lr_sgd: float, zipf_s: float = 1.0,
                       device: torch.device | str = "cpu", progress: bool = True) -> list[FlowRun]:
    """Every (configuration, k, kind, seed) run of the toy experiment, in that order; divergences recorded.

    Each run seeds torch with its seed before building its flow and trains with the learning rate of
    its configuration's optimiser, so a run's result does not depend on which other runs are made.
    The runs use one CPU thread (:func:`one_thread`).
    Each :class:`FlowRun` carries ``configuration``, ``k``, ``kind`` and ``seed`` in its ``meta``.
    """
    unknown = [c for c in configurations if c not in CONFIGURATIONS] + [kd for kd in kinds if kd not in FLOW_KINDS]
    if unknown:
        raise ValueError(f"configurations must be among {list(CONFIGURATIONS)} and kinds among {FLOW_KINDS}; "
                         f"got {unknown}")
    jobs = [(c, k, kind, s) for c in configurations for k in ks for kind in kinds for s in range(seeds)]
    runs = []
    with one_thread():
        for c, k, kind, seed in progress_bar(jobs, desc="toy flows", disable=not progress):
            cfg = CONFIGURATIONS[c]
            torch.manual_seed(seed)
            flow = build_flow(kind, toy_target(k, cfg.tau, zipf_s), n_blocks, hidden, cfg.base_mean).to(device)
            lr = lr_adam if cfg.optimizer == "adam" else lr_sgd
            runs.append(train_reverse_kld(flow, steps, batch, cfg.optimizer, lr, seed=seed,
                                          meta={"configuration": c, "k": k, "kind": kind, "seed": seed}))
    return runs


def select_runs(runs: list[FlowRun], **meta) -> list[FlowRun]:
    """The runs whose ``meta`` has every given value, e.g. ``select_runs(runs, k=4, kind="paper")``."""
    return [r for r in runs if all(r.meta[key] == value for key, value in meta.items())]


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
        _, log_q, log_p, _ = reverse_kld_parts(self, num_samples)
        return log_q.mean() - log_p.mean()


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


def code_grid_log_likelihood(probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``(B,)`` log-likelihood (nats) of index grids ``(B, h, w)`` under per-position probabilities ``(h*w, k)``.

    The prior :func:`fit_code_categorical` fits and :class:`GridSimplexFlow` relaxes: positions independent.
    """
    flat = indices.reshape(indices.shape[0], -1).cpu()
    return torch.log(probs).gather(1, flat.t()).t().sum(1)


@torch.no_grad()
def sample_code_grids(probs: torch.Tensor, n: int, grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``(n, h, w)`` index grids drawn position by position from the categorical ``probs`` ``(h*w, k)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.multinomial(probs, n, replacement=True, generator=gen).t().reshape(n, *grid)


def categorical_fit_error(probs: torch.Tensor, grids: torch.Tensor) -> float:
    """Mean over positions of the total-variation distance between ``probs`` ``(h*w, k)`` and the histogram
    of ``grids`` ``(N, h, w)`` at each position."""
    k = probs.shape[1]
    flat = grids.reshape(grids.shape[0], -1)
    hist = torch.stack([torch.bincount(flat[:, p], minlength=k) for p in range(flat.shape[1])]).float()
    hist = hist / hist.sum(1, keepdim=True)
    return float(0.5 * (hist - probs).abs().sum(1).mean())


def seeded_grid_flow(positions: int, k: int, tau: float, *, n_blocks: int, hidden: int, seed: int,
                     device: torch.device | str = "cpu") -> GridSimplexFlow:
    """An untrained :class:`GridSimplexFlow` initialised after ``torch.manual_seed(seed)`` (identity couplings)."""
    torch.manual_seed(seed)
    return GridSimplexFlow(positions, k, tau, n_blocks=n_blocks, hidden=hidden).to(device)


def fit_grid_flow(probs: torch.Tensor, tau: float, *, n_blocks: int, hidden: int, steps: int, batch: int, lr: float,
                  seed: int = 0, device: torch.device | str = "cpu",
                  progress: bool = False) -> tuple[GridSimplexFlow, FlowRun]:
    """A :class:`GridSimplexFlow` fitted with Adam by reverse KL to the Gumbel-softmax relaxation (at ``tau``)
    of the per-position categorical ``probs`` ``(P, k)``.

    Divergence is recorded in the returned :class:`FlowRun`, never raised; the flow then keeps the
    weights of its last finite step. Trains with one CPU thread (:func:`one_thread`).
    """
    positions, k = probs.shape
    flow = seeded_grid_flow(positions, k, tau, n_blocks=n_blocks, hidden=hidden, seed=seed, device=device)
    flow.target = LogSimplexTarget(GumbelSoftmax(probs, tau).to(device))
    with one_thread():
        run = train_reverse_kld(flow, steps, batch, "adam", lr, seed=seed, progress=progress)
    return flow, run


@torch.no_grad()
def flow_argmax_grids(flow: GridSimplexFlow, n: int, grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``(n, h, w)`` argmax index grids of ``n`` samples of ``flow`` (torch seeded with ``seed`` first)."""
    torch.manual_seed(seed)
    log_y, _ = flow.sample(n)
    return log_y.argmax(-1).reshape(n, *grid).cpu()


# --- the reduction to PULSE ---------------------------------------------------------------------

@dataclass
class PulseResult:
    """A PULSE-style search through a flow, one per target image.

    Attributes:
        best_indices: ``(B, h, w)`` int64, the argmax index grid with the lowest loss seen.
        best_losses: ``(B,)`` loss of ``decode(lookup(best_indices))``.
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

    The flow is left as it was found, also when the search raises: its temperature and each
    parameter's ``requires_grad`` flag are restored (the parameters are frozen during the search).
    The search runs with one CPU thread (:func:`one_thread`).

    Args:
        model: a VQ-VAE (latent-decoder protocol: ``codebook``, ``lookup``, ``decode``).
        flow: a trained :class:`GridSimplexFlow` whose ``P`` equals ``h * w`` and ``k`` the codebook's.
        loss_fn: images ``(B, C, H, W)`` -> ``(B,)`` per-image losses (e.g. :func:`vqtto.constraints.mse_to`).
        batch: number of searches (targets), >= 1.
        grid: ``(h, w)`` of the code grid.
        steps: Adam steps on ``z``, >= 1.
        tau_schedule: ``(start, end)`` temperatures > 0, or None to keep the flow's.

    Raises:
        ValueError: for ``steps`` or ``batch`` < 1, a temperature <= 0, or a flow whose ``P`` or ``k``
            does not match the model's grid and codebook; nothing has run then.
    """
    for name, value in (("steps", steps), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1 (the search needs at least one step and one target), "
                             f"got {name}={value!r}")
    if tau_schedule is not None and not (len(tau_schedule) == 2 and all(t > 0 for t in tau_schedule)):
        raise ValueError(f"tau_schedule must be (start, end) with both temperatures > 0, got {tau_schedule!r}")
    h, w = grid
    codebook = model.codebook.detach()
    if flow.positions != h * w or flow.k != codebook.shape[0]:
        raise ValueError(f"flow has P={flow.positions}, k={flow.k}; model needs P={h * w}, k={codebook.shape[0]}")
    trained_tau = flow.to_simplex.tau
    flags = [p.requires_grad for p in flow.parameters()]
    try:
        for p in flow.parameters():
            p.requires_grad_(False)
        with one_thread():
            return _pulse_steps(model, flow, loss_fn, codebook, batch, grid, steps, lr, seed, tau_schedule, progress)
    finally:
        flow.to_simplex.tau = trained_tau
        for p, flag in zip(flow.parameters(), flags):
            p.requires_grad_(flag)


def _pulse_steps(model: nn.Module, flow: GridSimplexFlow, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                 codebook: torch.Tensor, batch: int, grid: tuple[int, int], steps: int, lr: float, seed: int,
                 tau_schedule: tuple[float, float] | None, progress: bool) -> PulseResult:
    """The loop of :func:`pulse_search`, on a frozen flow (the caller checks and restores)."""
    h, w = grid
    device = codebook.device
    gen = torch.Generator().manual_seed(seed)
    z = sphere(torch.randn(batch, flow.positions, flow.dim, generator=gen)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best_losses = torch.full((batch,), float("inf"), device=device)
    best_idx = torch.zeros(batch, h, w, dtype=torch.long, device=device)
    relaxed_hist, argmax_hist = [], []
    for step in progress_bar(range(steps), disable=not progress, desc="PULSE through flow", leave=False):
        if tau_schedule is not None:
            start, end = tau_schedule
            flow.to_simplex.tau = start * (end / start) ** (step / max(1, steps - 1))
        log_y, _ = flow(z)
        codes = (log_y.exp() @ codebook).reshape(batch, h, w, -1).permute(0, 3, 1, 2)
        losses = loss_fn(model.decode(codes))
        with torch.no_grad():
            idx = log_y.argmax(-1).reshape(batch, h, w)
            hard = loss_fn(model.decode(model.lookup(idx)))
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
    return PulseResult(best_idx, best_losses, idx, start_idx, torch.stack(relaxed_hist), torch.stack(argmax_hist))
