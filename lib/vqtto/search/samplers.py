"""Gradient-informed MCMC samplers over index grids: Gibbs-with-gradients and discrete Langevin.

Both read their proposals off the first-order table ``D`` (:mod:`~vqtto.search.first_order`) and
target ``pi(x) ~ exp(-L(x) / T)``, with the temperature T in units of each pair's start loss:

- :func:`gibbs_with_gradients` (Grathwohl et al. 2021): one move (p, j) from
  ``softmax(-D / 2T)`` over all moves, with the Metropolis-Hastings correction (its reverse
  proposal is read off the table at the proposed grid);
- :func:`discrete_langevin` (Zhang et al. 2022): every position moves at once, position p to
  code j with probability ``~ exp(-D[p, j] / 2T - dist(j, cur(p)) / alpha)``, without (DULA) or
  with (DMALA) the correction; ``dist`` is 0/1 or the normalised codebook distance.

Each step costs one forward and backward pass per chain (3 decoder-call equivalents). They run
B pairs x C chains as one batch on :class:`~vqtto.search.chains.ChainSearch` and return the
best-so-far :class:`~vqtto.search.trace.SearchTrace` of every pair.
"""

from __future__ import annotations

import torch

from .losses import LossFn
from .chains import ChainSearch, check_choice, sample_categorical
from .driver import check_positive
from .trace import SearchTrace

__all__ = ["DISTANCES", "discrete_langevin", "gibbs_with_gradients"]

DISTANCES = ("onehot", "codebook")


class _GibbsWithGradients(ChainSearch):
    def __init__(self, *args, temperature: float, anneal: bool, floor: float, **kw) -> None:
        super().__init__(*args, **kw)
        self.t0, self.anneal, self.floor = temperature, anneal, floor

    def log_proposal(self, rows, idx, grad, temp):
        """``(n, h*w*k)`` log-probabilities of the single moves from grids ``idx`` at proposal temperature ``temp``."""
        d = self.table(rows, idx, grad)
        return torch.log_softmax((-d / (2 * temp[:, None, None])).flatten(1), 1)

    def step(self, rows):
        target = self.temperature(rows, self.t0, self.anneal)
        temp = self.proposal_temperature(rows, target)
        idx = self.idx[rows]
        k = self.cb.shape[0]
        lq = self.log_proposal(rows, idx, self.grad[rows], temp)
        move = sample_categorical(lq, self.rand.uniform(rows))
        pos, code = move // k, move % k
        old = idx.flatten(1)
        new = old.scatter(1, pos[:, None], code[:, None]).view_as(idx)
        value, grad = self.ev.loss_and_grad(new, rows)
        back = pos * k + old.gather(1, pos[:, None])[:, 0]
        rev = self.log_proposal(rows, new, grad, temp).gather(1, back[:, None])[:, 0]
        fwd = lq.gather(1, move[:, None])[:, 0]
        self.accept(rows, new, value, grad, -(value - self.value[rows]) / target + rev - fwd)


class _DiscreteLangevin(ChainSearch):
    def __init__(self, *args, temperature: float, alpha: float, mh: bool, dist: str, anneal: bool, floor: float,
                 **kw) -> None:
        super().__init__(*args, **kw)
        self.t0, self.alpha, self.mh, self.anneal, self.floor = temperature, alpha, mh, anneal, floor
        k = self.cb.shape[0]
        if dist == "onehot":
            self.dist = 1.0 - torch.eye(k, device=self.cb.device, dtype=self.cb.dtype)
        else:
            sq = torch.cdist(self.cb, self.cb).pow(2)
            self.dist = sq / sq.sum().div(max(1, k * (k - 1))).clamp_min(1e-12)  # mean distance between codes: 1

    def log_proposal(self, rows, idx, grad, temp):
        """``(n, h*w, k)`` per-position log-probabilities of the next code from grids ``idx``.

        The distance term is an energy in loss units (``dist / alpha`` times the start temperature)
        divided by the same temperature as the table, so the two keep their balance as T falls."""
        cur = idx.flatten(1)
        d = self.table(rows, idx, grad).scatter_(2, cur[..., None], 0.0)  # staying is always possible
        unit = (self.t0 * self.scale[rows] / temp)[:, None, None]
        return torch.log_softmax(-d / (2 * temp[:, None, None]) - unit * self.dist[cur] / self.alpha, -1)

    def step(self, rows):
        target = self.temperature(rows, self.t0, self.anneal)
        temp = self.proposal_temperature(rows, target)
        idx = self.idx[rows]
        old = idx.flatten(1)
        lq = self.log_proposal(rows, idx, self.grad[rows], temp)
        new = sample_categorical(lq, self.rand.uniform(rows, old.shape[1]))
        value, grad = self.ev.loss_and_grad(new.view_as(idx), rows)
        if not self.mh:
            self.set_state(rows, new.view_as(idx), value, grad)
            self.accepted[rows] += 1
            return
        fwd = lq.gather(2, new[..., None]).sum((1, 2))
        rev = self.log_proposal(rows, new.view_as(idx), grad, temp).gather(2, old[..., None]).sum((1, 2))
        self.accept(rows, new.view_as(idx), value, grad, -(value - self.value[rows]) / target + rev - fwd)


def gibbs_with_gradients(model, z_start: torch.Tensor, loss: LossFn, *, temperature: float = 0.02, chains: int = 4,
                         budget: float = 1000, anneal: bool = False, seed=0, start: torch.Tensor | None = None,
                         movable: torch.Tensor | None = None, prior=None, radius: int | None = None,
                         floor: float = 1.0, progress: bool = False) -> SearchTrace:
    """Gibbs-with-gradients (Grathwohl et al. 2021) on the index grids, ``chains`` chains per pair.

    Each step draws one move (position p, code j) from ``softmax(-D / 2T)`` over all positions
    and codes (the current codes excluded), decodes the new grid with its gradient, and accepts it
    with the Metropolis-Hastings probability ``min(1, exp(-(L' - L) / T) q(x | x') / q(x' | x))``.

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)``.
        z_start: ``(B, D, h, w)``; the chains start at ``nearest(z_start)`` (or at ``start``).
        loss: a :class:`~vqtto.search.losses.PairLoss` (its rows are repeated per chain).
        temperature: T in units of each pair's start loss, > 0.
        chains: chains per pair, >= 1.
        budget: decoder-call equivalents per pair, all chains together (a step costs 3 per chain).
        anneal: lower T linearly to 0 over the budget (simulated annealing).
        seed: an int, or one int per pair (a pair draws the same numbers batched or alone).
        start: ``(B, h, w)`` int64 start grids instead of ``nearest(z_start)``, or
            ``(B, chains, h, w)``: one per chain.
        movable: ``(B, h, w)`` or ``(h, w)`` bool, the positions the search may change.
        prior: a :class:`~vqtto.search.energy.GridPrior`: minimise the energy
            ``L + lambda * NLL / (h w)`` instead of L (None: the loss alone).
        radius: stay within this Hamming distance (>= 1) of the start grid (None: no limit).
        floor: the proposal's temperature never falls below ``floor`` times the start temperature
            while the target's is annealed (>= 0; 0: the proposal anneals with the target and, as
            T -> 0, collapses on the table's most negative entry). The MH ratio stays exact.

    Returns:
        :class:`SearchTrace` ``"gwg"``: per pair the best-so-far grids over its chains, with the
        cost (``costs``) and wall time (``times``) at which each was found.
    """
    check_positive("temperature", temperature)
    check_positive("floor", floor, minimum=0.0)
    search = _GibbsWithGradients(model, z_start, loss, chains=chains, budget=budget, seed=seed, start=start,
                                 movable=movable, prior=prior, radius=radius, temperature=float(temperature),
                                 anneal=bool(anneal), floor=float(floor))
    return search.run("gwg", {"temperature": temperature, "budget": budget, "anneal": anneal, "floor": floor},
                      progress)


def discrete_langevin(model, z_start: torch.Tensor, loss: LossFn, *, temperature: float = 0.02, alpha: float = 1.0,
                      mh: bool = True, dist: str = "onehot", chains: int = 4, budget: float = 1000, anneal: bool = False,
                      seed=0, start: torch.Tensor | None = None, movable: torch.Tensor | None = None,
                      prior=None, radius: int | None = None, floor: float = 1.0, progress: bool = False) -> SearchTrace:
    """Discrete Langevin (Zhang et al. 2022): DMALA (``mh=True``) or DULA (``mh=False``).

    Every position moves at once, independently: position p goes to code j with probability
    ``~ exp(-D[p, j] / 2T - dist(j, cur(p)) / alpha)`` (``D[p, cur] = 0``: staying is always
    possible). ``dist`` is ``"onehot"`` (1 for any other code) or ``"codebook"``
    (``|c_j - c_cur|^2`` divided by its mean over all pairs of codes).

    Args:
        temperature: T in units of the pair's start loss, > 0.
        alpha: the step size, > 0: larger moves more positions per step. The distance term is
            ``dist / alpha`` in units of the start temperature, divided by the current temperature
            like the table, so annealing does not make every position jump.
        mh: apply the Metropolis-Hastings correction (DMALA) or not (DULA).
        dist: one of :data:`DISTANCES`.
        chains, budget, anneal, seed, start, movable, prior, radius, floor: as :func:`gibbs_with_gradients`.

    Returns:
        :class:`SearchTrace` ``"dmala"`` or ``"dula"`` (``"-codebook"`` appended for that distance).
    """
    check_positive("temperature", temperature)
    check_positive("alpha", alpha)
    check_choice("dist", dist, DISTANCES)
    check_positive("floor", floor, minimum=0.0)
    search = _DiscreteLangevin(model, z_start, loss, chains=chains, budget=budget, seed=seed, start=start,
                               movable=movable, prior=prior, radius=radius, temperature=float(temperature),
                               alpha=float(alpha), mh=bool(mh), dist=dist, anneal=bool(anneal), floor=float(floor))
    method = ("dmala" if mh else "dula") + ("-codebook" if dist == "codebook" else "")
    return search.run(method, {"temperature": temperature, "alpha": alpha, "dist": dist, "budget": budget,
                               "anneal": anneal, "floor": floor}, progress)
