"""Several chains per pair as one batch: the engine every gradient sampler runs on.

B pairs with C chains each are one batch of ``n = B * C`` chains (chain ``c`` of pair ``i`` is
row ``i * C + c``; the loss rows are repeated). Each chain keeps its own grid ``(n, h, w)``, its
loss and gradient, and its best grid; a sampler supplies one ``step`` (propose, score, accept),
and :class:`ChainSearch` runs it under :func:`~vqtto.search.driver.drive` with a budget in
decoder-call equivalents per pair. The driver records, per chain, only the grids that improve on
the chain's best; :func:`merge_chains` turns them into one :class:`SearchTrace` per pair, the
best-so-far path over all its chains with the cost at which each grid was found.

Randomness comes from one generator per pair (:class:`PairRandom`), so a pair draws the same
numbers batched or searched alone.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch

from .losses import LossFn
from .driver import BUDGET, MOVED, RETRY, Evaluator, check_positive, check_start, drive
from .first_order import first_order_table
from .trace import FORWARD_BACKWARD, SearchTrace

__all__ = ["ChainSearch", "PairRandom", "best_paths", "movable_mask", "check_choice", "check_nonnegative", "merge_chains", "pair_seeds",
           "repeat_loss", "sample_categorical"]


def check_choice(name: str, value, allowed: Sequence) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_nonnegative(name: str, value) -> None:
    """Raise ValueError unless ``value`` is a finite number >= 0 (temperatures, noise scales)."""
    check_positive(name, value, minimum=0.0)


def pair_seeds(seed: int | Sequence[int], n_pairs: int) -> list[int]:
    """One seed per pair: ``seed`` itself per pair if a list, else ``seed * 1_000_003 + i``."""
    if isinstance(seed, (list, tuple)):
        if len(seed) != n_pairs or not all(isinstance(s, int) and s >= 0 for s in seed):
            raise ValueError(f"seed must be an int >= 0 or a list of {n_pairs} ints >= 0 (one per pair), got {seed!r}")
        return list(seed)
    check_positive("seed", seed, integer=True, minimum=0)
    return [seed * 1_000_003 + i for i in range(n_pairs)]


class PairRandom:
    """One generator per pair on ``device``; every draw is ``(C, *shape)`` per pair, then picked per chain."""

    def __init__(self, seeds: Sequence[int], chains: int, device: torch.device) -> None:
        self.chains, self.device = chains, device
        self.gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def uniform(self, rows: torch.Tensor, *shape: int) -> torch.Tensor:
        """Uniforms in (0, 1) ``(n, *shape)`` for chain rows ``rows`` ``(n,)`` (sorted ascending)."""
        pairs = (rows // self.chains).cpu()
        out = []
        for i in pairs.unique_consecutive().tolist():
            draw = torch.rand((self.chains,) + shape, generator=self.gens[i], device=self.device)
            mine = rows[pairs.to(rows.device) == i] - i * self.chains
            out.append(draw[mine])
        return torch.cat(out).clamp_(1e-12, 1 - 1e-7)


def sample_categorical(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws from ``softmax(logits)`` ``(..., K)``: ``u`` ``(...)`` gives one index per
    row, ``u`` ``(..., m)`` gives m independent indices per row (with replacement)."""
    cdf = torch.softmax(logits, -1).cumsum(-1)
    single = u.dim() == logits.dim() - 1
    vals = (u.unsqueeze(-1) if single else u) * cdf[..., -1:]
    pick = torch.searchsorted(cdf, vals.contiguous()).clamp_(max=logits.shape[-1] - 1)
    return pick.squeeze(-1) if single else pick


def repeat_loss(loss: LossFn, rows: torch.Tensor):
    """``loss`` restricted to ``rows`` (repeats allowed); refuses a loss that cannot be restricted."""
    if not hasattr(loss, "rows"):
        raise ValueError("several chains per pair need a loss with .rows() (a vqtto.search.losses.PairLoss, "
                         "e.g. search.mse_to(targets)); a plain callable cannot score repeated rows")
    return loss.rows(rows)


class ChainSearch:
    """The proposer :func:`drive` runs for a sampler: budget, per-chain state, best-so-far records.

    Subclasses implement :meth:`step` ``(rows)``, which moves the chains ``rows`` (updating
    ``idx``, ``value`` and ``grad`` there) and charges its decoder calls to ``ev``; ``step_cost``
    is the most it may charge per chain and step (a chain whose next step would exceed its share
    ``budget / chains`` stops with ``"budget"``).

    Attributes:
        idx ``(n, h, w)``, value ``(n,)``, grad ``(n, D, h, w)``: each chain's grid, loss, gradient.
        best_idx, best_value: each chain's best grid and loss so far.
        scale ``(n,)``: the loss of the start grid, the unit of every temperature.
        movable ``(n, h*w)`` bool: positions a chain may change.
        prior: a :class:`~vqtto.search.energy.GridPrior` or None; with one, every value is the
            energy (loss plus prior penalty) and the table includes the prior's first-order change.
        radius: None, or the most positions (Hamming distance) a chain's grid may differ from its
            start grid; moves past it are masked from the table and never accepted.
    """

    step_cost: float = 3.0
    floor: float = 0.0   # see proposal_temperature; the samplers set it from their keyword
    t0: float = 1.0

    def __init__(self, model, z_start: torch.Tensor, loss: LossFn, *, chains: int, budget: float,
                 seed, start: torch.Tensor | None, movable: torch.Tensor | None, prior=None,
                 radius: int | None = None) -> None:
        check_start(model, z_start)
        if radius is not None:
            check_positive("radius", radius, integer=True, minimum=1)
        check_positive("chains", chains, integer=True, minimum=1)
        check_positive("budget", budget)
        b, _, h, w = z_start.shape
        self.model, self.n_pairs, self.chains = model, b, chains
        self.seeds = pair_seeds(seed, b)
        dev = z_start.device
        self.pair_of = torch.arange(b, device=dev).repeat_interleave(chains)
        n = b * chains
        self.ev = Evaluator(model, repeat_loss(loss, self.pair_of), n, prior=prior)
        self.prior, self.radius = prior, radius
        self.chain_budget = float(budget) / chains
        if start is None:
            with torch.no_grad():
                start = model.nearest(z_start)
        self.own_starts = start.dim() == 4  # one start grid per chain
        if start.shape not in ((b, h, w), (b, chains, h, w)):
            raise ValueError(f"start must be (B, h, w) = {(b, h, w)} or (B, chains, h, w) = {(b, chains, h, w)}, "
                             f"got {tuple(start.shape)}")
        self.movable = movable_mask(movable, b, h, w, dev)[self.pair_of]
        self.rand = PairRandom(self.seeds, chains, dev)
        self.cb = model.codebook.detach()
        self.idx = start.to(dev).reshape(n, h, w).clone() if self.own_starts else start.to(dev)[self.pair_of].clone()
        self.centre = self.idx.clone()
        self.steps = torch.zeros(n, dtype=torch.long, device=dev)

    # --- what the samplers share ---------------------------------------------------------------

    def table(self, rows: torch.Tensor, idx: torch.Tensor | None = None, grad: torch.Tensor | None = None) -> torch.Tensor:
        """First-order table ``(n, h*w, k)`` of chains ``rows``; +inf at the current code and frozen positions."""
        idx = self.idx[rows] if idx is None else idx
        grad = self.grad[rows] if grad is None else grad
        d = first_order_table(self.cb, grad, idx)
        if self.prior is not None:
            d = d + self.prior.penalty_table(idx)
        d.scatter_(2, idx.flatten(1)[..., None], math.inf)
        frozen = ~self.movable[rows]
        if self.radius is not None:  # at the edge of the ball only positions already changed may move
            same = idx.flatten(1) == self.centre[rows].flatten(1)
            frozen = frozen | (same & (same.logical_not().sum(1, keepdim=True) >= self.radius))
        return d.masked_fill_(frozen[..., None], math.inf)

    def inside(self, rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``(n,)`` bool: grids ``idx`` ``(n, h, w)`` of chains ``rows`` lie within ``radius`` of their start."""
        if self.radius is None:
            return torch.ones(rows.numel(), dtype=torch.bool, device=rows.device)
        return (idx != self.centre[rows]).flatten(1).sum(1) <= self.radius

    def progress(self, rows: torch.Tensor) -> torch.Tensor:
        """``(n,)`` in [0, 1]: the share of its budget each chain has spent."""
        spent = self.ev.spent[rows.cpu()].to(rows.device, torch.float32)
        return (spent / self.chain_budget).clamp(0, 1)

    def offer(self, rows, idx, value) -> None:
        """Keep decoded grids ``idx`` ``(n, h, w)`` of chains ``rows`` that beat the chain's best, accepted or not:
        a rejected proposal was decoded and paid for, so a better one is never thrown away."""
        better = (value < self.best_value[rows]) & self.inside(rows, idx)
        self.best_value[rows[better]] = value[better].to(self.best_value.dtype)
        self.best_idx[rows[better]] = idx[better]

    def proposal_temperature(self, rows: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
        """``(n,)`` the proposal's temperature: ``temp``, but never below ``floor`` times the start temperature.

        Annealing the proposal with the target collapses it on the table's most negative entry (an
        extreme code) as T -> 0, and a rejected chain then proposes the same move again; the target
        (the acceptance) is still annealed, and the MH ratio uses this one proposal both ways."""
        return torch.maximum(temp, self.floor * self.t0 * self.scale[rows])

    def accept(self, rows, new_idx, new_value, new_grad, log_ratio) -> torch.Tensor:
        """Metropolis-Hastings: accept where ``log u < log_ratio``; update the accepted chains; ``(n,)`` bool.
        The proposal is offered to the chain's best record whether accepted or not."""
        self.offer(rows, new_idx, new_value)
        ok = (self.rand.uniform(rows).log() < log_ratio) & self.inside(rows, new_idx)
        self.set_state(rows[ok], new_idx[ok], new_value[ok], new_grad[ok])
        self.accepted[rows[ok]] += 1
        return ok

    def set_state(self, rows, idx, value, grad) -> None:
        """Move chains ``rows`` to grids ``idx`` ``(n, h, w)`` (those outside the radius stay)."""
        ok = self.inside(rows, idx)
        self.idx[rows[ok]], self.value[rows[ok]], self.grad[rows[ok]] = idx[ok], value[ok], grad[ok]

    def temperature(self, rows: torch.Tensor, t0: float, anneal: bool) -> torch.Tensor:
        """``(n,)`` the temperature of chains ``rows``: ``t0`` times the start loss, annealed linearly
        to 0 over the budget if ``anneal`` (floored at 1e-6 of the start loss)."""
        frac = 1 - self.progress(rows) if anneal else torch.ones(rows.numel(), device=rows.device)
        return (t0 * frac).clamp_min(1e-6) * self.scale[rows]

    def step(self, rows: torch.Tensor) -> None:
        raise NotImplementedError

    # --- the driver's side -----------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        n = rows.numel()
        status = torch.full((n,), RETRY, dtype=torch.long, device=rows.device)
        spent = self.ev.spent[rows.cpu()].to(rows.device)
        over = spent + self.step_cost > self.chain_budget + 1e-9
        status[over] = BUDGET
        go = rows[~over]
        before = self.best_value[rows].clone()
        if go.numel():
            self.step(go)
            self.steps[go] += 1
            self.offer(go, self.idx[go], self.value[go])
        better = (self.best_value[rows] < before) & ~over
        status[better] = MOVED
        return self.best_idx[rows], torch.ones(n, dtype=torch.long, device=rows.device), status

    def evaluate(self, idx: torch.Tensor, rows: torch.Tensor):
        """What :func:`drive` records as the loss of a chain's latest record: its best loss (free)."""
        return self.best_value[rows], self.best_value.new_zeros(rows.numel(), 0)

    def pair_clock(self, rows: torch.Tensor) -> torch.Tensor:
        """``(n,)`` the equivalents spent by all chains of each row's pair together."""
        per_pair = self.ev.spent.view(self.n_pairs, self.chains).sum(1)
        return per_pair[(rows // self.chains).cpu()]

    def run(self, method: str, params: dict, progress: bool = False) -> SearchTrace:
        """Score the start grids, run the chains to their budget, merge them per pair."""
        t0 = time.perf_counter()
        n = self.idx.shape[0]
        rows = torch.arange(n, device=self.idx.device)
        if self.own_starts:
            self.value, self.grad = self.ev.loss_and_grad(self.idx, rows)
        else:  # the chains of a pair start on one grid: score it once per pair
            first = rows[::self.chains]
            value, grad = self.ev.loss_and_grad(self.idx[first], first)
            self.value, self.grad = value.repeat_interleave(self.chains), grad.repeat_interleave(self.chains, 0)
            # the pair's start costs FORWARD_BACKWARD once; every chain pays its share, not chain 0 alone
            self.ev.charge(first, -FORWARD_BACKWARD)
            self.ev.charge(rows, FORWARD_BACKWARD / self.chains)
        self.scale = self.value.detach().clamp_min(1e-12)
        self.best_value, self.best_idx = self.value.clone(), self.idx.clone()
        self.accepted = torch.zeros(n, dtype=torch.long, device=self.idx.device)
        dummy = self.idx.new_zeros((n, 0, 1, 1), dtype=torch.float32)
        rec = drive(self.model, dummy, self, self.evaluate, max_unique=math.inf, max_rounds=math.inf,
                    on_revisit="skip", progress=progress, desc=method, start=self.idx.clone(), clock=self.pair_clock)
        per_chain = rec.trace()
        rate = float(self.accepted.sum()) / max(1, int(self.steps.sum()))
        if self.prior is not None:
            params = {**params, "prior_weight": self.prior.weight}
        if self.radius is not None:
            params = {**params, "radius": self.radius}
        chain_indices = self.best_idx.view(self.n_pairs, self.chains, *self.best_idx.shape[1:]).cpu()
        return merge_chains(per_chain, self.n_pairs, self.chains, method=method, chain_indices=chain_indices,
                            params={**params, "acceptance_rate": rate}, decoded_images=self.ev.decoded,
                            decoder_equivalents=self.ev.equivalents, seconds=time.perf_counter() - t0)


def movable_mask(movable: torch.Tensor | None, b: int, h: int, w: int, device) -> torch.Tensor:
    """``(B, h*w)`` bool from ``movable`` ``(B, h, w)``, ``(h, w)`` or None (all positions free)."""
    if movable is None:
        return torch.ones(b, h * w, dtype=torch.bool, device=device)
    if movable.dtype != torch.bool or movable.shape not in ((b, h, w), (h, w)):
        raise ValueError(f"movable must be a bool mask (B, h, w) or (h, w) = {(h, w)}, got {movable.dtype} "
                         f"{tuple(movable.shape)}")
    m = movable.to(device).expand(b, h, w).reshape(b, h * w)
    if not bool(m.any(1).all()):
        raise ValueError("movable must leave at least one position free in every pair")
    return m


def merge_chains(trace: SearchTrace, n_pairs: int, chains: int, *, cost_factor: float = 1.0, **fields) -> SearchTrace:
    """Per pair, the best-so-far path over its chains (see :func:`best_paths`).

    ``trace`` holds ``n_pairs * chains`` chains (chain c of pair i is row ``i * chains + c``); its
    ``costs`` are multiplied by ``cost_factor`` to give the pair's cost. ``fields`` fill the
    other :class:`SearchTrace` fields (method, params, decoded_images, ...).
    """
    parts = [[(trace.grids[r], trace.losses[r], trace.costs[r] * cost_factor, trace.times[r])
              for r in range(i * chains, (i + 1) * chains)] for i in range(n_pairs)]
    stalled = [all(trace.stop_reason[r] == "stalled" for r in range(i * chains, (i + 1) * chains)) for i in range(n_pairs)]
    fields["params"] = {**fields.get("params", {}), "chains": chains}
    return best_paths(parts, stalled, **fields)


def best_paths(parts, stalled: Sequence[bool], **fields) -> SearchTrace:
    """One :class:`SearchTrace` from, per pair, a list of ``(grids, losses, costs, times)`` runs.

    Per pair the runs are pooled and sorted by cost; only the grids that beat every grid found
    before them are kept (so they are distinct, with falling losses). Every pair ends with
    ``"budget"`` unless ``stalled`` says all its runs stalled.
    """
    grids, losses, raw, costs, times = [], [], [], [], []
    for runs in parts:
        g, l, c, t = (torch.cat([r[j] for r in runs]) for j in range(4))
        order = torch.argsort(c, stable=True)
        g, l, c, t = g[order], l[order], c[order], t[order]
        keep = torch.zeros(l.numel(), dtype=torch.bool)
        best = math.inf
        for j, v in enumerate(l.tolist()):
            if v < best:
                keep[j], best = True, v
        grids.append(g[keep])
        losses.append(l[keep])
        costs.append(c[keep])
        times.append(t[keep])
        raw.append(torch.cat([torch.zeros(1, dtype=torch.long), torch.ones(int(keep.sum()) - 1, dtype=torch.long)]))
    n = len(parts)
    return SearchTrace(grids=grids, losses=losses, raw_steps=raw, stop_reason=["stalled" if s else "budget" for s in stalled],
                       loop_to=[-1] * n, loop_steps=[0] * n, costs=costs, times=times, **fields)
