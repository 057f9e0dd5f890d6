"""Exact local search: batches of single-position moves, screened by a trust-region score, decoded exactly.

In the spirit of greedy coordinate gradient (Zou et al. 2023, arXiv 2307.15043): each round one
forward and backward pass at the current grid ``(B, h, w)`` gives the first-order table ``D``
``(B, h*w, k)`` (:func:`~vqtto.search.first_order_table`). The linear prediction overpromises for
codes far from the current one, so every move (p, j) is screened by a trust-region score

    ``s[p, j] = D[p, j] + kappa * ||c_j - c_cur(p)||^2``,

where ``kappa >= 0`` is fitted per pair (least squares through the origin of the true minus the
predicted change against the code distance) from every move the search has decoded so far. The
best few codes of every position by ``s`` form the pool; a batch of ``batch`` single moves is
taken from it, half the positions' own best moves (one per position, best score first), half
drawn at random with positions weighted by the gradient's norm there (where the residual error
is). All of them are decoded exactly (``batch`` decoder-call equivalents), the best is taken if
it improves, and the improving moves at distinct positions are combined into one more decoded
candidate. A pair whose batch holds no improvement keeps its grid and gradient and draws a new
batch among the moves it has not tried; a pair that has tried every single move is a certified
local optimum (``"stalled"``).

:func:`relaxed_then_local` runs :func:`~vqtto.search.relaxed_straight_through` for a share of
the budget and this search from its best grid for the rest.
"""

from __future__ import annotations

import math
import time

import torch

from .losses import LossFn
from .chains import PairRandom, movable_mask, pair_seeds
from .driver import BUDGET, MOVED, RETRY, STALLED, Evaluator, check_positive, check_start, drive
from .first_order import first_order_table
from .trace import FORWARD_BACKWARD, SearchTrace

__all__ = ["exact_local_search", "relaxed_then_local", "RELAXED_PHASE", "LOCAL_PHASE_BATCH"]

#: The relaxed phase's settings inside :func:`relaxed_then_local` where the caller gives none, tuned on
#: validation pairs only (``scripts/tune_relaxed_local.py``: quick Fashion-MNIST models, 96 pairs,
#: 1,000 equivalents, lr, tau, init_scale and share varied one at a time, then combined). Softer initial
#: logits than :func:`~vqtto.search.relaxed_straight_through`'s 3 win on both codebook sizes: at 0.75,
#: R <= 1 on 97.9% / 100% of the validation pairs at k=512 / 40, median R 0.674 / 0.767, against 95.8% /
#: 91.7% and 0.730 / 0.825 at 3; lr 0.1, tau 1 and half the budget stood. The values from 0.05 to 1 lie
#: close together (summed mean log R -0.724 at 0.75, -0.738 at 0.25, the script's lowest, -0.738 at
#: 0.05); 0.25 against 0.75 pair by pair: -0.003 (standard error 0.009) at k=512, -0.011 (0.004) at
#: k=40, a small real gain at k=40 only. 0.75 is kept because of chapter 8's tasks
#: (``scripts/check_relaxed_phase_on_tasks.py``, 48 validation images): with the PixelCNN in the energy both soft values beat 3 on 44-79% of the images, but the plain search's
#: super-resolution moves away from the truth as the start softens (median MSE at x4: 0.0170 at 3,
#: 0.0188 at 0.75, 0.0206 at 0.25; at x2 0.0077, 0.0083, 0.0086), so the softest value costs more there.
RELAXED_PHASE = {"init_scale": 0.75}

#: Single moves decoded per round by the local phase of :func:`relaxed_then_local`, tuned on validation
#: pairs only (``scripts/tune_local_phase.py``, 96 pairs, 1,000 equivalents, batch 8-96 and per_position
#: 1-16 varied one at a time; rows in ``scripts/tune_local_phase.json``): smaller batches, so more rounds
#: and more fresh gradients, win at both codebook sizes. Mean log R against the hand-set 48: -0.011 at 8,
#: -0.010 at 16 (standard errors about 0.003) at k=512; -0.014 at 8, -0.009 at 16 at k=40; 64 and 96 lose.
#: per_position 4 stood (2 and 1 lose, 8 and 16 within one standard error). The control on chapter 8's
#: validation tasks (``scripts/check_relaxed_phase_on_tasks.py --name batch --values 48 16 8``, 48 images)
#: agrees: with the PixelCNN in the energy batch 8 beats 48 on 50-77% of the images of every task (median
#: MSE e.g. 0.0178 -> 0.0145 at super-resolution x2), the plain search within 1 point either way.
#: :func:`exact_local_search` alone (method ``local``) keeps 48: it was not tuned here.
LOCAL_PHASE_BATCH = 8


def _budgets(budget, b: int, minimum: float) -> torch.Tensor:
    """``(B,)`` float64 CPU budgets from a number or a ``(B,)`` tensor, each >= ``minimum``."""
    if isinstance(budget, torch.Tensor):
        bt = budget.detach().to("cpu", torch.float64).flatten()
        if bt.numel() != b or not bool(torch.isfinite(bt).all()) or bool((bt < minimum).any()):
            raise ValueError(f"budget must be a number >= {minimum} or ({b},) finite values >= {minimum}, "
                             f"got {budget!r}")
        return bt.clone()
    check_positive("budget", budget, minimum=minimum)
    return torch.full((b,), float(budget), dtype=torch.float64)


class _LocalSearch:
    """Proposer and evaluator of :func:`exact_local_search` (state per pair, see the module docstring)."""

    def __init__(self, model, ev: Evaluator, budgets: torch.Tensor, batch: int, per_position: int,
                 movable: torch.Tensor, radius: int | None, centre: torch.Tensor, prior, seeds) -> None:
        self.ev, self.budgets, self.batch, self.per_position = ev, budgets, batch, per_position
        self.movable, self.radius, self.centre, self.prior = movable, radius, centre.flatten(1), prior
        self.cb = model.codebook.detach()
        cb = self.cb.double()
        sq = cb.pow(2).sum(1)
        self.sqdist = (sq[:, None] + sq[None] - 2 * cb @ cb.t()).clamp_min(0).to(self.cb.dtype)  # (k, k)
        b, p = movable.shape
        k = self.cb.shape[0]
        dev = movable.device
        self.rand = PairRandom(seeds, 1, dev)
        self.fit_num = torch.zeros(b, dtype=torch.float64, device=dev)
        self.fit_den = torch.zeros(b, dtype=torch.float64, device=dev)
        self.tried = torch.zeros(b, p, k, dtype=torch.bool, device=dev)
        self.value = torch.zeros(b, device=dev)
        self.grad = None
        self.fresh = torch.zeros(b, dtype=torch.bool, device=dev)     # grad is at the current grid
        self.known = torch.zeros(b, dtype=torch.bool, device=dev)     # value is the current grid's loss

    def remaining(self, rows: torch.Tensor) -> torch.Tensor:
        return (self.budgets[rows.cpu()] - self.ev.spent[rows.cpu()]).to(rows.device)

    def kappa(self, rows: torch.Tensor) -> torch.Tensor:
        den = self.fit_den[rows]
        return torch.where(den > 0, self.fit_num[rows] / den.clamp_min(1e-300), 0.0).clamp_min(0).to(self.cb.dtype)

    # --- the driver's evaluate: a gradient only where the grid changed and a candidate still fits ---

    def evaluate(self, idx: torch.Tensor, rows: torch.Tensor):
        need = ~self.fresh[rows] & ((self.remaining(rows) >= FORWARD_BACKWARD + 1) | ~self.known[rows])
        if bool(need.any()):
            r = rows[need]
            value, grad = self.ev.loss_and_grad(idx[need], r)
            if self.grad is None:
                self.grad = grad.new_zeros((self.value.shape[0],) + tuple(grad.shape[1:]))
            self.value[r], self.grad[r] = value.to(self.value.dtype), grad
            self.fresh[r] = True
            self.known[r] = True
        return self.value[rows], self.grad[rows]

    # --- one round ----------------------------------------------------------------------------------

    def scores(self, rows, idx, grads):
        """Trust-region scores ``(n, P, k)`` (+inf where a move is not allowed or was tried), table, distances."""
        cur = idx.flatten(1)
        d = first_order_table(self.cb, grads, idx)
        if self.prior is not None:
            d = d + self.prior.penalty_table(idx)
        dist = self.sqdist[cur]                                                    # (n, P, k)
        s = d + self.kappa(rows)[:, None, None] * dist
        bad = self.tried[rows] | ~self.movable[rows][..., None]
        bad = bad.scatter(2, cur[..., None], True)
        if self.radius is not None:   # at the ball's edge only positions already changed may move
            same = cur == self.centre[rows]
            bad = bad | (same & ((~same).sum(1, keepdim=True) >= self.radius))[..., None]
        return s.masked_fill(bad, math.inf), d, dist

    def choose(self, rows, s, grads, m_max: int) -> torch.Tensor:
        """``(n, m_max)`` moves ``p * k + j`` (-1 where none is left): positions' own best, then random draws."""
        n, p, k = s.shape
        c = min(self.per_position, k)
        top = s.topk(c, dim=2, largest=False)                                     # pool (n, P, c)
        pool_moves = (torch.arange(p, device=s.device)[None, :, None] * k + top.indices).flatten(1)
        pool_ok = top.values.isfinite().flatten(1)
        # half: each position's best move, positions by their best score
        n_best = m_max // 2
        pos_best = top.values[..., 0]
        first = pos_best.topk(min(n_best, p), dim=1, largest=False).indices       # (n, n_best)
        chosen = torch.zeros_like(pool_ok)
        chosen.scatter_(1, first * c, True)
        chosen &= pool_ok
        # half: Gumbel top-k over the rest of the pool, weighted by the gradient norm and the rank
        weight = grads.flatten(2).norm(dim=1).clamp_min(1e-30).log()              # (n, P)
        logw = (weight[..., None] - torch.log1p(torch.arange(c, device=s.device, dtype=weight.dtype))).flatten(1)
        gumbel = -(-self.rand.uniform(rows, p * c).log()).log()
        key = torch.where(pool_ok & ~chosen, logw + gumbel, -math.inf)
        need = m_max - int(chosen.sum(1).min())
        extra = key.topk(min(max(need, 0), p * c), dim=1).indices
        drawn = torch.zeros_like(chosen).scatter_(1, extra, key.gather(1, extra).isfinite())
        prio = torch.where(chosen, 2.0, torch.where(drawn, 1.0, 0.0))
        # order: the chosen best first, then the draws in their key order; keep m_max
        rank = prio * 1e6 + torch.where(key.isfinite(), key.clamp(-1e5, 1e5), -1e5 - 1)
        rank = torch.where(prio > 0, rank, -math.inf)
        order = rank.topk(min(m_max, p * c), dim=1)
        moves = pool_moves.gather(1, order.indices)
        return torch.where(order.values.isfinite(), moves, -1)

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        n = rows.numel()
        k = self.cb.shape[0]
        status = torch.full((n,), RETRY, dtype=torch.long, device=rows.device)
        new_idx = idx.clone()
        left = self.remaining(rows)
        status[left < 1] = BUDGET
        s, d, dist = self.scores(rows, idx, grads)
        status[(status == RETRY) & ~s.flatten(1).isfinite().any(1)] = STALLED     # every single move tried
        go = (status == RETRY).nonzero().squeeze(1)
        if go.numel() == 0:
            return new_idx, torch.ones(n, dtype=torch.long, device=rows.device), status
        m_row = left[go].floor().clamp(max=self.batch).long()
        # moves are chosen per batch size: how many a pair gets of its own best and of the draws depends on
        # its m, never on another pair's (a pair near the end of its budget searches as it would alone)
        for m in m_row.unique().tolist():
            group = go[m_row == m]
            moves = self.choose(rows[group], s[group], grads[group], m)
            m_have = (moves >= 0).sum(1)
            status[group[m_have < 1]] = STALLED   # never reached while a move is left; a guard against a silent loop
            for mm in m_have.unique().tolist():
                if mm < 1:
                    continue
                sub = group[m_have == mm]
                self.round(rows[sub], sub, idx[sub], values[sub], moves[m_have == mm][:, :mm], d[sub], dist[sub],
                           new_idx, status)
        return new_idx, torch.ones(n, dtype=torch.long, device=rows.device), status

    def round(self, rows, sub, idx, values, moves, d, dist, new_idx, status) -> None:
        """Decode the moves ``(n, m)`` of pairs ``rows``, fit kappa, move to the best single or combined grid."""
        n, m = moves.shape
        k = self.cb.shape[0]
        pos, code = moves // k, moves % k
        flat = idx.flatten(1)
        cands = flat[:, None].repeat(1, m, 1).scatter_(2, pos[..., None], code[..., None])
        cl = self.ev.losses(cands.view(n, m, *idx.shape[1:]), rows, base=idx).to(values.dtype)
        delta = cl - values[:, None]
        self.tried[rows[:, None], pos, code] = True
        pd, pdist = d[torch.arange(n)[:, None], pos, code], dist[torch.arange(n)[:, None], pos, code]
        ok = torch.isfinite(delta)
        self.fit_num[rows] += torch.where(ok, (delta - pd) * pdist, 0.0).double().sum(1)
        self.fit_den[rows] += torch.where(ok, pdist * pdist, 0.0).double().sum(1)
        best_l, best = cl.min(1)
        best_grid = cands[torch.arange(n), best]
        # combine the improving moves at distinct positions (the best one per position)
        improving = delta < 0
        order = torch.where(improving, delta, math.inf).argsort(1, descending=True)   # worst first, best written last
        comb = flat.clone()
        for j in range(m):
            col = order[:, j]
            use = improving.gather(1, col[:, None])[:, 0]
            r = use.nonzero().squeeze(1)
            comb[r, pos[r, col[r]]] = code[r, col[r]]
        n_moves = (comb != flat).sum(1)
        try_comb = (n_moves >= 2) & (self.remaining(rows) >= 1)
        if self.radius is not None:
            try_comb &= (comb != self.centre[rows]).sum(1) <= self.radius
        comb_l = torch.full_like(best_l, math.inf)
        if bool(try_comb.any()):
            sel = try_comb.nonzero().squeeze(1)
            comb_l[sel] = self.ev.losses(comb[sel][:, None].view(-1, 1, *idx.shape[1:]), rows[sel],
                                         base=idx[sel])[:, 0].to(comb_l.dtype)
        use_comb = comb_l < best_l
        new_l = torch.where(use_comb, comb_l, best_l)
        grid = torch.where(use_comb[:, None], comb, best_grid)
        better = new_l < values
        moved = rows[better]
        if moved.numel():
            self.value[moved] = new_l[better]
            self.fresh[moved] = False
            self.tried[moved] = False
            new_idx[sub[better]] = grid[better].view(-1, *idx.shape[1:])
            status[sub[better]] = MOVED


def exact_local_search(model, z_start: torch.Tensor, loss: LossFn, *, budget=1000, batch: int = 48,
                       per_position: int = 4, seed=0, start: torch.Tensor | None = None,
                       movable: torch.Tensor | None = None, radius: int | None = None, prior=None,
                       centre: torch.Tensor | None = None, progress: bool = False) -> SearchTrace:
    """Greedy exact local search on single-position moves, screened by a fitted trust-region score.

    See the module docstring for one round. Every decode is charged: the gradient at a new grid
    costs 3 decoder-call equivalents (:data:`~vqtto.search.FORWARD_BACKWARD`), each candidate 1.
    A pair stops when its budget is spent (to within one equivalent: the last batch shrinks to fit,
    and the last grids are screened with the previous gradient when a new one would not leave room
    for a candidate) or when it has tried every single move of its grid (``"stalled"``: a certified
    1-move local optimum).

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)``.
        z_start: ``(B, D, h, w)``; the search starts at ``nearest(z_start)`` or at ``start``.
        loss: images ``(B, C, H, W)`` -> ``(B,)``.
        budget: decoder-call equivalents per pair, >= 4 (a number, or a ``(B,)`` tensor), the start's
            gradient included.
        batch: single moves decoded per pair and round, >= 1 (32 to 64 is the intended range).
        per_position: codes per position in the candidate pool, >= 1.
        seed: an int or one int per pair (a pair draws the same numbers batched or alone).
        start: ``(B, h, w)`` int64 start grids.
        movable: ``(B, h, w)`` or ``(h, w)`` bool, the positions it may change (None: all).
        radius: stay within this Hamming distance (>= 1) of the start grid (None: no limit).
        prior: a :class:`~vqtto.search.energy.GridPrior`: minimise the energy instead of the loss.
        centre: ``(B, h, w)`` int64, the centre of the Hamming ball of ``radius`` (default: the start).

    Returns:
        :class:`SearchTrace` ``"local"``: the improving grids of each pair with their costs.
    """
    check_start(model, z_start)
    b, _, h, w = z_start.shape
    budgets = _budgets(budget, b, FORWARD_BACKWARD + 1)
    check_positive("batch", batch, integer=True, minimum=1)
    check_positive("per_position", per_position, integer=True, minimum=1)
    if radius is not None:
        check_positive("radius", radius, integer=True, minimum=1)
    dev = z_start.device
    if start is None:
        with torch.no_grad():
            start = model.nearest(z_start)
    if start.shape != (b, h, w):
        raise ValueError(f"start must be (B, h, w) = {(b, h, w)}, got {tuple(start.shape)}")
    t0 = time.perf_counter()
    ev = Evaluator(model, loss, b, prior=prior)
    centre = start if centre is None else centre
    if centre.shape != (b, h, w):
        raise ValueError(f"centre must be (B, h, w) = {(b, h, w)}, got {tuple(centre.shape)}")
    search = _LocalSearch(model, ev, budgets, batch, per_position, movable_mask(movable, b, h, w, dev), radius,
                          centre.to(dev), prior, pair_seeds(seed, b))
    rec = drive(model, z_start, search, search.evaluate, max_unique=math.inf, max_rounds=math.inf,
                on_revisit="skip", progress=progress, desc="local", start=start.to(dev), clock=ev.clock)
    params = {"budget": budget if not isinstance(budget, torch.Tensor) else budgets.tolist(), "batch": batch,
              "per_position": per_position, "kappa": search.kappa(torch.arange(b, device=dev)).cpu().tolist(),
              "spent": ev.spent.tolist()}
    if prior is not None:
        params["prior_weight"] = prior.weight
    if radius is not None:
        params["radius"] = radius
    return rec.trace(method="local", params=params, decoded_images=ev.decoded, seconds=time.perf_counter() - t0,
                     decoder_equivalents=ev.equivalents)


def relaxed_then_local(model, z_start: torch.Tensor, loss: LossFn, *, budget: float = 1000, share: float = 0.5,
                       batch: int = LOCAL_PHASE_BATCH, per_position: int = 4, seed=0, movable: torch.Tensor | None = None,
                       radius: int | None = None, prior=None, progress: bool = False, **relaxed) -> SearchTrace:
    """The relaxed straight-through search for ``share`` of the budget, then :func:`exact_local_search`.

    The relaxed search (:func:`~vqtto.search.relaxed_straight_through`, its keywords passed on
    through ``relaxed``, e.g. ``lr``, ``tau``; :data:`RELAXED_PHASE` where not given) gets ``floor(share * budget / 3) - 1`` decoder rounds
    (each costs 3 equivalents, and the driver scores the last grid once more), the local search
    starts from its best grid with what that pair has left. One trace: every grid either visited,
    with costs counted from the start of the relaxed search.

    Args:
        budget: decoder-call equivalents per pair, both searches together.
        share: the relaxed search's share of the budget, in (0, 1); the local search needs at least
            4 equivalents after it.
        batch, per_position, seed, movable, radius, prior: as :func:`exact_local_search` (batch
            :data:`LOCAL_PHASE_BATCH` here, tuned for this phase).

    Returns:
        :class:`SearchTrace` ``"relaxed-local"``.
    """
    from .relaxed import _relaxed_run

    phase = {**RELAXED_PHASE, **relaxed}
    for name in ("lr", "tau", "init_scale"):
        if name in phase:
            check_positive(name, phase[name])
    if "lam" in phase:
        check_positive("lam", phase["lam"], integer=True, minimum=1)
    check_start(model, z_start)
    check_positive("budget", budget)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ValueError(f"share must be a number in (0, 1), got {share!r}")
    steps = int(share * budget // FORWARD_BACKWARD) - 1
    if steps < 1 or budget - (steps + 1) * FORWARD_BACKWARD < FORWARD_BACKWARD + 1:
        raise ValueError(f"budget={budget!r} with share={share!r} leaves no room for both searches (the relaxed "
                         "search needs >= 6 equivalents, the local search >= 4)")
    t0 = time.perf_counter()
    first, spent = _relaxed_run(model, z_start, loss, max_steps=steps, max_unique=10 ** 9, seed=seed if isinstance(seed, int) else 0,
                                prior=prior, movable=movable, radius=radius, progress=progress,
                                **phase)
    rest = float(budget) - spent
    second = exact_local_search(model, z_start, loss, budget=rest, batch=batch, per_position=per_position, seed=seed,
                                start=first.best_indices.to(z_start.device), movable=movable, radius=radius,
                                prior=prior, centre=torch.stack([g[0] for g in first.grids]).to(z_start.device),
                                progress=progress)  # the ball stays centred on the relaxed search's start
    grids, losses, raw, costs, times = [], [], [], [], []
    for i in range(len(first)):
        seen = {g.numpy().tobytes() for g in first.grids[i]}
        keep = [j for j in range(1, second.grids[i].shape[0]) if second.grids[i][j].numpy().tobytes() not in seen]
        keep_t = torch.tensor(keep, dtype=torch.long)
        grids.append(torch.cat([first.grids[i], second.grids[i][keep_t]]))
        losses.append(torch.cat([first.losses[i], second.losses[i][keep_t]]))
        raw.append(torch.cat([first.raw_steps[i], second.raw_steps[i][keep_t]]))
        costs.append(torch.cat([first.costs[i], second.costs[i][keep_t] + float(spent[i])]))
        times.append(torch.cat([first.times[i], second.times[i][keep_t] + first.seconds]))
    params = {"budget": budget, "share": share, "relaxed_steps": steps, "relaxed": first.params,
              "local": {k: v for k, v in second.params.items() if k not in ("budget", "spent")}}
    return SearchTrace(grids=grids, losses=losses, raw_steps=raw, stop_reason=list(second.stop_reason),
                       loop_to=[-1] * len(first), loop_steps=[0] * len(first), method="relaxed-local", params=params,
                       decoded_images=first.decoded_images + second.decoded_images,
                       decoder_equivalents=first.decoder_equivalents + second.decoder_equivalents,
                       seconds=time.perf_counter() - t0, costs=costs, times=times)
