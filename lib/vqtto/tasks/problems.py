"""What the user has of B images, and the loss that says how well an answer fits it.

A :class:`Task` holds only what a user can give: an observed image, the loss on it, which token
positions may change, a Hamming radius, the codes (or images) a search starts from. Build one
from what you have:

- :func:`reconstruct`: reach target images (the paper's task), from source images or their codes;
- :func:`inpaint`: an image with hidden pixels (``hidden``: True = hidden, the one mask
  convention of the library); the loss is the MSE on the visible pixels, and only the token
  positions whose receptive field touches a hidden pixel may change (:func:`touching_positions`);
- :func:`super_resolve`: a low-resolution image; the loss is the MSE after average-pooling the
  answer by ``factor`` (PULSE's task);
- :func:`edit`: an edited image and the codes of the original; answers stay within Hamming
  distance ``radius`` of those codes.

:func:`vqtto.tasks.solve` answers any of them. The chapters pose tasks from known images with a
:class:`Benchmark`, which keeps the truth apart from the task (no search ever sees it):
:func:`inpainting` (:data:`MASKS`), :func:`super_resolution`, :func:`editing` (:data:`EDITS`), and
:func:`measure` scores answers against the truth. Every argument is checked before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..search.losses import PairLoss, downscale, downscaled_mse_to, masked_mse_to, mse_to

__all__ = ["CONSTRUCTORS", "EDITS", "KINDS", "MASKS", "Benchmark", "Task", "edit", "editing", "hidden_mask", "inpaint", "inpainting",
           "measure", "psnr", "receptive_fields", "reconstruct", "super_resolution", "super_resolve",
           "touching_positions", "upsample"]

KINDS = ("reconstruction", "inpainting", "super-resolution", "editing")
#: The constructor that poses each kind from what the user has: the command line's ``--task`` names.
CONSTRUCTORS = {"reconstruction": "reconstruct", "inpainting": "inpaint", "super-resolution": "super_resolve",
                "editing": "edit"}
MASKS = ("bottom-half", "centre-square", "random-half")
EDITS = ("paste", "brighten", "erase")


@dataclass
class Task:
    """What the user has of B images: the evidence, its loss, and the limits of the search.

    Attributes:
        kind: one of :data:`KINDS`.
        name: e.g. ``"inpainting, bottom-half"``, ``"super-resolution x4"``, ``"editing, paste"``.
        observed: ``(B, C, H, W)`` what the user has, as an image at the model's resolution: the
            target, the masked image (hidden pixels 0), the bilinear upsampling of the
            low-resolution image, the edited image.
        loss: the :class:`~vqtto.search.losses.PairLoss` a search minimises.
        hidden: ``(B, 1, H, W)`` bool, the hidden pixels (inpainting), else None.
        movable: ``(B, h, w)`` bool token positions a search may change, or None (all).
        factor: the pooling factor (super-resolution), else None.
        radius: the Hamming radius around ``start`` (editing), else None.
        start: ``(B, h, w)`` int64 codes a search starts from (editing: the original's), or None.
        source: ``(B, C, H, W)`` images whose encoding is the start (reconstruction from a
            source), or None; with neither ``start`` nor ``source`` a search starts from the
            encoder's answer on ``observed``.
    """

    kind: str
    name: str
    observed: torch.Tensor
    loss: PairLoss
    hidden: torch.Tensor | None = None
    movable: torch.Tensor | None = None
    factor: int | None = None
    radius: int | None = None
    start: torch.Tensor | None = None
    source: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.observed.shape[0]

    def residual(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,)`` how far answers ``(B, C, H, W)`` are from the evidence: the task loss itself (CPU)."""
        with torch.no_grad():
            return self.loss(images.to(self.observed.device)).cpu()

    def rows(self, rows: torch.Tensor) -> "Task":
        """The same task on the images ``rows`` (``(n,)`` int64) only (a share of a distributed run)."""
        pick = lambda t: None if t is None else t[rows.to(t.device)]  # noqa: E731
        return replace(self, observed=pick(self.observed), loss=self.loss.rows(rows), hidden=pick(self.hidden),
                       movable=pick(self.movable), start=pick(self.start), source=pick(self.source))

    def with_radius(self, radius: int) -> "Task":
        """The same task with another Hamming radius (>= 0) around its start."""
        _check_radius(radius)
        if self.start is None:
            raise ValueError("radius needs start codes to measure the distance from (the task has none)")
        return replace(self, radius=int(radius))


@dataclass
class Benchmark:
    """A :class:`Task` posed from known images, with the truth kept apart for measuring.

    The chapters build these; a search is handed ``.task`` (or the benchmark itself, which reads
    like its task: ``bench.loss``, ``bench.movable``...), and :func:`measure` compares answers with
    ``truth`` on the ``measured`` pixels.

    Attributes:
        task: what the user would have.
        truth: ``(B, C, H, W)`` the full images the answers are measured against (never searched).
        measured: ``(B, 1, H, W)`` bool, the pixels the answer is measured on (inpainting: the
            hidden ones; otherwise all).
    """

    task: Task
    truth: torch.Tensor
    measured: torch.Tensor

    def __getattr__(self, name: str):
        if name in ("task", "truth", "measured") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.task, name)

    def __len__(self) -> int:
        return len(self.task)

    @property
    def start_grids(self) -> torch.Tensor | None:
        """The task's start codes (editing: the source's)."""
        return self.task.start

    def with_radius(self, radius: int) -> "Benchmark":
        """The same benchmark with another Hamming radius around the task's start."""
        return replace(self, task=self.task.with_radius(radius))


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
    base = model.decode(model.lookup(base_idx))
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


def _grid_of(model, images: torch.Tensor) -> tuple[int, int]:
    """``(h, w)`` of the model's index grids for images like ``images`` ``(B, C, H, W)``."""
    with torch.no_grad():
        return tuple(model.nearest(model.encode(images[:1].to(model.codebook.device))).shape[1:])


def inpaint(observed: torch.Tensor, hidden: torch.Tensor, model, *, fields: torch.Tensor | None = None,
            share: float = 0.1, name: str = "inpainting, custom mask") -> Task:
    """Inpainting as the user has it: images ``observed`` ``(B, C, H, W)`` whose ``hidden`` pixels are unknown.

    Args:
        hidden: bool ``(H, W)`` or ``(B, 1, H, W)``, True where a pixel is hidden (what the user
            lacks); it must hide some but not all pixels of every image.
        model: the VQ-VAE (for its grid and the receptive fields of its token positions).
        fields: :func:`receptive_fields` of ``model`` if already measured (else measured with ``share``).
    """
    _check_images("observed", observed)
    b, _, hh, ww = observed.shape
    if not isinstance(hidden, torch.Tensor):
        raise ValueError(f"hidden must be a bool tensor (H, W) or (B, 1, H, W), got {type(hidden).__name__}")
    hidden = hidden_mask(hidden, b, hh, ww).to(observed.device)
    grid = _grid_of(model, observed)
    fields = receptive_fields(model, grid, share) if fields is None else fields
    return Task("inpainting", name, observed.masked_fill(hidden, 0.0), masked_mse_to(observed, (~hidden).float()),
                hidden=hidden, movable=touching_positions(fields, hidden, grid))


def upsample(low: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling of ``(B, C, h, w)`` by ``factor`` -> ``(B, C, h*factor, w*factor)``, clamped to [0, 1]."""
    return F.interpolate(low, scale_factor=factor, mode="bilinear", align_corners=False).clamp(0, 1)


def _check_factor(factor, hh: int, ww: int) -> None:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2 or hh % factor or ww % factor:
        divisors = [f for f in range(2, min(hh, ww) + 1) if hh % f == 0 and ww % f == 0]
        raise ValueError(f"factor must be an integer >= 2 that divides the image size {hh}x{ww} (one of {divisors}), "
                         f"got {factor!r}")


def super_resolve(low: torch.Tensor, factor: int) -> Task:
    """Super-resolution as the user has it: low-resolution images ``low`` ``(B, C, h, w)`` to enlarge
    ``factor`` (an integer >= 2) times; answers are ``(B, C, h*factor, w*factor)``."""
    _check_images("low", low)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an integer >= 2, got {factor!r}")
    return Task("super-resolution", f"super-resolution x{factor}", upsample(low, factor),
                downscaled_mse_to(low, factor), factor=factor)


def _check_radius(radius) -> None:
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be an integer >= 0 (a Hamming distance in token positions), got {radius!r}")


def edit(edited: torch.Tensor, start: torch.Tensor, radius: int, name: str = "editing") -> Task:
    """Editing as the user has it: the edited images ``edited`` ``(B, C, H, W)``, and the codes
    ``start`` ``(B, h, w)`` int64 of the originals that answers may differ from in at most
    ``radius`` (an integer >= 0) positions."""
    _check_images("edited", edited)
    _check_radius(radius)
    if not isinstance(start, torch.Tensor) or start.dim() != 3 or start.shape[0] != edited.shape[0]:
        raise ValueError(f"start must be (B, h, w) codes with B={edited.shape[0]}, got "
                         f"{tuple(getattr(start, 'shape', ()))}")
    return Task("editing", name, edited, mse_to(edited), radius=int(radius), start=start)


_edit_task = edit  # editing() has an argument of that name


def reconstruct(targets: torch.Tensor, sources: torch.Tensor | None = None) -> Task:
    """The paper's task: reach images ``targets`` ``(B, C, H, W)``, starting from the encoding of
    ``sources`` (same shape; None: of the targets themselves)."""
    _check_images("targets", targets)
    if sources is not None:
        _check_images("sources", sources)
        if sources.shape != targets.shape:
            raise ValueError(f"sources must have the targets' shape {tuple(targets.shape)}, got {tuple(sources.shape)}")
    return Task("reconstruction", "reconstruction", targets, mse_to(targets), source=sources)


# --- benchmarks: tasks posed from known images ---------------------------------------------------

def _all_pixels(truth: torch.Tensor) -> torch.Tensor:
    return torch.ones(truth.shape[0], 1, *truth.shape[-2:], dtype=torch.bool, device=truth.device)


def inpainting(truth: torch.Tensor, mask: str | torch.Tensor, model, *, seed: int = 0,
               fields: torch.Tensor | None = None) -> Benchmark:
    """Inpainting posed from ``truth`` ``(B, C, H, W)`` with the pixels of ``mask`` hidden.

    Args:
        mask: one of :data:`MASKS` or a bool tensor (True = hidden), see :func:`hidden_mask`.
        model: the VQ-VAE (for its grid and receptive fields).
        seed: for ``"random-half"``.
        fields: :func:`receptive_fields` of ``model`` if already measured.
    """
    _check_images("truth", truth)
    b, _, hh, ww = truth.shape
    hidden = hidden_mask(mask, b, hh, ww, seed).to(truth.device)
    name = mask if isinstance(mask, str) else "custom mask"
    return Benchmark(inpaint(truth, hidden, model, fields=fields, name=f"inpainting, {name}"), truth, hidden)


def super_resolution(truth: torch.Tensor, factor: int) -> Benchmark:
    """Super-resolution posed from ``truth`` ``(B, C, H, W)`` average-pooled by ``factor`` (an
    integer >= 2 that divides H and W)."""
    _check_images("truth", truth)
    _check_factor(factor, *truth.shape[-2:])
    return Benchmark(super_resolve(downscale(truth, factor), factor), truth, _all_pixels(truth))


def _edit(sources: torch.Tensor, donors: torch.Tensor, kind: str, size: int, seed: int) -> torch.Tensor:
    """The sources with one ``size`` x ``size`` square per image changed by ``kind`` (placed at random)."""
    b, _, hh, ww = sources.shape
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(hh // 4, hh - hh // 4 - size + 1, (b,), generator=gen).tolist()
    cols = torch.randint(ww // 4, ww - ww // 4 - size + 1, (b,), generator=gen).tolist()
    out = sources.clone()
    for i, (r, c) in enumerate(zip(rows, cols)):
        sq = (i, slice(None), slice(r, r + size), slice(c, c + size))
        if kind == "paste":
            out[sq] = donors[sq]
        elif kind == "brighten":
            out[sq] = (out[sq] + 0.5).clamp(0, 1)
        else:
            out[sq] = 0.0
    return out


def editing(sources: torch.Tensor, source_grids: torch.Tensor, edit: str, radius: int, *,
            donors: torch.Tensor | None = None, size: int = 8, seed: int = 0) -> Benchmark:
    """Editing posed from ``sources`` ``(B, C, H, W)``: the target is the source with a local change;
    answers stay within Hamming distance ``radius`` of the source's code ``source_grids`` ``(B, h, w)``.

    Args:
        edit: one of :data:`EDITS`.
        radius: an integer >= 0 (0: the source's code is the only answer).
        donors: ``(B, C, H, W)`` the images patches are pasted from (``"paste"`` only).
        size: side of the changed square in pixels, 1 <= size <= H/2.
        seed: where the squares go.
    """
    _check_images("sources", sources)
    if edit not in EDITS:
        raise ValueError(f"edit must be one of {list(EDITS)}, got {edit!r}")
    _check_radius(radius)
    hh, ww = sources.shape[-2:]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(hh, ww) // 2:
        raise ValueError(f"size must be an integer in [1, {min(hh, ww) // 2}], got {size!r}")
    if edit == "paste" and (donors is None or donors.shape != sources.shape):
        raise ValueError(f"edit 'paste' needs donors of the sources' shape {tuple(sources.shape)}")
    if source_grids.dim() != 3 or source_grids.shape[0] != sources.shape[0]:
        raise ValueError(f"source_grids must be (B, h, w) with B={sources.shape[0]}, got {tuple(source_grids.shape)}")
    target = _edit(sources, donors, edit, size, seed)
    return Benchmark(_edit_task(target, source_grids, radius, name=f"editing, {edit}"), target, _all_pixels(target))


# --- measures ------------------------------------------------------------------------------------

def psnr(mse: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of per-image MSEs ``(B,)`` for pixels in [0, 1]."""
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def measure(task: Benchmark, images: torch.Tensor) -> dict[str, torch.Tensor]:
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

