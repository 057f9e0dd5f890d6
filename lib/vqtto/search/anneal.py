"""Simulated annealing on the index grids with gradient-informed proposals.

Two annealed chain searches on :class:`~vqtto.search.chains.ChainSearch`; the temperature T (in
units of each pair's start loss) falls linearly to 0 over the budget, so the chains end greedy:

- :func:`path_annealing`, path-auxiliary proposals (Sun et al. 2022; iSCO, Sun et al. 2023): a
  path of R single-position moves drawn from one locally balanced softmax ``softmax(-D / 2T)``
  of the first-order table, accepted with the Metropolis-Hastings ratio of the path (its reverse
  read off the table at the proposed grid); each chain adapts R towards an acceptance of 0.574.
  One forward and backward pass per step (3 decoder-call equivalents).
- :func:`screened_annealing`, gradient-screened exact rescoring: draw m distinct moves from the
  same softmax among the table's ``pool * m`` most promising ones, decode all m in one batch,
  and take the truly best one under the annealed Metropolis rule (m + 2 equivalents per step: the
  gradient at the accepted candidate charges its backward pass, its forward having scored it).
"""

from __future__ import annotations

import math

import torch

from .losses import LossFn
from .chains import ChainSearch, sample_categorical
from .driver import check_positive
from .first_order import apply_moves
from .trace import FORWARD, FORWARD_BACKWARD, SearchTrace

__all__ = ["ACCEPT_TARGET", "path_annealing", "screened_annealing"]

#: The acceptance rate the path length R is steered to (iSCO's choice).
ACCEPT_TARGET = 0.574


class _PathAnnealing(ChainSearch):
    def __init__(self, *args, temperature: float, path: int, max_path: int, floor: float, **kw) -> None:
        super().__init__(*args, **kw)
        self.t0, self.max_path, self.floor = temperature, max_path, floor
        self.r = torch.full((self.idx.shape[0],), float(path), device=self.idx.device)

    def log_proposal(self, rows, idx, grad, temp):
        d = self.table(rows, idx, grad)
        return torch.log_softmax((-d / (2 * temp[:, None, None])).flatten(1), 1)

    def step(self, rows):
        target = self.temperature(rows, self.t0, anneal=True)
        temp = self.proposal_temperature(rows, target)
        idx = self.idx[rows]
        n, k = rows.numel(), self.cb.shape[0]
        lq = self.log_proposal(rows, idx, self.grad[rows], temp)
        moves = sample_categorical(lq, self.rand.uniform(rows, self.max_path))     # (n, max_path)
        pos = moves // k
        length = self.r[rows].round().long().clamp(1, self.max_path)
        valid = torch.arange(self.max_path, device=rows.device)[None] < length[:, None]
        for j in range(1, self.max_path):  # one move per position: drop repeats of an earlier position
            valid[:, j] &= ~((pos[:, :j] == pos[:, j:j + 1]) & valid[:, :j]).any(1)
        old = idx.flatten(1)
        new = old.clone()
        for j in range(self.max_path):
            sel = valid[:, j].nonzero().squeeze(1)
            new[sel, pos[sel, j]] = moves[sel, j] % k
        value, grad = self.ev.loss_and_grad(new.view_as(idx), rows)
        fwd = torch.where(valid, lq.gather(1, moves), 0.0).sum(1)
        back = pos * k + old.gather(1, pos)
        rev = torch.where(valid, self.log_proposal(rows, new.view_as(idx), grad, temp).gather(1, back), 0.0).sum(1)
        ok = self.accept(rows, new.view_as(idx), value, grad, -(value - self.value[rows]) / target + rev - fwd)
        self.r[rows] = (self.r[rows] * torch.exp(0.2 * (ok.float() - ACCEPT_TARGET))).clamp(1, self.max_path)


class _ScreenedAnnealing(ChainSearch):
    """A step decodes m candidates (m equivalents) and, if one is accepted, takes the gradient at it: its
    forward pass was the one that scored it, so only the backward pass is charged (``FORWARD_BACKWARD -
    FORWARD``). A chain with less left shrinks its last batch to what remains and takes no gradient
    after it, so it ends with less than one equivalent unspent."""

    step_cost = 1.0  # the least a step may charge; the step itself fits the rest of the budget

    def __init__(self, *args, temperature: float, m: int, pool: int, floor: float, **kw) -> None:
        super().__init__(*args, **kw)
        self.t0, self.m, self.pool, self.floor = temperature, m, pool, floor

    def step(self, rows):
        left = self.chain_budget - self.ev.spent[rows.cpu()].to(rows.device)
        grad_cost = FORWARD_BACKWARD - FORWARD
        with_grad = left.floor() - grad_cost >= 1
        m_row = torch.where(with_grad, left.floor() - grad_cost, left.floor()).clamp(max=self.m).long()
        for m in m_row.unique().tolist():
            sel = m_row == m
            if m >= 1:
                self.screen(rows[sel], m, with_grad[sel])

    def screen(self, rows, m: int, with_grad: torch.Tensor) -> None:
        target = self.temperature(rows, self.t0, anneal=True)
        temp = self.proposal_temperature(rows, target)
        idx = self.idx[rows]
        k = self.cb.shape[0]
        d = self.table(rows).flatten(1)
        top = d.topk(min(self.pool * m, d.shape[1]), dim=1, largest=False)
        gumbel = -(-self.rand.uniform(rows, top.indices.shape[1]).log()).log()
        score = torch.where(top.values.isfinite(), -top.values / (2 * temp[:, None]) + gumbel, -math.inf)
        moves = top.indices.gather(1, score.topk(min(m, score.shape[1]), dim=1).indices)
        cands = apply_moves(idx, moves, k)
        cl = self.ev.losses(cands, rows, base=idx)
        best_l, best = cl.min(1)
        new = cands.gather(1, best[:, None, None, None].expand(-1, 1, *idx.shape[1:]))[:, 0]
        self.offer(rows, new, best_l)
        delta = best_l - self.value[rows]
        ok = ((self.rand.uniform(rows).log() < -delta / target) | (delta < 0)) & self.inside(rows, new)
        grad_ok, last = ok & with_grad, ok & ~with_grad
        if bool(last.any()):  # the chain's last step: no gradient needed after it
            go = rows[last]
            self.idx[go], self.value[go] = new[last], best_l[last].to(self.value.dtype)
            self.accepted[go] += 1
        if bool(grad_ok.any()):
            go = rows[grad_ok]
            grad = self.ev.gradient(new[grad_ok], go)
            self.set_state(go, new[grad_ok], best_l[grad_ok].to(self.value.dtype), grad)
            self.accepted[go] += 1


def path_annealing(model, z_start: torch.Tensor, loss: LossFn, *, temperature: float = 0.02, path: int = 4,
                   max_path: int = 16, chains: int = 4, budget: float = 1000, seed=0, start: torch.Tensor | None = None,
                   movable: torch.Tensor | None = None, prior=None, radius: int | None = None,
                   floor: float = 1.0, progress: bool = False) -> SearchTrace:
    """Path-auxiliary proposals with simulated annealing (PAS, Sun et al. 2022; iSCO 2023).

    Args:
        temperature: the start temperature in units of the pair's start loss, > 0 (annealed to 0).
        path: the initial path length R, 1 <= path <= max_path (adapted per chain).
        max_path: the longest path, >= 1.
        chains, budget, seed, start, movable, prior, radius, floor: as
            :func:`~vqtto.search.gibbs_with_gradients` (the proposal keeps ``floor`` times the start
            temperature while the target is annealed).

    Returns:
        :class:`SearchTrace` ``"pas-sa"``.
    """
    check_positive("temperature", temperature)
    check_positive("floor", floor, minimum=0.0)
    for name, value in (("max_path", max_path), ("path", path)):
        check_positive(name, value, integer=True, minimum=1)
    if path > max_path:
        raise ValueError(f"path must be <= max_path={max_path}, got {path!r}")
    search = _PathAnnealing(model, z_start, loss, chains=chains, budget=budget, seed=seed, start=start, movable=movable,
                            prior=prior, radius=radius, temperature=float(temperature), path=path, max_path=max_path,
                            floor=float(floor))
    return search.run("pas-sa", {"temperature": temperature, "path": path, "max_path": max_path, "budget": budget},
                      progress)


def screened_annealing(model, z_start: torch.Tensor, loss: LossFn, *, temperature: float = 0.02, m: int = 16,
                       pool: int = 4, chains: int = 2, budget: float = 1000, seed=0, start: torch.Tensor | None = None,
                       movable: torch.Tensor | None = None, prior=None, radius: int | None = None,
                       floor: float = 1.0, progress: bool = False) -> SearchTrace:
    """Annealed chains whose moves are the truly best of m gradient-screened single-position changes.

    Args:
        temperature: the start temperature in units of the pair's start loss, > 0 (annealed to 0).
        m: candidates decoded per chain and step, >= 1.
        pool: the m candidates are drawn without replacement from the ``pool * m`` moves of lowest
            ``D`` (weights ``softmax(-D / 2T)``, T never below ``floor`` times the start temperature), >= 1.
        chains, budget, seed, start, movable, prior, radius, floor: as :func:`~vqtto.search.gibbs_with_gradients`.
            The budget is spent to within one equivalent per chain: the last batch shrinks to fit.

    Returns:
        :class:`SearchTrace` ``"screened-sa"``.
    """
    check_positive("temperature", temperature)
    check_positive("m", m, integer=True, minimum=1)
    check_positive("pool", pool, integer=True, minimum=1)
    check_positive("floor", floor, minimum=0.0)
    search = _ScreenedAnnealing(model, z_start, loss, chains=chains, budget=budget, seed=seed, start=start,
                                movable=movable, prior=prior, radius=radius, temperature=float(temperature), m=m,
                                pool=pool, floor=float(floor))
    return search.run("screened-sa", {"temperature": temperature, "m": m, "pool": pool, "budget": budget}, progress)
