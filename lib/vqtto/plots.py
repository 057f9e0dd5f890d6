"""Figures shared across chapters. One colour per method, the same in every chapter."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

# The same method has the same colour everywhere in the book.
METHOD_COLORS = {
    "source": "#7f7f7f",
    "target": "#000000",
    "alg1": "#9467bd",          # Algorithm 1, continuous gradient descent
    "alg2": "#1f77b4",          # Algorithm 2, straight-through search
    "alg3": "#ff7f0e",          # Algorithm 3, single-position straight-through search
    "improved": "#2ca02c",      # our searches that go past the paper
    "prior": "#d62728",         # PixelCNN prior
    "flow": "#8c564b",          # flows
    "uniform": "#bcbd22",       # uniform-random baseline
    "exact": "#17becf",         # exact optimum (brute force)
    "local_search": "#e377c2",  # classical 1-flip local search (hardness chapter)
}

# Colours for a sweep over codebook sizes, from large k (dark) to small k (light).
def k_colors(ks: Sequence[int]) -> dict[int, tuple]:
    cmap = plt.get_cmap("viridis")
    order = sorted(ks, reverse=True)
    return {k: cmap(i / max(1, len(order) - 1) * 0.85) for i, k in enumerate(order)}


def loss_curves(histories: Mapping[str, object], title: str = "VQ-VAE training", colors=None):
    """Train (dashed) and test (solid) reconstruction and quantisation losses against epochs.

    Args:
        histories: label -> :class:`vqtto.training.History`.
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


def image_rows(rows: Mapping[str, torch.Tensor], title: str | None = None, size: float = 1.1):
    """A grid of images, one labelled row per entry of ``rows`` (each ``(B, C, H, W)``)."""
    n_rows = len(rows)
    n_cols = max(t.shape[0] for t in rows.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows + 0.4), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        arr = to_numpy_images(imgs)
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < arr.shape[0]:
                ax.imshow(arr[c], cmap="gray", vmin=0, vmax=1)
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
