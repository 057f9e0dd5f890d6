"""Constrained tasks: what the user has of an image, the loss that says how well an answer fits it,
and the measures of an answer against the truth the search never sees.

Three tasks, all batched over B images ``(B, C, H, W)`` in [0, 1]:

- :func:`inpainting`: a hidden region (:data:`MASKS`: the bottom half, a centred square, a random
  half of the pixels); the loss is the MSE on the visible pixels, and only the token positions
  whose receptive field touches a hidden pixel may change (:func:`touching_positions`).
- :func:`super_resolution`: the image average-pooled by a factor (PULSE's task); the loss is the
  MSE after pooling the answer the same way.
- :func:`editing`: the source with a local change (:data:`EDITS`: a patch pasted from another
  image, a square brightened or erased); the loss is the MSE to the edited image, and a search
  stays within Hamming distance ``radius`` of the source's code.

Each returns a :class:`Task`; :func:`measure` scores answers (decoded images, and their grids
under a prior) with the task's measures. Every argument is checked before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .constraints import PairLoss, downscale, downscaled_mse_to, masked_mse_to, mse_to

__all__ = ["EDITS", "KINDS", "MASKS", "Task", "editing", "hidden_mask", "inpainting", "measure", "psnr",
           "receptive_fields", "super_resolution", "touching_positions", "upsample"]

KINDS = ("inpainting", "super-resolution", "editing")
MASKS = ("bottom-half", "centre-square", "random-half")
EDITS = ("paste", "brighten", "erase")


@dataclass
class Task:
    """One constrained task on B images.

    Attributes:
        kind: one of :data:`KINDS`.
        name: e.g. ``"inpainting, bottom-half"``, ``"super-resolution x4"``, ``"editing, paste"``.
        truth: ``(B, C, H, W)`` the full images the answers are measured against (never searched).
        observed: ``(B, C, H, W)`` what the user has, as an image: the masked image (hidden
            pixels 0), the bilinear upsampling of the low-resolution image, the edited image.
        loss: the :class:`~vqtto.constraints.PairLoss` a search minimises (it sees only the evidence).
        measured: ``(B, 1, H, W)`` bool, the pixels the answer is measured on (inpainting: the
            hidden ones; otherwise all).
        movable: ``(B, h, w)`` bool token positions a search may change, or None (all).
        factor: the pooling factor (super-resolution), else None.
        radius: the Hamming radius around the source's code (editing), else None.
        start_grids: ``(B, h, w)`` int64 codes a search starts from (editing: the source's), or None.
    """

    kind: str
    name: str
    truth: torch.Tensor
    observed: torch.Tensor
    loss: PairLoss
    measured: torch.Tensor
    movable: torch.Tensor | None = None
    factor: int | None = None
    radius: int | None = None
    start_grids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.truth.shape[0]

    def residual(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,)`` how far answers ``(B, C, H, W)`` are from the evidence: the task loss itself."""
        with torch.no_grad():
            return self.loss(images.to(self.truth.device)).cpu()


def _check_images(name: str, images) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (B >= 1, C, H, W) image tensor, got {shape}")


# --- inpainting ----------------------------------------------------------------------------------

def hidden_mask(mask: str | torch.Tensor, b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """``(b, 1, h, w)`` bool, True where a pixel is hidden, for a mask name of :data:`MASKS` or a
    bool tensor ``(h, w)`` / ``(b, 1, h, w)`` (True = hidden). ``"random-half"`` draws each
    image's pixels with ``seed``.

    Raises:
        ValueError: an unknown name, a tensor of the wrong shape or dtype, or a mask that hides
            every pixel or none of some image.
    """
    if isinstance(mask, str):
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {list(MASKS)} or a bool tensor, got {mask!r}")
        m = torch.zeros(b, 1, h, w, dtype=torch.bool)
        if mask == "bottom-half":
            m[..., h // 2:, :] = True
        elif mask == "centre-square":
            m[..., h // 4:h - h // 4, w // 4:w - w // 4] = True
        else:
            gen = torch.Generator().manual_seed(seed)
            m = torch.rand(b, 1, h, w, generator=gen) < 0.5
    else:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape not in ((h, w), (b, 1, h, w)):
            raise ValueError(f"mask must be one of {list(MASKS)} or a bool tensor (H, W) = {(h, w)} or (B, 1, H, W) = "
                             f"{(b, 1, h, w)}, got {getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
        m = mask.expand(b, 1, h, w).clone().cpu()
    hidden = m.flatten(1).sum(1)
    if bool((hidden == 0).any()):
        raise ValueError("mask hides no pixel of some image: there is nothing to inpaint")
    if bool((hidden == h * w).any()):
        raise ValueError("mask hides every pixel of some image: there is no evidence to inpaint from")
    return m


@torch.no_grad()
def receptive_fields(model, grid: tuple[int, int], share: float = 0.1, draws: int = 32, seed: int = 0) -> torch.Tensor:
    """``(h*w, H, W)`` bool: the pixels each token position's code noticeably changes in ``model.decode``.

    Measured, not derived: each position's code is replaced by random codes in ``draws`` random
    grids; a pixel belongs to the position's field where the mean absolute change there is at
    least ``share`` of the largest mean change that position causes. ``share`` -> 0 gives the
    structural receptive field, which for a decoder of stacked convolutions covers nearly the
    whole image (any pixel mask would touch every position); 0.1 keeps the pixels a code mainly
    draws.

    Args:
        share: in [0, 1).
    """
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share < 1:
        raise ValueError(f"share must be a number in [0, 1), got {share!r}")
    h, w = grid
    gen = torch.Generator().manual_seed(seed)
    k = model.codebook.shape[0]
    dev = model.codebook.device
    base_idx = torch.randint(k, (draws, h, w), generator=gen).to(dev)
    base = model.decode_indices(base_idx) if hasattr(model, "decode_indices") else model.decode(model.lookup(base_idx))
    out = []
    for p in range(h * w):
        idx = base_idx.clone()
        idx.view(draws, -1)[:, p] = torch.randint(k, (draws,), generator=gen).to(dev)
        change = (model.decode(model.lookup(idx)) - base).abs().mean((0, 1))  # (H, W)
        out.append((change >= share * change.max().clamp_min(1e-12)) & (change > 1e-6))
    return torch.stack(out).cpu()


def touching_positions(fields: torch.Tensor, hidden: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` bool: the token positions whose receptive field ``fields`` ``(h*w, H, W)``
    touches a hidden pixel of ``hidden`` ``(B, 1, H, W)``."""
    touch = (fields.flatten(1).float() @ hidden.flatten(1).float().T.to(fields.device)) > 0  # (h*w, B)
    return touch.T.reshape(hidden.shape[0], *grid).to(hidden.device)


def inpainting(truth: torch.Tensor, mask: str | torch.Tensor, model, *, seed: int = 0,
               fields: torch.Tensor | None = None) -> Task:
    """Inpainting: the user has ``truth`` ``(B, C, H, W)`` with the pixels of ``mask`` hidden.

    Args:
        mask: one of :data:`MASKS` or a bool tensor (True = hidden), see :func:`hidden_mask`.
        model: the VQ-VAE (for its grid and receptive fields).
        seed: for ``"random-half"``.
        fields: :func:`receptive_fields` of ``model`` if already measured.
    """
    _check_images("truth", truth)
    b, _, hh, ww = truth.shape
    hidden = hidden_mask(mask, b, hh, ww, seed).to(truth.device)
    with torch.no_grad():
        grid = tuple(model.nearest(model.encode(truth[:1])).shape[1:])
    fields = receptive_fields(model, grid) if fields is None else fields
    observed = truth.masked_fill(hidden, 0.0)
    name = mask if isinstance(mask, str) else "custom mask"
    return Task("inpainting", f"inpainting, {name}", truth, observed, masked_mse_to(truth, (~hidden).float()),
                hidden, movable=touching_positions(fields, hidden, grid))


# --- super-resolution ----------------------------------------------------------------------------

def upsample(low: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling of ``(B, C, h, w)`` by ``factor`` -> ``(B, C, h*factor, w*factor)``, clamped to [0, 1]."""
    return F.interpolate(low, scale_factor=factor, mode="bilinear", align_corners=False).clamp(0, 1)


def super_resolution(truth: torch.Tensor, factor: int) -> Task:
    """Super-resolution: the user has ``truth`` ``(B, C, H, W)`` average-pooled by ``factor``.

    Args:
        factor: an integer >= 2 that divides H and W.
    """
    _check_images("truth", truth)
    hh, ww = truth.shape[-2:]
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2 or hh % factor or ww % factor:
        divisors = [f for f in range(2, min(hh, ww) + 1) if hh % f == 0 and ww % f == 0]
        raise ValueError(f"factor must be an integer >= 2 that divides the image size {hh}x{ww} (one of {divisors}), "
                         f"got {factor!r}")
    low = downscale(truth, factor)
    measured = torch.ones(truth.shape[0], 1, hh, ww, dtype=torch.bool, device=truth.device)
    return Task("super-resolution", f"super-resolution x{factor}", truth, upsample(low, factor),
                downscaled_mse_to(low, factor), measured, factor=factor)


# --- editing -------------------------------------------------------------------------------------

def _edit(sources: torch.Tensor, donors: torch.Tensor, edit: str, size: int, seed: int) -> torch.Tensor:
    """The sources with one ``size`` x ``size`` square per image changed by ``edit`` (placed at random)."""
    b, _, hh, ww = sources.shape
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(hh // 4, hh - hh // 4 - size + 1, (b,), generator=gen).tolist()
    cols = torch.randint(ww // 4, ww - ww // 4 - size + 1, (b,), generator=gen).tolist()
    out = sources.clone()
    for i, (r, c) in enumerate(zip(rows, cols)):
        sq = (i, slice(None), slice(r, r + size), slice(c, c + size))
        if edit == "paste":
            out[sq] = donors[sq]
        elif edit == "brighten":
            out[sq] = (out[sq] + 0.5).clamp(0, 1)
        else:
            out[sq] = 0.0
    return out


def editing(sources: torch.Tensor, source_grids: torch.Tensor, edit: str, radius: int, *,
            donors: torch.Tensor | None = None, size: int = 8, seed: int = 0) -> Task:
    """Editing within a ball: the target is the source with a local change; answers stay within
    Hamming distance ``radius`` of the source's code ``source_grids`` ``(B, h, w)``.

    Args:
        sources: ``(B, C, H, W)`` images.
        edit: one of :data:`EDITS`.
        radius: an integer >= 0 (0: the source's code is the only answer).
        donors: ``(B, C, H, W)`` the images patches are pasted from (``"paste"`` only).
        size: side of the changed square in pixels, 1 <= size <= H/2.
        seed: where the squares go.
    """
    _check_images("sources", sources)
    if edit not in EDITS:
        raise ValueError(f"edit must be one of {list(EDITS)}, got {edit!r}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be an integer >= 0 (a Hamming distance in token positions), got {radius!r}")
    hh, ww = sources.shape[-2:]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(hh, ww) // 2:
        raise ValueError(f"size must be an integer in [1, {min(hh, ww) // 2}], got {size!r}")
    if edit == "paste" and (donors is None or donors.shape != sources.shape):
        raise ValueError(f"edit 'paste' needs donors of the sources' shape {tuple(sources.shape)}")
    if source_grids.dim() != 3 or source_grids.shape[0] != sources.shape[0]:
        raise ValueError(f"source_grids must be (B, h, w) with B={sources.shape[0]}, got {tuple(source_grids.shape)}")
    target = _edit(sources, donors, edit, size, seed)
    measured = torch.ones(sources.shape[0], 1, hh, ww, dtype=torch.bool, device=sources.device)
    return Task("editing", f"editing, {edit}", target, target, mse_to(target), measured, radius=radius,
                start_grids=source_grids)


# --- measures ------------------------------------------------------------------------------------

def psnr(mse: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of per-image MSEs ``(B,)`` for pixels in [0, 1]."""
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def measure(task: Task, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The task's measures of answers ``images`` ``(B, C, H, W)``, each ``(B,)`` on CPU.

    Returns ``mse`` (on the measured pixels: the hidden ones for inpainting, else all), ``psnr``
    of that MSE, and ``residual`` (the task loss: visible-pixel MSE, downscale residual, MSE to
    the edited image).
    """
    if images.shape != task.truth.shape:
        raise ValueError(f"answers must be {tuple(task.truth.shape)} like the task's images, got {tuple(images.shape)}")
    with torch.no_grad():
        x = images.to(task.truth.device)
        m = task.measured.expand_as(x).float()
        mse = ((x - task.truth).pow(2) * m).flatten(1).sum(1) / m.flatten(1).sum(1)
    mse = mse.cpu()
    return {"mse": mse, "psnr": psnr(mse), "residual": task.residual(images)}

