"""The gated PixelCNN: a prior over VQ-VAE index grids (paper section 5.3; van den Oord et al. 2016).

The prior factorises the probability of an index grid ``z`` ``(h, w)`` in raster order,

    p(z) = prod_i p(z_i | z_<i),

with one categorical distribution over the ``k`` codes per position. Two stacks of causal
convolutions compute the conditionals in one pass:

- the *vertical* stack sees every position in the rows above (its features at ``(r, c)`` depend
  only on rows ``< r``, over a window that widens with depth);
- the *horizontal* stack sees the positions to the left in the current row, and receives the
  vertical features at each layer.

Together they cover every earlier position, without the "blind spot" (the up-right triangle)
of a PixelCNN made of stacked masked 3x3 convolutions. Each layer is gated,
``tanh(a) * sigmoid(b)``, and can be conditioned on a class label (a learned bias per class).
Causality is implemented by shifting and padding small kernels rather than by masking large
ones, so no weight is wasted; ``tests/test_pixelcnn.py`` proves the autoregressive property.

Shapes: index grids ``(B, h, w)`` int64 in ``[0, k)``; log-probabilities ``(B, k, h, w)``;
per-grid log-likelihoods ``(B,)`` in nats.

Losses are reported in *nats per latent position* (the mean cross-entropy; ``log k`` for a
uniform prior) and in *bits per image* (the whole grid: ``nats * h * w / ln 2``).

This module holds the model and its metrics; :func:`vqtto.models.training.train_prior` trains it and
:func:`vqtto.models.prior` gives a trained one from the cache.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

LN2 = math.log(2.0)


#: Positions per block when the head's logits are reduced to one code's log-probability: a (512, k)
#: block stays in the cache, where one (N, k) pass over a search's candidates does not (measured 1.2x
#: faster on the quick k=512 prior, the same numbers).
HEAD_BLOCK = 512


def bits_per_image(nats_per_position: float, h: int, w: int) -> float:
    """Mean nats per latent position -> bits for a whole ``(h, w)`` grid."""
    return nats_per_position * h * w / LN2


@dataclass(frozen=True)
class PixelCNNConfig:
    """Architecture of a gated PixelCNN over ``(height, width)`` grids of ``k`` categories.

    Attributes:
        k: number of categories (the VQ-VAE's codebook size).
        height, width: the grid's shape (7 x 7 for Fashion-MNIST codes).
        channels: feature channels of both stacks.
        n_layers: gated layers after the first (causal) convolution.
        kernel_size: odd width of the convolutions; each layer widens the vertical stack's view
            by ``kernel_size // 2`` columns on each side and one row up.
        n_classes: 0 for an unconditional prior, else the number of class labels it conditions on.
    """

    k: int = 512
    height: int = 7
    width: int = 7
    channels: int = 64
    n_layers: int = 5
    kernel_size: int = 3
    n_classes: int = 0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"k (number of categories) must be >= 2, got {self.k!r}")
        for name in ("height", "width", "channels", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 3, got {self.kernel_size!r}")
        if self.n_classes < 0:
            raise ValueError(f"n_classes must be >= 0 (0: unconditional), got {self.n_classes!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RowCache:
    """What :meth:`GatedPixelCNN.log_prob_from` reuses of ``n`` base grids.

    Attributes:
        base: ``(n, h, w)`` int64, the base grids.
        v_inputs: per gated layer, the vertical stack's input ``(n, C, h, w)`` (its features at row
            ``r`` see only rows ``< r``, so they hold for every grid that agrees with the base above ``r``).
        row_lp: ``(n, h)`` the base's log-probability of each row.
    """

    base: torch.Tensor
    v_inputs: list
    row_lp: torch.Tensor


class CausalConv2d(nn.Module):
    """A convolution that only looks up (``"vertical"``) or left (``"horizontal"``).

    ``"vertical"``: output ``(r, c)`` reads rows ``r - kernel_size // 2 .. r`` (``include_center``)
    or ``r - kernel_size // 2 - 1 .. r - 1`` (not), columns ``c +- kernel_size // 2``.
    ``"horizontal"``: output ``(r, c)`` reads row ``r``, columns ``c - kernel_size // 2 .. c``
    (``include_center``) or ``.. c - 1`` (not).

    The kernel only has the allowed taps; the input is padded on the top/left and, without the
    centre, shifted by one position (the last row/column of the padded output is dropped).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, direction: str, include_center: bool) -> None:
        super().__init__()
        if direction not in ("vertical", "horizontal"):
            raise ValueError(f"direction must be 'vertical' or 'horizontal', got {direction!r}")
        half = kernel_size // 2
        self.direction, self.include_center = direction, include_center
        if direction == "vertical":
            kernel = (half + 1, kernel_size)
            # left, right, top, bottom
            self.pad = (half, half, half + (0 if include_center else 1), 0)
        else:
            kernel = (1, half + 1)
            self.pad = (half + (0 if include_center else 1), 0, 0, 0)
        self.conv = nn.Conv2d(c_in, c_out, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.conv(F.pad(x, self.pad))
        return out[..., :h, :w]  # drops the extra row/column of the shifted (no-centre) case

    @property
    def reach(self) -> int:
        """Rows above an output row that it reads (0 for the horizontal direction)."""
        return self.pad[2] if self.direction == "vertical" else 0

    def tail(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """The last ``rows`` output rows ``(B, C_out, rows, w)`` from the input rows they read.

        ``x`` ``(B, C_in, n, w)`` holds the input's last ``n`` rows, ``rows <= n <= rows + reach``
        (fewer than ``rows + reach`` only where the grid's top is reached: zeros stand in above it,
        as in :meth:`forward`). The same numbers as ``forward(full)[..., -rows:, :]`` up to rounding,
        at the cost of ``rows`` output rows.
        """
        if self.direction == "horizontal":
            return self(x[..., -rows:, :])
        top = max(0, rows + self.reach - x.shape[-2])
        out = self.conv(F.pad(x, (self.pad[0], self.pad[1], top, 0)))
        return out[..., :rows, :]


def _gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer: vertical and horizontal stacks, vertical -> horizontal link, residual."""

    def __init__(self, channels: int, kernel_size: int, n_classes: int) -> None:
        super().__init__()
        c = channels
        self.v_conv = CausalConv2d(c, 2 * c, kernel_size, "vertical", include_center=True)
        self.h_conv = CausalConv2d(c, 2 * c, kernel_size, "horizontal", include_center=True)
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)
        self.cond = nn.Embedding(n_classes, 4 * c) if n_classes else None

    def forward(self, v: torch.Tensor, h: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        v_pre = self.v_conv(v)
        h_pre = self.h_conv(h) + self.v_to_h(v_pre)
        if self.cond is not None:
            bias_v, bias_h = self.cond(labels)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + bias_v, h_pre + bias_h
        return _gate(v_pre), h + self.h_out(_gate(h_pre))


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN over index grids ``(B, h, w)`` with ``k`` categories.

    >>> prior = GatedPixelCNN(PixelCNNConfig(k=8, height=4, width=4, channels=8, n_layers=2))
    >>> z = torch.randint(8, (3, 4, 4))
    >>> prior.log_probs_all(z).shape, prior.log_prob(z).shape, prior.sample(2).shape
    (torch.Size([3, 8, 4, 4]), torch.Size([3]), torch.Size([2, 4, 4]))
    """

    def __init__(self, cfg: PixelCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, ks = cfg.channels, cfg.kernel_size
        self.embed = nn.Parameter(torch.randn(cfg.k, c) * 0.1)  # (k, C): index -> feature vector
        self.v_in = CausalConv2d(c, c, ks, "vertical", include_center=False)
        self.h_in = CausalConv2d(c, c, ks, "horizontal", include_center=False)
        self.layers = nn.ModuleList(GatedLayer(c, ks, cfg.n_classes) for _ in range(cfg.n_layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, cfg.k, 1))

    # --- inputs -------------------------------------------------------------------------------

    def _check_labels(self, labels: torch.Tensor | None, batch: int) -> None:
        if self.cfg.n_classes and labels is None:
            raise ValueError(f"this prior is class-conditional (n_classes={self.cfg.n_classes}); pass labels (B,) int64")
        if not self.cfg.n_classes and labels is not None:
            raise ValueError("this prior is unconditional (n_classes=0); labels must be None")
        if labels is not None and (labels.shape != (batch,) or labels.dtype != torch.long):
            raise ValueError(f"labels must be ({batch},) int64, got {tuple(labels.shape)} {labels.dtype}")

    def _features(self, z: torch.Tensor) -> torch.Tensor:
        """Indices ``(B, h, w)`` int64, or probability vectors ``(B, k, h, w)`` -> ``(B, C, h, w)``."""
        cfg = self.cfg
        if z.dtype == torch.long:
            if z.dim() != 3 or tuple(z.shape[1:]) != (cfg.height, cfg.width):
                raise ValueError(f"indices must be (B, {cfg.height}, {cfg.width}) int64, got {tuple(z.shape)}")
            if z.numel() and (int(z.min()) < 0 or int(z.max()) >= cfg.k):
                raise ValueError(f"indices must lie in [0, {cfg.k}), got values in [{int(z.min())}, {int(z.max())}]")
            return self.embed[z].permute(0, 3, 1, 2)
        if z.is_floating_point():
            if z.dim() != 4 or tuple(z.shape[1:]) != (cfg.k, cfg.height, cfg.width):
                raise ValueError(f"soft grids must be (B, {cfg.k}, {cfg.height}, {cfg.width}) float, got {tuple(z.shape)}")
            return torch.einsum("bkhw,kc->bchw", z, self.embed)
        raise ValueError(f"grids must be int64 indices or float probability vectors, got dtype {z.dtype}")

    # --- the model ----------------------------------------------------------------------------

    def logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised log-probabilities ``(B, k, h, w)`` of every code at every position.

        Args:
            z: ``(B, h, w)`` int64 indices, or ``(B, k, h, w)`` float probability vectors (one-hot
                or relaxed, e.g. a softmax; gradients flow to them).
            labels: ``(B,)`` int64 class labels for a class-conditional prior, else None.

        The output at ``(r, c)`` depends only on positions before ``(r, c)`` in raster order.
        """
        return self.head(self._stacks(z, labels))

    def _stacks(self, z: torch.Tensor, labels: torch.Tensor | None, rows: int | None = None) -> torch.Tensor:
        """The gated stacks' output ``(B, C, rows, w)`` before the head, for the first ``rows`` rows (None:
        all). Every layer is causal in rows, so the rows kept come out as in the whole grid."""
        self._check_labels(labels, z.shape[0])
        x = self._features(z)
        if rows is not None:
            x = x[:, :, :rows]
        v, h = self.v_in(x), self.h_in(x)
        for layer in self.layers:
            v, h = layer(v, h, labels)
        return h

    def _head_rows(self, h: torch.Tensor) -> torch.Tensor:
        """The 1x1 head on features ``(n, C)`` as matrix products -> logits ``(n, k)``."""
        first, last = self.head[1], self.head[3]
        h = F.relu(F.linear(F.relu(h), first.weight.flatten(1), first.bias))
        return F.linear(h, last.weight.flatten(1), last.bias)

    def _code_log_probs(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``log p(code | features)`` ``(n,)`` from features ``(n, C)`` and codes ``(n,)`` int64, the head's
        logits made and reduced :data:`HEAD_BLOCK` positions at a time (the same numbers as one pass)."""
        out = h.new_empty(h.shape[0])
        for s in range(0, h.shape[0], HEAD_BLOCK):
            logits = self._head_rows(h[s:s + HEAD_BLOCK])
            out[s:s + HEAD_BLOCK] = logits.gather(1, codes[s:s + HEAD_BLOCK, None]).squeeze(1) - logits.logsumexp(1)
        return out

    def logits_at(self, z: torch.Tensor, row: int, col: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, k)`` of the code at ``(row, col)`` given the codes before it: the same numbers as
        ``logits(z)[:, :, row, col]`` up to rounding, at the cost of the rows up to ``row`` and one head."""
        h = self._stacks(z, labels, rows=row + 1)
        return self._head_rows(h[:, :, row, col])

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(z, labels)

    def row_context(self, z: torch.Tensor, row: int) -> list[torch.Tensor]:
        """What the horizontal stack of ``row`` receives from above, for grids ``(B, h, w)`` whose rows
        before ``row`` are final: each gated layer's vertical pre-activation there ``(B, 2C, 1, w)``.
        It does not depend on the codes of ``row`` itself, so one call serves the whole row
        (:meth:`logits_in_row`). Unconditional priors only."""
        if self.cfg.n_classes:
            raise ValueError("row_context needs an unconditional prior (n_classes=0)")
        v = self.v_in(self._features(z)[:, :, :row + 1])
        out = []
        for layer in self.layers:
            v_pre = layer.v_conv(v)
            out.append(v_pre[:, :, row:row + 1])
            v = _gate(v_pre)
        return out

    def logits_in_row(self, z: torch.Tensor, row: int, col: int, context: list[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, k)`` at ``(row, col)``, the same as :meth:`logits_at` up to rounding, from
        :meth:`row_context` of ``row`` and the codes left of ``col`` (the horizontal stack of one row)."""
        x = self.embed[z[:, row:row + 1, :col + 1]].permute(0, 3, 1, 2)
        h = self.h_in(x)
        for layer, v_pre in zip(self.layers, context):
            v_pre = v_pre[..., :col + 1]
            h = h + layer.h_out(_gate(layer.h_conv(h) + layer.v_to_h(v_pre)))
        return self._head_rows(h[:, :, 0, col])

    def log_probs_all(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z_i = j | z_<i)`` for all ``k`` values ``j`` at every position ``i``: ``(B, k, h, w)``.

        One pass; differentiable in the network's weights and, for float ``z`` ``(B, k, h, w)``,
        in ``z`` itself, so a search can add a prior term to its objective.
        """
        return F.log_softmax(self.logits(z, labels), dim=1)

    def log_prob(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z)`` in nats of each grid ``(B, h, w)`` int64 -> ``(B,)``."""
        h = self._stacks(indices, labels)
        lp = self._code_log_probs(h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]), indices.reshape(-1))
        return lp.view(indices.shape[0], -1).sum(1)

    # --- grids that share their first rows with a base grid (a search's candidate moves) -----------

    def row_cache(self, base: torch.Tensor) -> "RowCache":
        """What :meth:`log_prob_from` reuses of base grids ``(n, h, w)`` int64: the vertical stack's
        input to every layer and the log-probability of each row (one full pass)."""
        vs, h = self._stacks_keeping_inputs(base, "row_cache")
        return RowCache(base, vs, self._row_log_probs(h, base))

    def _stacks_keeping_inputs(self, base: torch.Tensor, caller: str) -> tuple[list, torch.Tensor]:
        """One pass of both stacks over base grids ``(n, h, w)``: the vertical stack's input to every gated
        layer ``[(n, C, h, w)]`` and the horizontal stack's output ``(n, C, h, w)`` (unconditional priors)."""
        if self.cfg.n_classes:
            raise ValueError(f"{caller} needs an unconditional prior (n_classes=0)")
        x = self._features(base)
        v, h = self.v_in(x), self.h_in(x)
        vs = []
        for layer in self.layers:
            vs.append(v)
            v, h = layer(v, h, None)
        return vs, h

    def table_and_cache(self, base: torch.Tensor) -> tuple[torch.Tensor, "RowCache"]:
        """One pass over base grids ``(n, h, w)`` int64 -> ``log p(z_i = j | z_<i)`` for every code ``j``
        at every position ``i`` in raster order, ``(n, h*w, k)`` (:meth:`log_probs_all` transposed), and
        the :class:`RowCache` of :meth:`row_cache`, its row log-probabilities read off that table: what
        a search needs of its current grids (their energy, their first-order table, their candidates'
        shared rows) from a single pass. The head runs position by position, so the normalisation over
        the codes is along contiguous memory."""
        vs, h = self._stacks_keeping_inputs(base, "table_and_cache")
        n, c, rows, w = h.shape
        table = F.log_softmax(self._head_rows(h.permute(0, 2, 3, 1).reshape(-1, c)), dim=1).view(n, rows * w, -1)
        row_lp = table.gather(2, base.reshape(n, -1, 1)).view(n, rows, w).sum(2)
        return table, RowCache(base, vs, row_lp)

    def _row_log_probs(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Stack outputs ``(n, C, r, w)`` and codes ``(n, r, w)`` -> ``(n, r)`` log-probability of each row."""
        n, c, rows, w = h.shape
        return self._code_log_probs(h.permute(0, 2, 3, 1).reshape(-1, c), z.reshape(-1)).view(n, rows, w).sum(2)

    def log_prob_from(self, grids: torch.Tensor, cache: "RowCache", which: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` ``(N,)`` of grids ``(N, h, w)`` that differ from their base grid ``cache.base[which]``
        (``which`` ``(N,)`` int64) only from some row on: the same numbers as :meth:`log_prob` up to rounding.

        A grid whose first changed row is ``r`` takes the base's rows above ``r`` from ``cache`` (the
        conditionals there cannot see rows ``>= r``) and recomputes both stacks for rows ``r..h-1``
        only, with the base's vertical features as the rows above them: a candidate that moves a code in
        row ``r`` costs ``(h - r) / h`` of a full pass.
        """
        base = cache.base[which]
        height = grids.shape[1]
        changed = (grids != base).any(2)                                            # (N, h)
        first = torch.where(changed.any(1), changed.float().argmax(1), torch.full_like(which, height))
        above = cache.row_lp[which].cumsum(1)                                       # (N, h)
        out = torch.where(first > 0, above.gather(1, (first - 1).clamp_min(0)[:, None])[:, 0], 0.0)
        for r in first.unique().tolist():
            if r >= height:
                continue
            sel = (first == r).nonzero().squeeze(1)
            out[sel] = out[sel] + self._tail_log_prob(grids[sel], cache, which[sel], r)
        return out

    def _tail_log_prob(self, z: torch.Tensor, cache: "RowCache", which: torch.Tensor, r: int) -> torch.Tensor:
        """``(m,)`` log-probability of rows ``r..h-1`` of grids ``z`` ``(m, h, w)`` whose rows above ``r`` are their base's."""
        rows = z.shape[1] - r
        x = self._features(z)
        v = self.v_in.tail(x[:, :, max(0, r - self.v_in.reach):], rows)
        h = self.h_in.tail(x, rows)
        for layer, v_base in zip(self.layers, cache.v_inputs):
            reach = layer.v_conv.reach
            v_pre = layer.v_conv.tail(torch.cat([v_base[which, :, max(0, r - reach):r], v], 2), rows)
            h_pre = layer.h_conv.tail(h, rows) + layer.v_to_h(v_pre)
            v, h = _gate(v_pre), h + layer.h_out(_gate(h_pre))
        return self._row_log_probs(h, z[:, r:]).sum(1)

    def loss(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy in nats per latent position over a batch ``(B, h, w)`` (a scalar)."""
        return F.cross_entropy(self.logits(indices, labels), indices)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` grids ``(n, h, w)`` int64 position by position in raster order.

        Args:
            temperature: > 0; the logits are divided by it (1: the model, < 1: sharper).
            labels: ``(n,)`` int64 for a class-conditional prior.
            generator: a CPU ``torch.Generator`` for reproducible draws.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n (number of samples) must be an int >= 1, got {n!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        device = self.embed.device
        cfg = self.cfg
        if labels is not None:
            labels = labels.to(device)
        z = torch.zeros(n, cfg.height, cfg.width, dtype=torch.long, device=device)
        for r in range(cfg.height):
            for c in range(cfg.width):
                logits = self.logits_at(z, r, c, labels) / temperature
                probs = torch.softmax(logits.double(), dim=1).cpu()
                z[:, r, c] = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        return z


# --- metrics over many grids --------------------------------------------------------------------

def _batches(indices: torch.Tensor, labels: torch.Tensor | None, device: torch.device, batch_size: int):
    """Grids ``(N, h, w)`` and labels ``(N,)`` or None -> ``(z, y)`` batches on ``device``."""
    for start in range(0, indices.shape[0], batch_size):
        z = indices[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device) if labels is not None else None
        yield z, y


@torch.no_grad()
def evaluate(model: GatedPixelCNN, indices: torch.Tensor, labels: torch.Tensor | None, device: torch.device,
             batch_size: int = 1000) -> dict[str, float]:
    """Mean test negative log-likelihood of ``indices`` ``(N, h, w)``.

    ``labels`` ``(N,)`` are used only by a class-conditional prior. Returns ``nats_per_position``,
    ``bits_per_image`` and, for comparison, ``uniform_nats`` (``log k``, the uniform prior's loss).
    """
    was_training = model.training
    model.eval()
    total = 0.0
    for z, y in _batches(indices, labels if model.cfg.n_classes else None, device, batch_size):
        total += float(model.loss(z, y)) * z.shape[0]
    model.train(was_training)
    nats = total / indices.shape[0]
    cfg = model.cfg
    return {"nats_per_position": nats, "bits_per_image": bits_per_image(nats, cfg.height, cfg.width),
            "uniform_nats": math.log(cfg.k)}


@torch.no_grad()
def score(model: GatedPixelCNN, indices: torch.Tensor, labels: torch.Tensor | None = None,
          device: torch.device | None = None, batch_size: int = 1000) -> torch.Tensor:
    """``log p(z)`` in nats of many grids ``(N, h, w)`` int64, in batches -> ``(N,)`` on CPU."""
    batches = _batches(indices, labels, device or model.embed.device, batch_size)
    return torch.cat([model.log_prob(z, y).cpu() for z, y in batches])


@torch.no_grad()
def nll_per_position(model: GatedPixelCNN, indices: torch.Tensor, labels: torch.Tensor | None = None,
                     device: torch.device | None = None, batch_size: int = 1000) -> torch.Tensor:
    """Mean ``-log p(z_i | z_<i)`` in nats at each position over grids ``(N, h, w)`` -> ``(h, w)``."""
    total = torch.zeros(indices.shape[1:], dtype=torch.float64)
    for z, y in _batches(indices, labels, device or model.embed.device, batch_size):
        lp = model.log_probs_all(z, y).gather(1, z[:, None]).squeeze(1)
        total -= lp.double().sum(0).cpu()
    return (total / indices.shape[0]).float()
