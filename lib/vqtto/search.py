"""Test-time search in the discrete latent space of a VQ-VAE (paper section 5.2, appendix A.4).

Every search here works on a *latent decoder*: any object with
``nearest(z (B, D, h, w)) -> (B, h, w)`` int64, ``lookup(idx) -> (B, D, h, w)``,
``decode(codes) -> (B, C, H, W)`` and ``codebook`` ``(k, D)`` (:class:`vqtto.vqvae.VQVAE` is one).
A search starts from continuous latents ``z_start`` ``(B, D, h, w)`` (usually the encoder's
output for B source images) and minimises a per-pair loss ``images (B, C, H, W) -> (B,)``
(see :mod:`vqtto.constraints`; ``search.mse_to`` etc. are re-exported here).

- :func:`gradient_descent` Algorithm 1: plain gradient descent on the *continuous* latent,
  decoded without quantisation, stopped when the loss changes by at most ``tol``.
- :func:`straight_through` Algorithms 2 and 3: the gradient at the quantised latent is copied
  to the continuous latent, the same step is repeated until a nearest-neighbour index changes
  (at most ``lam`` repeats), and the search stops at the first index grid seen twice.
  ``mask="all"`` moves every position (Algorithm 2), ``"single"`` only the position with the
  largest gradient norm (Algorithm 3), ``"top"`` the ``m`` largest.
- :func:`greedy_coordinate` our improvement: scores candidate codes at the most promising
  positions by decoding them, keeps the best (and the best combination), widens the
  neighbourhood when nothing improves, and never stops on a revisit.

All searches are batched: the B pairs advance together, each with its own hash set and stop
state, and finished pairs cost no further decoder calls. They share one driver and return one
trace type, :class:`SearchTrace`; algorithms differ only in how they propose the next grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .constraints import LossFn, PairLoss, downscale, downscaled_mse_to, masked_mse_to, mse_to  # noqa: F401

MASKS = ("all", "single", "top")
STOP_REASONS = ("loop", "stalled", "budget")

# How the proposers tell the driver what happened to each pair in a round.
MOVED, STALLED, RETRY = 0, 1, 2


@dataclass
class SearchTrace:
    """What a batched search did, pair by pair.

    Attributes:
        grids: per pair ``(T_i, h, w)`` int64, the distinct index grids in the order visited;
            ``grids[i][0]`` is the start grid ``nearest(z_start)``.
        losses: per pair ``(T_i,)`` float, the loss of each of those grids.
        raw_steps: per pair ``(T_i,)`` int64, how many raw steps (repeats of a gradient step, or
            rounds of a proposer) it took to get from grid ``t-1`` to grid ``t``; 0 for the start.
        stop_reason: per pair, ``"loop"`` (the next grid had been seen before), ``"stalled"`` (no
            change within the repeat limit / no improving candidate / loss change below tol) or
            ``"budget"`` (``max_unique`` grids or the step budget reached).
        loop_to: per pair, the position in ``grids[i]`` the search returned to (-1 if no loop).
        loop_steps: per pair, raw steps of the final step that closed the loop (0 if no loop).
        method: a label such as ``"alg2"``.
        params: the search's parameters.
        decoded_images: images decoded in total (with or without gradient), all pairs together.
        seconds: wall time of the search.
        final_latents: ``(B, D, h, w)`` continuous latents at the end (Algorithms 1 to 3).
        continuous_losses: Algorithm 1 only: per pair, the loss of the continuous latent at
            every step (its ``losses`` are these losses at the steps where ``grids`` changed).
    """

    grids: list[torch.Tensor]
    losses: list[torch.Tensor]
    raw_steps: list[torch.Tensor]
    stop_reason: list[str]
    loop_to: list[int]
    loop_steps: list[int]
    method: str = ""
    params: dict = field(default_factory=dict)
    decoded_images: int = 0
    seconds: float = 0.0
    final_latents: torch.Tensor | None = None
    continuous_losses: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.grids)

    @property
    def n_unique(self) -> torch.Tensor:
        """``(B,)`` int64: distinct grids visited (the paper's "unique traversal steps")."""
        return torch.tensor([g.shape[0] for g in self.grids], dtype=torch.long)

    @property
    def final_indices(self) -> torch.Tensor:
        """``(B, h, w)`` int64: the last distinct grid of each pair."""
        return torch.stack([g[-1] for g in self.grids])

    @property
    def final_losses(self) -> torch.Tensor:
        """``(B,)`` the loss of :attr:`final_indices`."""
        return torch.stack([l[-1] for l in self.losses])

    @property
    def best_indices(self) -> torch.Tensor:
        """``(B, h, w)`` int64: the grid of lowest loss each pair visited."""
        return torch.stack([g[l.argmin()] for g, l in zip(self.grids, self.losses)])

    @property
    def best_losses(self) -> torch.Tensor:
        """``(B,)`` the lowest loss each pair reached."""
        return torch.stack([l.min() for l in self.losses])

    @property
    def total_raw_steps(self) -> torch.Tensor:
        """``(B,)`` int64: raw steps taken in all, including a loop-closing step."""
        return torch.stack([r.sum() for r in self.raw_steps]) + torch.tensor(self.loop_steps, dtype=torch.long)

    def fraction(self, reason: str) -> float:
        """Fraction of pairs that stopped for ``reason`` (one of :data:`STOP_REASONS`)."""
        if reason not in STOP_REASONS:
            raise ValueError(f"reason must be one of {list(STOP_REASONS)}, got {reason!r}")
        return sum(r == reason for r in self.stop_reason) / max(1, len(self))

    def steps_per_change(self) -> torch.Tensor:
        """All raw-step counts of the changes of all pairs (start grids excluded), ``(N,)`` int64."""
        parts = [r[1:] for r in self.raw_steps]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


# --- checks ------------------------------------------------------------------------------------

def _check_positive(name: str, value, *, integer: bool = False, minimum: float | None = None) -> None:
    ok_type = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if minimum is None and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_start(model, z_start: torch.Tensor) -> None:
    if not isinstance(z_start, torch.Tensor) or z_start.dim() != 4:
        shape = tuple(z_start.shape) if isinstance(z_start, torch.Tensor) else type(z_start).__name__
        raise ValueError(f"z_start must be a (B, D, h, w) tensor, got {shape}")
    cb = getattr(model, "codebook", None)
    d = cb.shape[1] if cb is not None else z_start.shape[1]
    if z_start.shape[1] != d:
        raise ValueError(f"z_start has {z_start.shape[1]} channels but the codebook vectors have D={d}")
    if z_start.shape[0] < 1:
        raise ValueError("z_start must hold at least one pair")


# --- loss evaluation on a subset of the pairs ---------------------------------------------------

def pair_losses(loss: LossFn, images: torch.Tensor, rows: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """Losses ``(n,)`` of ``images`` ``(n, C, H, W)`` belonging to pairs ``rows`` ``(n,)``.

    A :class:`~vqtto.constraints.PairLoss` is restricted to those rows; any other callable is
    called on a full ``(n_pairs, C, H, W)`` batch (zeros elsewhere) and the rows are picked out,
    so ``rows`` must then be distinct.
    """
    if hasattr(loss, "rows"):
        values = loss.rows(rows)(images)
    else:
        full = images.new_zeros((n_pairs,) + tuple(images.shape[1:])).index_put((rows,), images)
        values = loss(full)
        if values.shape != (n_pairs,):
            raise ValueError(f"loss must return one value per pair, shape ({n_pairs},), got {tuple(values.shape)}")
        values = values[rows]
    if values.shape != (images.shape[0],):
        raise ValueError(f"loss must return one value per image, shape ({images.shape[0]},), got {tuple(values.shape)}")
    return values


class _Evaluator:
    """Decodes index grids of a subset of pairs and scores them, counting decoded images."""

    def __init__(self, model, loss: LossFn, n_pairs: int, chunk: int = 4096) -> None:
        self.model, self.loss, self.n_pairs, self.chunk = model, loss, n_pairs, chunk
        self.decoded = 0

    def loss_and_grad(self, idx: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grids ``(n, h, w)`` -> losses ``(n,)`` and the gradient ``(n, D, h, w)`` at their codes."""
        with torch.enable_grad():
            codes = self.model.lookup(idx).detach().requires_grad_(True)
            values = pair_losses(self.loss, self.model.decode(codes), rows, self.n_pairs)
            (grad,) = torch.autograd.grad(values.sum(), codes)
        self.decoded += idx.shape[0]
        return values.detach(), grad

    def latent_loss_and_grad(self, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous latents ``(n, D, h, w)`` decoded as they are -> losses and gradient."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            values = pair_losses(self.loss, self.model.decode(z), rows, self.n_pairs)
            (grad,) = torch.autograd.grad(values.sum(), z)
        self.decoded += z.shape[0]
        return values.detach(), grad

    @torch.no_grad()
    def losses(self, cands: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Candidate grids ``(n, M, h, w)`` of pairs ``rows`` -> losses ``(n, M)`` (no gradient)."""
        n, m = cands.shape[:2]
        flat = cands.reshape(n * m, *cands.shape[2:])
        flat_rows = rows.repeat_interleave(m)
        out = []
        for s in range(0, n * m, self.chunk):
            sl = slice(s, s + self.chunk)
            images = self.model.decode(self.model.lookup(flat[sl]))
            if hasattr(self.loss, "rows"):
                out.append(pair_losses(self.loss, images, flat_rows[sl], self.n_pairs))
            else:  # a plain callable needs distinct rows per call: one call per candidate slot
                r = flat_rows[sl]
                slot = torch.arange(s, s + images.shape[0], device=r.device) % m
                vals = torch.empty(images.shape[0], device=images.device, dtype=images.dtype)
                for j in range(m):
                    pick = (slot == j).nonzero().squeeze(1)
                    if pick.numel():
                        vals[pick] = pair_losses(self.loss, images[pick], r[pick], self.n_pairs)
                out.append(vals)
        self.decoded += n * m
        return torch.cat(out).view(n, m)


# --- the driver --------------------------------------------------------------------------------

class _Recorder:
    """Per-pair traces and hash sets of the grids seen."""

    def __init__(self, n_pairs: int) -> None:
        self.grids = [[] for _ in range(n_pairs)]
        self.losses = [[] for _ in range(n_pairs)]
        self.raw = [[] for _ in range(n_pairs)]
        self.seen: list[dict[bytes, int]] = [{} for _ in range(n_pairs)]
        self.stop = [""] * n_pairs
        self.loop_to = [-1] * n_pairs
        self.loop_steps = [0] * n_pairs

    def add(self, rows: torch.Tensor, grids: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """Record new grids ``(n, h, w)`` of pairs ``rows``; returns ``(n,)`` bool: seen before."""
        g_cpu = grids.detach().to("cpu", copy=True)  # .cpu() would alias a CPU tensor the driver mutates
        g_np = g_cpu.numpy()
        raw_l = raw.detach().cpu().tolist()
        revisit = []
        for j, i in enumerate(rows.tolist()):
            key = g_np[j].tobytes()
            if key in self.seen[i]:
                revisit.append(True)
                self.loop_to[i] = self.seen[i][key]
                self.loop_steps[i] = int(raw_l[j])
                continue
            revisit.append(False)
            self.seen[i][key] = len(self.grids[i])
            self.grids[i].append(g_cpu[j])
            self.raw[i].append(int(raw_l[j]))
        return torch.tensor(revisit, dtype=torch.bool, device=rows.device)

    def set_losses(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        """The loss of the latest grid of each pair in ``rows``."""
        for i, v in zip(rows.tolist(), values.detach().cpu().tolist()):
            if len(self.losses[i]) < len(self.grids[i]):
                self.losses[i].append(v)

    def count(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.tensor([len(self.grids[i]) for i in rows.tolist()], dtype=torch.long, device=rows.device)

    def trace(self, **extra) -> SearchTrace:
        return SearchTrace(
            grids=[torch.stack(g) for g in self.grids],
            losses=[torch.tensor(l, dtype=torch.float32) for l in self.losses],
            raw_steps=[torch.tensor(r, dtype=torch.long) for r in self.raw],
            stop_reason=list(self.stop), loop_to=list(self.loop_to), loop_steps=list(self.loop_steps), **extra)


Proposer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def drive(model, z_start: torch.Tensor, loss: LossFn, propose: Proposer, evaluator: _Evaluator, *,
          max_unique: int, max_rounds: int, stop_on_revisit: bool = True, progress: bool = False,
          desc: str = "search", start: torch.Tensor | None = None) -> _Recorder:
    """Run a proposer on all pairs until each stops; returns the filled :class:`_Recorder`.

    Each round decodes the current grid of every active pair once (loss and gradient at its
    codes) and asks ``propose(rows, idx, losses, grads)`` for the next grids. The proposer returns
    ``(new_idx (n, h, w), raw_steps (n,), status (n,))`` with status MOVED, STALLED or RETRY
    (keep the pair, no new grid this round).
    """
    n_pairs = z_start.shape[0]
    rec = _Recorder(n_pairs)
    if start is None:
        with torch.no_grad():
            start = model.nearest(z_start)
    idx = start.clone()
    all_rows = torch.arange(n_pairs, device=idx.device)
    rec.add(all_rows, idx, torch.zeros(n_pairs, dtype=torch.long))
    active = torch.ones(n_pairs, dtype=torch.bool, device=idx.device)
    pending = torch.zeros(n_pairs, dtype=torch.long, device=idx.device)  # rounds since the last new grid
    bar = _progress(progress, n_pairs, desc)
    rounds = 0

    def stop(rows: torch.Tensor, reason: str) -> None:
        for i in rows.tolist():
            rec.stop[i] = reason
        active[rows] = False
        if bar is not None:
            bar.update(int(rows.numel()))

    while bool(active.any()):
        rows = active.nonzero().squeeze(1)
        values, grads = evaluator.loss_and_grad(idx[rows], rows)
        rec.set_losses(rows, values)
        over = (rec.count(rows) >= max_unique) | (rounds >= max_rounds)
        stop(rows[over], "budget")
        keep = ~over
        rows, values, grads = rows[keep], values[keep], grads[keep]
        if rows.numel() == 0:
            continue
        new_idx, raw, status = propose(rows, idx[rows], values, grads)
        rounds += 1
        stop(rows[status == STALLED], "stalled")
        pending[rows[status == RETRY]] += 1
        moved = status == MOVED
        rows, new_idx, raw = rows[moved], new_idx[moved], raw[moved] + pending[rows[moved]]
        pending[rows] = 0
        if rows.numel() == 0:
            continue
        revisit = rec.add(rows, new_idx, raw)
        idx[rows] = new_idx
        if stop_on_revisit:
            stop(rows[revisit], "loop")
    if bar is not None:
        bar.close()
    return rec


def _progress(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pair", leave=False)


# --- Algorithms 2 and 3: straight-through search ---------------------------------------------------

def mask_gradient(grad: torch.Tensor, mask: str = "all", m: int = 1) -> torch.Tensor:
    """Keep the gradient ``(n, D, h, w)`` at all positions, the single largest-norm one, or the top ``m``."""
    if mask == "all":
        return grad
    keep_n = 1 if mask == "single" else m
    n, _, h, w = grad.shape
    norms = grad.norm(dim=1).flatten(1)
    top = norms.topk(min(keep_n, h * w), dim=1).indices
    keep = torch.zeros_like(norms).scatter_(1, top, 1.0).view(n, 1, h, w)
    return grad * keep


def nearest_exact(z: torch.Tensor, codebook: torch.Tensor, chunk_elems: int = 1 << 22) -> torch.Tensor:
    """Nearest code by Euclidean distance in float64: ``(n, D, h, w)`` -> ``(n, h, w)`` int64.

    The same as ``model.nearest`` except at near-ties that float32 arithmetic cannot resolve; the
    straight-through search uses it so that its analytic repeat counts are exact.
    """
    n, dim, h, w = z.shape
    cb = codebook.detach().double()
    c2 = cb.pow(2).sum(1)
    per = max(1, chunk_elems // max(1, h * w * cb.shape[0]))
    out = []
    for s in range(0, n, per):
        flat = z[s:s + per].detach().double().permute(0, 2, 3, 1).reshape(-1, dim)
        out.append((c2 - 2 * flat @ cb.t()).argmin(1).view(-1, h, w))
    return torch.cat(out) if out else torch.zeros(0, h, w, dtype=torch.long, device=z.device)


def position_steps(e: torch.Tensor, d: torch.Tensor, idx: torch.Tensor, codebook: torch.Tensor,
                   dtype: torch.dtype = torch.float64, chunk_elems: int = 1 << 22) -> torch.Tensor:
    """Per position, the number of repeats of step ``d`` after which its nearest code changes.

    Moving ``e + t d``, code ``j`` overtakes the current code ``i`` at a position when
    ``|e + t d - c_j|^2 < |e + t d - c_i|^2``, i.e. ``A_j + t B_j < 0`` with
    ``A_j = |e - c_j|^2 - |e - c_i|^2 >= 0`` and ``B_j = 2 d.(c_i - c_j)``: first at
    ``t = floor(A_j / -B_j) + 1`` when ``B_j < 0``, never otherwise. No decoder call is needed.

    Args:
        e, d: ``(n, D, h, w)`` continuous latents and the step added per repeat.
        idx: ``(n, h, w)`` int64, the current nearest indices of ``e``.
        codebook: ``(k, D)``.
        dtype: float64 is exact enough to agree with :func:`nearest_exact`; float32 is faster
            and may be off by one step near ties.

    Returns:
        ``(n, h*w)`` float64, the smallest such t over codes at each position (inf if none).
    """
    n, dim, h, w = e.shape
    cb = codebook.detach().to(dtype)
    c2 = cb.pow(2).sum(1)
    out = []
    per = max(1, chunk_elems // max(1, h * w * cb.shape[0]))
    for s in range(0, n, per):
        E = e[s:s + per].detach().to(dtype).permute(0, 2, 3, 1).reshape(-1, h * w, dim)
        D = d[s:s + per].detach().to(dtype).permute(0, 2, 3, 1).reshape(-1, h * w, dim)
        cur = cb[idx[s:s + per].reshape(-1, h * w)]
        base = cur.pow(2).sum(-1) - 2 * (E * cur).sum(-1)
        m = E.shape[0] * h * w
        a = torch.addmm(c2, E.reshape(m, dim), cb.t(), alpha=-2).view(-1, h * w, cb.shape[0])
        a.sub_(base[..., None]).clamp_min_(1e-30)                                   # A_j (> 0, so a / 0 = inf)
        nb = torch.addmm((-2 * (D * cur).sum(-1)).reshape(m, 1), D.reshape(m, dim), cb.t(), alpha=2)
        # -B_j, 0 where j never overtakes; adding +0.0 turns a -0.0 into +0.0, whose quotient is +inf, not -inf
        nb = nb.view(-1, h * w, cb.shape[0]).clamp_min_(0).add_(0.0)
        ratio = a.div_(nb)                                                           # inf where -B_j <= 0
        ratio.scatter_(2, idx[s:s + per].reshape(-1, h * w, 1), math.inf)  # the current code (0/0 up to rounding)
        out.append(torch.floor(ratio.amin(2).double()) + 1)
    return torch.cat(out)


def steps_to_change(e: torch.Tensor, d: torch.Tensor, idx: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``(n,)`` float64: repeats of ``d`` until *some* position's nearest code changes (inf if never).

    The minimum over positions of :func:`position_steps` in float64, consistent with
    :func:`nearest_exact`.
    """
    return position_steps(e, d, idx, codebook, torch.float64).amin(1)


class _StraightThrough:
    """Proposer of Algorithms 2 and 3: repeat the masked straight-through step until an index changes.

    With a ``codebook`` on the model, the repeats are counted by :func:`steps_to_change` and the
    continuous latent is kept in float64 so that count and :func:`nearest_exact` agree; a model
    without one is handled by doubling the repeat count with ``model.nearest`` look-ups and then
    bisecting (about ``2 log2(lam)`` look-ups, still no decoder call).
    """

    def __init__(self, model, z_start: torch.Tensor, alpha: float, lam: int, mask: str, m: int) -> None:
        self.model, self.alpha, self.lam, self.mask, self.m = model, alpha, lam, mask, m
        self.codebook = getattr(model, "codebook", None)
        self.e = z_start.detach().clone().double() if self.codebook is not None else z_start.detach().clone()

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        if self.codebook is not None:
            return nearest_exact(z, self.codebook)
        return self.model.nearest(z.to(self.model_dtype()))

    def model_dtype(self) -> torch.dtype:
        return next((p.dtype for p in self.model.parameters()), torch.float32) if hasattr(self.model, "parameters") else torch.float32

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        d = -self.alpha * mask_gradient(grads, self.mask, self.m).to(self.e.dtype)
        e = self.e[rows]
        if self.codebook is not None:
            return self._analytic(rows, e, d, idx)
        steps = self._gallop(e, d, idx)
        new_idx = idx.clone()
        todo = steps <= self.lam
        # Confirm the count with nearest-neighbour look-ups (a rounding tie can leave it one short).
        while bool(todo.any()):
            sel = todo.nonzero().squeeze(1)
            nn = self.nearest(e[sel] + steps[sel].to(e.dtype)[:, None, None, None] * d[sel])
            changed = (nn != idx[sel]).flatten(1).any(1)
            new_idx[sel[changed]] = nn[changed]
            todo[sel[changed]] = False
            steps[sel[~changed]] += 1
            todo &= steps <= self.lam
        status = torch.where(steps <= self.lam, MOVED, STALLED).to(torch.long)
        steps = steps.clamp(max=self.lam)
        self.e[rows] = e + steps.to(e.dtype)[:, None, None, None] * d
        return new_idx, steps, status

    def _analytic(self, rows, e, d, idx):
        """Counts in float32 per position, then exact float64 nearest codes at the few positions
        that can have changed (those within one step of the earliest), repeated one step further
        in the rare case that rounding made the count short."""
        n, dim, h, w = e.shape
        tp = position_steps(e, d, idx, self.codebook, torch.float32)                 # (n, hw)
        steps = tp.amin(1).clamp(min=1, max=self.lam + 1).to(torch.long)  # >= 1: the loop below is bounded by lam
        cb = self.codebook.detach().double()
        c2 = cb.pow(2).sum(1)
        ef = e.permute(0, 2, 3, 1).reshape(n, h * w, dim)
        df = d.permute(0, 2, 3, 1).reshape(n, h * w, dim)
        old = idx.reshape(n, h * w)
        new = old.clone()
        todo = steps <= self.lam
        while bool(todo.any()):
            sel = todo.nonzero().squeeze(1)
            r, p = (tp[sel] <= (steps[sel] + 1)[:, None].to(tp.dtype)).nonzero(as_tuple=True)
            rows_, t = sel[r], steps[sel[r]].to(ef.dtype)[:, None]
            pts = ef[rows_, p] + t * df[rows_, p]                                      # (m, D)
            nn = (c2 - 2 * pts @ cb.t()).argmin(1)
            moved = nn != old[rows_, p]
            new[rows_[moved], p[moved]] = nn[moved]
            hit = torch.zeros(n, dtype=torch.bool, device=e.device)
            hit[rows_[moved]] = True
            todo &= ~hit
            steps[todo] += 1
            todo &= steps <= self.lam
        status = torch.where(steps <= self.lam, MOVED, STALLED).to(torch.long)
        steps = steps.clamp(max=self.lam)
        self.e[rows] = e + steps.to(e.dtype)[:, None, None, None] * d
        return new.view(n, h, w), steps, status

    def _gallop(self, e, d, idx) -> torch.Tensor:
        """Smallest t <= lam with a changed nearest grid, by doubling then bisection; lam + 1 if none."""
        n = e.shape[0]
        lo = torch.zeros(n, dtype=torch.long, device=e.device)          # known unchanged
        hi = torch.full((n,), self.lam + 1, dtype=torch.long, device=e.device)  # known changed (or beyond)

        def changed_at(t):
            return (self.nearest(e + t.to(e.dtype)[:, None, None, None] * d) != idx).flatten(1).any(1)

        t = torch.ones(n, dtype=torch.long, device=e.device)
        open_ = torch.ones(n, dtype=torch.bool, device=e.device)
        while bool(open_.any()):
            c = changed_at(t.clamp(max=self.lam))
            hit = open_ & c
            hi[hit] = t[hit].clamp(max=self.lam)
            miss = open_ & ~c
            lo[miss] = t[miss].clamp(max=self.lam)
            open_ = miss & (t < self.lam)
            t = torch.where(open_, t * 2, t)
        while bool(((hi - lo) > 1).any()):
            mid = (lo + hi) // 2
            c = changed_at(mid)
            active = (hi - lo) > 1
            hi = torch.where(active & c, mid, hi)
            lo = torch.where(active & ~c, mid, lo)
        return hi


def straight_through(model, z_start: torch.Tensor, loss: LossFn, *, alpha: float = 0.1, lam: int = 100,
                     max_unique: int = 500, mask: str = "all", m: int = 1, progress: bool = False) -> SearchTrace:
    """Algorithm 2 (``mask="all"``), Algorithm 3 (``mask="single"``) or its top-``m`` variant.

    From ``e = z_start`` the search quantises, decodes, takes the gradient of the loss at the
    quantised codes (straight-through), and adds ``-alpha * grad`` (masked) to ``e`` again and
    again until a nearest-neighbour index changes; the repeats are counted analytically
    (:func:`steps_to_change`), so they cost no decoder call. It stops at the first grid seen
    before (``"loop"``), when ``lam`` repeats change nothing (``"stalled"``), or after
    ``max_unique`` distinct grids (``"budget"``).

    Args:
        model: a latent decoder (see the module docstring).
        z_start: ``(B, D, h, w)`` continuous start latents, e.g. ``model.encode(sources)``.
        loss: images ``(B, C, H, W)`` -> ``(B,)``, e.g. ``search.mse_to(targets)``.
        alpha: step size > 0.
        lam: most repeats of one step, >= 1 (the paper's lambda).
        max_unique: most distinct grids per pair, >= 1.
        mask: ``"all"`` | ``"single"`` | ``"top"``.
        m: positions moved per step when ``mask="top"``, >= 1.

    Returns:
        :class:`SearchTrace` with method ``"alg2"``, ``"alg3"`` or ``"top{m}"``.
    """
    _check_positive("alpha", alpha)
    _check_positive("lam", lam, integer=True, minimum=1)
    _check_positive("max_unique", max_unique, integer=True, minimum=1)
    _check_positive("m", m, integer=True, minimum=1)
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {list(MASKS)}, got {mask!r}")
    _check_start(model, z_start)
    t0 = time.perf_counter()
    ev = _Evaluator(model, loss, z_start.shape[0])
    proposer = _StraightThrough(model, z_start, float(alpha), lam, mask, m)
    method = {"all": "alg2", "single": "alg3"}.get(mask, f"top{m}")
    rec = drive(model, z_start, loss, proposer, ev, max_unique=max_unique, max_rounds=max_unique,
                progress=progress, desc=method, start=proposer.nearest(proposer.e))
    return rec.trace(method=method, params={"alpha": alpha, "lam": lam, "max_unique": max_unique, "mask": mask, "m": m},
                     decoded_images=ev.decoded, seconds=time.perf_counter() - t0,
                     final_latents=proposer.e.to(z_start.dtype))


# --- Algorithm 1: continuous gradient descent ----------------------------------------------------

def gradient_descent(model, z_start: torch.Tensor, loss: LossFn, *, alpha: float = 0.1, tol: float = 1e-6,
                     max_steps: int = 1000, progress: bool = False) -> SearchTrace:
    """Algorithm 1: ``z <- z - alpha * grad L(decode(z))`` on the continuous latent, no quantisation.

    Each pair stops when its loss changes by at most ``tol`` between steps (``"stalled"``, the
    paper's stopping rule) or after ``max_steps`` steps (``"budget"``). The decoder of a VQ-VAE
    then sees latents that need not be codes at all: the loss it reaches is what a continuous
    generator could do, not what any index grid achieves.

    Returns:
        :class:`SearchTrace` with method ``"alg1"``: ``grids`` are ``nearest(z)`` of the iterates
        each time it changes, ``losses`` the *continuous* losses there, ``raw_steps`` the steps
        between changes; ``continuous_losses`` has the loss at every step and ``final_latents``
        the final z. Use :func:`quantized_losses` for the loss of the grids themselves.
    """
    _check_positive("alpha", alpha)
    _check_positive("tol", tol, minimum=0.0)
    _check_positive("max_steps", max_steps, integer=True, minimum=0)
    _check_start(model, z_start)
    t0 = time.perf_counter()
    n_pairs = z_start.shape[0]
    ev = _Evaluator(model, loss, n_pairs)
    rec = _Recorder(n_pairs)
    z = z_start.detach().clone()
    curves: list[list[float]] = [[] for _ in range(n_pairs)]
    last = [None] * n_pairs
    since = [0] * n_pairs
    active = torch.ones(n_pairs, dtype=torch.bool, device=z.device)
    prev = torch.full((n_pairs,), math.inf, device=z.device)
    bar = _progress(progress, n_pairs, "alg1")
    for step in range(max_steps + 1):
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        values, grad = ev.latent_loss_and_grad(z[rows], rows)
        with torch.no_grad():
            nn = model.nearest(z[rows]).cpu()
        for j, i in enumerate(rows.tolist()):
            curves[i].append(float(values[j]))
            since[i] += 1
            if last[i] is None or not torch.equal(nn[j], last[i]):
                rec.grids[i].append(nn[j])
                rec.losses[i].append(float(values[j]))
                rec.raw[i].append(0 if last[i] is None else since[i])
                last[i], since[i] = nn[j], 0
        done = (values - prev[rows]).abs() <= tol
        budget = torch.full_like(done, step == max_steps) & ~done
        for reason, which in (("stalled", done), ("budget", budget)):
            for i in rows[which].tolist():
                rec.stop[i] = reason
        finished = done | budget
        active[rows[finished]] = False
        if bar is not None:
            bar.update(int(finished.sum()))
        go = rows[~finished]
        prev[rows] = values
        z[go] = z[go] - alpha * grad[~finished]
    if bar is not None:
        bar.close()
    return rec.trace(method="alg1", params={"alpha": alpha, "tol": tol, "max_steps": max_steps},
                     decoded_images=ev.decoded, seconds=time.perf_counter() - t0, final_latents=z,
                     continuous_losses=[torch.tensor(c) for c in curves])


# --- our improvement: greedy coordinate search with decoded candidates ----------------------------

class _Greedy:
    """Proposer of :func:`greedy_coordinate`.

    At the ``positions`` grid positions whose best first-order gain ``g_p . (c_j - c_cur)`` is
    largest, the ``candidates`` codes with the largest predicted gain are decoded and scored for
    real. The best single change and the combination of the best change at every improving
    position are both scored; the lower one is taken. When nothing improves, the neighbourhood
    doubles (more positions and codes) and the pair tries again; it stalls only when the widest
    neighbourhood has no improving change.
    """

    def __init__(self, model, ev: _Evaluator, n_pairs: int, positions: int, candidates: int, max_width: int) -> None:
        self.model, self.ev = model, ev
        self.positions, self.candidates, self.max_width = positions, candidates, max_width
        self.level = torch.zeros(n_pairs, dtype=torch.long)

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        n, dim, h, w = grads.shape
        hw = h * w
        cb = self.model.codebook.detach()
        k = cb.shape[0]
        g = grads.permute(0, 2, 3, 1).reshape(n, hw, dim)
        flat_idx = idx.reshape(n, hw)
        gain = g @ cb.t() - (g * cb[flat_idx]).sum(-1, keepdim=True)  # predicted loss change (n, hw, k)
        gain.scatter_(2, flat_idx[..., None], math.inf)
        new_idx = idx.clone()
        status = torch.full((n,), MOVED, dtype=torch.long, device=idx.device)
        levels = self.level[rows.cpu()]
        for lv in levels.unique().tolist():
            sel = (levels == lv).nonzero().squeeze(1).to(idx.device)
            p = min(hw, self.positions << lv)
            c = min(k - 1, self.candidates << lv, max(1, self.max_width // p))
            widest = p == hw and c == min(k - 1, max(1, self.max_width // p))
            pos = gain[sel].amin(-1).topk(p, dim=1, largest=False).indices                  # (s, p)
            codes = torch.gather(gain[sel], 1, pos[..., None].expand(-1, -1, k)).topk(c, dim=2, largest=False).indices
            s = sel.numel()
            cand = flat_idx[sel][:, None, None, :].expand(s, p, c, hw).clone()
            cand.scatter_(3, pos[:, :, None, None].expand(s, p, c, 1), codes[..., None])
            cl = self.ev.losses(cand.view(s, p * c, h, w), rows[sel]).view(s, p, c)
            best_l, best_c = cl.min(2)                                                        # per position
            better = best_l < values[sel][:, None]
            single = best_l.argmin(1)
            choice = torch.gather(cand, 1, single[:, None, None, None].expand(-1, 1, c, hw))[:, 0]
            choice = torch.gather(choice, 1, best_c.gather(1, single[:, None])[..., None].expand(-1, 1, hw))[:, 0]
            choice_l = best_l.gather(1, single[:, None])[:, 0]
            combo = flat_idx[sel].clone()
            chosen_codes = torch.gather(codes, 2, best_c[..., None])[..., 0]                  # (s, p)
            combo.scatter_(1, pos, torch.where(better, chosen_codes, torch.gather(combo, 1, pos)))
            multi = better.sum(1) >= 2
            if bool(multi.any()):
                ml = self.ev.losses(combo[multi].view(-1, 1, h, w), rows[sel][multi])[:, 0]
                use = torch.zeros(s, dtype=torch.bool, device=idx.device)
                use[multi] = ml < choice_l[multi]
                choice = torch.where(use[:, None], combo, choice)
            improved = better.any(1)
            new_idx[sel] = torch.where(improved[:, None], choice, flat_idx[sel]).view(s, h, w)
            status[sel] = torch.where(improved, MOVED, STALLED if widest else RETRY)
            lv_next = torch.where(improved, 0, lv + 1).cpu()
            self.level[rows[sel].cpu()] = lv_next
        raw = torch.ones(n, dtype=torch.long, device=idx.device)
        return new_idx, raw, status


def greedy_coordinate(model, z_start: torch.Tensor, loss: LossFn, *, positions: int = 4, candidates: int = 4,
                      max_width: int = 512, max_unique: int = 200, progress: bool = False) -> SearchTrace:
    """Our improved discrete search: greedy coordinate descent on decoded candidates.

    Each round takes the gradient at the current codes (as Algorithm 2 does) only to *rank*
    changes, then decodes ``positions * candidates`` single-position changes and keeps the one
    that truly lowers the loss most, or the combination of the best change at every improving
    position when that is lower still. The loss strictly decreases, so no grid is ever revisited
    and no loop can end the search; when no candidate improves, the neighbourhood doubles
    (up to ``max_width`` candidates per pair and round) before the pair is declared ``"stalled"``.

    Args:
        positions, candidates: the neighbourhood scored per round, both >= 1.
        max_width: most candidates decoded per pair and round when widening, >= positions * candidates.
        max_unique: most distinct grids (accepted moves + 1) per pair, >= 1.

    Returns:
        :class:`SearchTrace` with method ``"greedy"``; ``raw_steps`` counts the rounds (widenings
        included) each accepted move took.
    """
    _check_positive("positions", positions, integer=True, minimum=1)
    _check_positive("candidates", candidates, integer=True, minimum=1)
    _check_positive("max_unique", max_unique, integer=True, minimum=1)
    _check_positive("max_width", max_width, integer=True, minimum=positions * candidates)
    _check_start(model, z_start)
    t0 = time.perf_counter()
    n_pairs = z_start.shape[0]
    ev = _Evaluator(model, loss, n_pairs)
    proposer = _Greedy(model, ev, n_pairs, positions, candidates, max_width)
    h, w = z_start.shape[-2:]
    max_levels = int(math.log2(max(h * w, model.codebook.shape[0]))) + 2
    rec = drive(model, z_start, loss, proposer, ev, max_unique=max_unique, max_rounds=max_unique * max_levels,
                stop_on_revisit=False, progress=progress, desc="greedy")
    return rec.trace(method="greedy", params={"positions": positions, "candidates": candidates,
                                                "max_width": max_width, "max_unique": max_unique},
                     decoded_images=ev.decoded, seconds=time.perf_counter() - t0)


# --- our improvement: straight-through search over per-position code logits ------------------------

class _RelaxedStraightThrough:
    """Proposer of :func:`relaxed_straight_through`.

    Each position holds logits over the k codes; the grid is their argmax. The forward pass uses
    the hard codes (so every loss is the true loss of a grid), the backward pass goes through the
    softmax: with ``g`` the gradient at the codes, ``dL/dp_j = g . c_j`` and
    ``dL/dlogit = p * (dL/dp - sum(p * dL/dp)) / tau``. Adam steps the logits; while the argmax
    does not change the same gradient is reused (no decoder call), at most ``lam`` times.
    """

    def __init__(self, model, z_start: torch.Tensor, lr: float, tau: float, init_scale: float, lam: int) -> None:
        self.cb = model.codebook.detach().float()
        self.lr, self.tau, self.lam = lr, tau, lam
        n, dim, h, w = z_start.shape
        e = z_start.detach().float().permute(0, 2, 3, 1).reshape(n, h * w, dim)
        dist = e.pow(2).sum(-1, keepdim=True) - 2 * e @ self.cb.t() + self.cb.pow(2).sum(1)
        self.logits = -init_scale * dist / dist.std().clamp_min(1e-12)  # argmax = nearest code
        self.m1 = torch.zeros_like(self.logits)
        self.m2 = torch.zeros_like(self.logits)
        self.t = torch.zeros(n, device=self.logits.device)

    def start(self, shape) -> torch.Tensor:
        return self.logits.argmax(-1).view(shape)

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        n, dim, h, w = grads.shape
        everyone = n == self.logits.shape[0]  # all pairs active: work on the state in place
        g = grads.float().permute(0, 2, 3, 1).reshape(n, h * w, dim)
        gp = g @ self.cb.t()                                              # dL/dp (n, hw, k)
        lg, m1, m2, t = ((self.logits, self.m1, self.m2, self.t) if everyone else
                         (self.logits[rows], self.m1[rows], self.m2[rows], self.t[rows]))
        p = torch.softmax(lg / self.tau, -1)
        grad = gp.sub_((p * gp).sum(-1, keepdim=True)).mul_(p).div_(self.tau)
        flat_idx = idx.reshape(n, h * w)
        steps = torch.zeros(n, dtype=torch.long, device=idx.device)
        sel = torch.arange(n, device=idx.device)
        new = flat_idx.clone()
        while sel.numel() and int(steps[sel[0]]) < self.lam:
            whole = sel.numel() == n
            lg_s, m1_s, m2_s, g_s = (lg, m1, m2, grad) if whole else (lg[sel], m1[sel], m2[sel], grad[sel])
            t[sel] += 1
            m1_s.mul_(0.9).add_(g_s, alpha=0.1)
            m2_s.mul_(0.999).addcmul_(g_s, g_s, value=0.001)
            c1 = (1 - 0.9 ** t[sel])[:, None, None]
            c2 = (1 - 0.999 ** t[sel])[:, None, None]
            lg_s.sub_((m1_s / c1).div_((m2_s / c2).sqrt_().add_(1e-8)).mul_(self.lr))
            if not whole:
                lg[sel], m1[sel], m2[sel] = lg_s, m1_s, m2_s
            steps[sel] += 1
            arg = lg_s.argmax(-1)
            new[sel] = arg
            sel = sel[(arg == flat_idx[sel]).all(1)]                      # argmax unchanged: repeat
        if not everyone:
            self.logits[rows], self.m1[rows], self.m2[rows], self.t[rows] = lg, m1, m2, t
        status = torch.full((n,), MOVED, dtype=torch.long, device=idx.device)
        status[sel] = STALLED
        return new.view(n, h, w), steps, status


def relaxed_straight_through(model, z_start: torch.Tensor, loss: LossFn, *, lr: float = 0.1, tau: float = 1.0,
                             init_scale: float = 3.0, lam: int = 100, max_steps: int = 200,
                             max_unique: int = 500, progress: bool = False) -> SearchTrace:
    """Our improved search: straight-through gradients on per-position code logits, with Adam.

    Algorithm 2 moves a point in latent space and reads off its nearest codes; here every
    position instead holds a score (logit) for each of the k codes, initialised so that the
    start grid is ``nearest(z_start)``, and the grid is the argmax. The loss is always that of the
    decoded hard grid; its gradient reaches the logits through a softmax of temperature ``tau``
    (the straight-through softmax of Gumbel-softmax training, without noise), and Adam's momentum
    carries the search through grids it has visited before, so a revisit does not end it. It
    stops after ``max_steps`` decoder rounds or ``max_unique`` distinct grids (``"budget"``), or
    when ``lam`` repeats of one gradient change no argmax (``"stalled"``). Report
    :attr:`SearchTrace.best_losses`: the search visits worse grids on its way.

    Args:
        lr: Adam step size on the logits, > 0.
        tau: softmax temperature, > 0.
        init_scale: how peaked the initial logits are (negative squared distances to the
            codes divided by their standard deviation, times this), > 0.
        lam: most repeats of one gradient, >= 1.
        max_steps: decoder rounds per pair, >= 1.
        max_unique: most distinct grids per pair, >= 1.

    Returns:
        :class:`SearchTrace` with method ``"improved"``.
    """
    for name, value in (("lr", lr), ("tau", tau), ("init_scale", init_scale)):
        _check_positive(name, value)
    _check_positive("lam", lam, integer=True, minimum=1)
    _check_positive("max_steps", max_steps, integer=True, minimum=1)
    _check_positive("max_unique", max_unique, integer=True, minimum=1)
    _check_start(model, z_start)
    if getattr(model, "codebook", None) is None:
        raise ValueError("relaxed_straight_through needs a model with a codebook (k, D)")
    t0 = time.perf_counter()
    ev = _Evaluator(model, loss, z_start.shape[0])
    proposer = _RelaxedStraightThrough(model, z_start, float(lr), float(tau), float(init_scale), lam)
    start = proposer.start((z_start.shape[0],) + tuple(z_start.shape[-2:]))
    rec = drive(model, z_start, loss, proposer, ev, max_unique=max_unique, max_rounds=max_steps,
                stop_on_revisit=False, progress=progress, desc="improved", start=start)
    return rec.trace(method="improved", params={"lr": lr, "tau": tau, "init_scale": init_scale, "lam": lam,
                                                "max_steps": max_steps, "max_unique": max_unique},
                     decoded_images=ev.decoded, seconds=time.perf_counter() - t0)


# --- helpers for the chapter ------------------------------------------------------------------

@torch.no_grad()
def quantized_losses(model, loss: LossFn, indices: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """``(B,)`` loss of ``decode(lookup(indices))`` for index grids ``(B, h, w)``, pair i with grid i."""
    n = indices.shape[0]
    out = []
    for s in range(0, n, batch):
        rows = torch.arange(s, min(n, s + batch), device=indices.device)
        out.append(pair_losses(loss, model.decode(model.lookup(indices[rows])), rows, n))
    return torch.cat(out)


@torch.no_grad()
def reference_losses(model, targets: torch.Tensor, loss: LossFn | None = None) -> torch.Tensor:
    """``(B,)`` the loss of each target's own encoder code: ``L(decode(nearest(encode(t))))``.

    The best a search could hope for under an MSE-to-target loss, the yardstick for
    "relative final loss" (1.0 = as good as encoding the target itself).
    """
    loss = loss if loss is not None else mse_to(targets)
    return quantized_losses(model, loss, model.nearest(model.encode(targets)))
