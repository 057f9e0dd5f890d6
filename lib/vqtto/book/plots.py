"""Figures shared across chapters, and the one name and colour of every method (:data:`METHODS`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.patches import ConnectionPatch
import numpy as np
import torch

@dataclass(frozen=True)
class Method:
    """How one method (or reference) is named and drawn everywhere in the book."""

    label: str
    color: str


# One id, one label and one colour per method, in every chapter and on the results page.
# Search traces carry the id in ``SearchTrace.method``.
METHODS: dict[str, Method] = {
    "source": Method("source grid (no search)", "#7f7f7f"),
    "target": Method("target", "#000000"),
    "own-code": Method("target's own code", "#000000"),
    "alg1": Method("Algorithm 1 (continuous)", "#9467bd"),
    "alg2": Method("Algorithm 2 (straight-through)", "#1f77b4"),
    "alg3": Method("Algorithm 3 (one position)", "#ff7f0e"),
    "top-m": Method("top-m straight-through", "#ffbb78"),
    "greedy": Method("greedy coordinate search", "#e377c2"),
    "relaxed": Method("relaxed straight-through search", "#2ca02c"),
    "relaxed-annealed": Method("relaxed search, annealed with Gumbel noise (token-opt schedule)", "#98df8a"),
    "local": Method("exact local search (screened single moves)", "#bcbd22"),
    "relaxed-local": Method("relaxed search, then exact local search", "#006d2c"),
    "surrogate": Method("surrogate screening (few free positions)", "#7b4173"),
    "alg2-restarts": Method("Algorithm 2 with random restarts", "#1f77b4"),
    "alg2-tabu": Method("Algorithm 2 with a tabu memory", "#aec7e8"),
    "alg2-adaptive": Method("Algorithm 2 with an adaptive step", "#6baed6"),
    "gwg": Method("Gibbs-with-gradients (annealed)", "#ff9896"),
    "dmala": Method("discrete Langevin, DMALA (annealed)", "#9edae5"),
    "dula": Method("discrete Langevin, DULA", "#c7c7c7"),
    "dmala-codebook": Method("DMALA, codebook distance (annealed)", "#5254a3"),
    "dula-codebook": Method("DULA, codebook distance", "#8ca252"),
    "pas-sa": Method("path-auxiliary proposals + annealing", "#e7ba52"),
    "screened-sa": Method("gradient-screened rescoring + annealing", "#ad494a"),
    "polish": Method("gradient-screened polish", "#843c39"),
    "pulse": Method("PULSE through the trained flow", "#8c564b"),
    "pulse-untrained": Method("PULSE through the untrained flow (control)", "#c49c94"),
    "paper-flow": Method("the paper's flow in R^k", "#8c564b"),
    "simplex-flow": Method("flow onto the simplex", "#17a589"),
    "prior": Method("PixelCNN prior", "#d62728"),
    "uniform": Method("uniform random", "#bcbd22"),
    "exact": Method("exact optimum", "#17becf"),
    "local-search": Method("1-flip local search", "#7b4173"),
    "branch-and-bound": Method("branch and bound", "#393b79"),
    # the constrained tasks' answers and anchors
    "prior-resample": Method("PixelCNN completions, best of S (prior only)", "#ff7f0e"),
    "screened-sa-prior": Method("screened annealing from the draws, with the prior", "#ad494a"),
    "relaxed-draws": Method("the default search from the prior's draws, without the prior", "#98df8a"),
    "relaxed-prior": Method("the default search from the prior's draws, with the prior", "#d62728"),
    "chain-mean": Method("mean of the relaxed chains' answers (with the prior)", "#9467bd"),
    "exemplar-prior": Method("the default search from the nearest training images' codes, with the prior", "#2ca02c"),
    "exemplar-mean": Method("mean of the exemplar chains' answers (with the prior)", "#1f77b4"),
    "masked-prior": Method("the default search from the masked prior's completions, with the PixelCNN", "#8c564b"),
    "masked-mean": Method("mean of the masked prior's completions (its posterior mean)", "#e377c2"),
    "encoder-observed": Method("encoder on what the user has", "#7f7f7f"),
    "nearest-neighbour": Method("nearest training image", "#bcbd22"),
    "nn-mean": Method("mean of the 10 nearest training images", "#dbdb8d"),
    "bilinear": Method("bilinear upsampling", "#17becf"),
}


def _method(method: str) -> Method:
    if method == "top" or (method[:3] == "top" and method[3:].isdigit()):  # the registry's "top"; its traces say "top4" for m = 4
        method = "top-m"
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHODS)}") from None


def method_color(method: str) -> str:
    """The colour of ``method`` (an id of :data:`METHODS`), the same in every figure."""
    return _method(method).color


def method_label(method: str) -> str:
    """The display name of ``method`` (an id of :data:`METHODS`)."""
    return _method(method).label


def loss_curves(histories: Mapping[str, object], title: str = "VQ-VAE training", colors=None):
    """Train (dashed) and test (solid) reconstruction and quantisation losses against epochs.

    Args:
        histories: label -> :class:`vqtto.models.training.History`.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    palette = colors or {label: f"C{i}" for i, label in enumerate(histories)}
    for label, h in histories.items():
        c = palette[label]
        axes[0].plot(h.epoch, h.train_recon, "--", color=c, alpha=0.7)
        axes[0].plot(h.epoch, h.test_recon, "-", color=c, label=label)
        axes[1].plot(h.epoch, h.train_quant, "--", color=c, alpha=0.7)
        axes[1].plot(h.epoch, h.test_quant, "-", color=c, label=label)
    for ax, name in zip(axes, ["reconstruction MSE (pixels in [0, 1])", "quantisation loss (codebook + β·commitment)"]):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(title="solid: test, dashed: train", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def to_numpy_images(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` in [0, 1] -> ``(B, H, W)`` or ``(B, H, W, 3)`` numpy for imshow."""
    arr = images.detach().float().clamp(0, 1).cpu().numpy()
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


def bare(ax) -> None:
    """Remove ticks and frame from an image panel."""
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def finish(fig, ax, xlabel: str, ylabel: str, title: str, *, legend: bool = True, legend_size: float = 8):
    """Label a one-panel figure (axes, title, grid, legend), lay it out and return it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    return fig


def image_rows(rows: Mapping[str, torch.Tensor], title: str | None = None, size: float = 1.1):
    """A grid of images, one labelled row per entry of ``rows`` (each ``(B, C, H, W)``)."""
    n_rows = len(rows)
    n_cols = max(t.shape[0] for t in rows.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows + 0.4), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        arr = to_numpy_images(imgs)
        for c in range(n_cols):
            bare(axes[r, c])
            if c < arr.shape[0]:
                axes[r, c].imshow(arr[c], cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def codebook_usage_curves(histories: Mapping[str, object], colors=None):
    """Codes used and perplexity of the test index grids against epochs, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    palette = colors or {label: f"C{i}" for i, label in enumerate(histories)}
    for label, h in histories.items():
        axes[0].plot(h.epoch, h.codes_used, color=palette[label], label=label)
        axes[1].plot(h.epoch, h.perplexity, color=palette[label], label=label)
    axes[0].set_ylabel("codes used on the test set")
    axes[1].set_ylabel("perplexity of the code histogram")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _columns(n: int, loop_to: int, max_cols: int) -> list[int]:
    """Which of ``n`` grids to draw: all if they fit, else evenly spaced plus the loop target."""
    if n <= max_cols:
        return list(range(n))
    cols = set(np.linspace(0, n - 1, max_cols - (1 if loop_to >= 0 else 0)).round().astype(int).tolist())
    if loop_to >= 0:
        cols.add(loop_to)
    return sorted(cols)


@torch.no_grad()
def search_traversal(model, trace, sources: torch.Tensor, targets: torch.Tensor,
                     rows: Sequence[int], max_cols: int = 12, title: str | None = None, wrap: int = 8):
    """The paper's Figure 4: per pair, the source, consecutive distinct reconstructions, the target.

    ``trace`` is a :class:`vqtto.search.SearchTrace`; ``sources``/``targets`` ``(B, C, H, W)`` on the
    model's device; ``rows`` the pairs to draw.

    Each reconstruction is labelled with its position in the traversal and its loss. When the
    search stopped on a loop, the grid it would have returned to is framed in red and a red arrow
    runs back to it from the last reconstruction. Long traversals are subsampled evenly. A pair's
    panels run on over lines of at most ``wrap`` panels, so that each stays large enough to read
    in the page's text column.
    """
    if wrap < 3:
        raise ValueError(f"search_traversal: wrap must be at least 3 panels per line, got {wrap}")
    ncol = max_cols + 2
    width = min(ncol, wrap)
    lines = -(-ncol // width)
    fig, axes = plt.subplots(len(rows) * lines, width, figsize=(1.3 * width, 1.6 * len(rows) * lines + 0.5),
                             squeeze=False)

    def panel(r: int, c: int):
        return axes[r * lines + c // width, c % width]

    device = sources.device
    for ax in axes.flat:
        bare(ax)
    for r, i in enumerate(rows):
        grids, losses, loop_to = trace.grids[i], trace.losses[i], trace.loop_to[i]
        cols = _columns(grids.shape[0], loop_to, max_cols)
        images = model.decode(model.lookup(grids[cols].to(device)))
        panels = [("source", sources[i:i + 1])] + [(f"#{t}  {losses[t]:.3f}", images[j:j + 1]) for j, t in enumerate(cols)]
        for c, (label, img) in enumerate(panels):
            panel(r, c).imshow(to_numpy_images(img.cpu())[0], cmap="gray", vmin=0, vmax=1)
            panel(r, c).set_title(label, fontsize=8)
        panel(r, ncol - 1).imshow(to_numpy_images(targets[i:i + 1].cpu())[0], cmap="gray", vmin=0, vmax=1)
        panel(r, ncol - 1).set_title("target", fontsize=8)
        panel(r, 0).set_ylabel(f"pair {i}\n{trace.stop_reason[i]}", rotation=0, ha="right", va="center", fontsize=8)
        if loop_to >= 0:
            back = panel(r, 1 + cols.index(loop_to))
            last = panel(r, len(cols))
            for s in back.spines.values():
                s.set_visible(True)
                s.set_color("red")
                s.set_linewidth(2)
            if back is not last:
                fig.add_artist(ConnectionPatch(xyA=(0.5, 0.02), coordsA=last.transAxes, xyB=(0.5, 0.02), coordsB=back.transAxes,
                                               arrowstyle="->", color="red", lw=1.3, connectionstyle="arc3,rad=0.35"))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
