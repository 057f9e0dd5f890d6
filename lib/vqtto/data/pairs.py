"""Random source-target pairs of test images, the same for every chapter that searches.

The paper (section 5.2) runs its searches on 200 random source-target pairs of test images.
:func:`test_pairs` draws them reproducibly: with the same ``seed`` every chapter gets the same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import data as data_mod


@dataclass(frozen=True)
class Pairs:
    """Source and target images with their indices in the test split.

    Attributes:
        sources: ``(B, C, H, W)`` in [0, 1].
        targets: ``(B, C, H, W)`` in [0, 1].
        source_ids: ``(B,)`` int64 indices into the test split.
        target_ids: ``(B,)`` int64, never equal to ``source_ids`` at the same position.
    """

    sources: torch.Tensor
    targets: torch.Tensor
    source_ids: torch.Tensor
    target_ids: torch.Tensor

    def __len__(self) -> int:
        return self.sources.shape[0]


def test_pairs(dataset: str = "fashion-mnist", n: int = 200, seed: int = 0, pool: int | None = None) -> Pairs:
    """``n`` random (source, target) pairs of distinct test images of ``dataset``.

    Args:
        n: number of pairs (>= 1).
        seed: the draw is a function of ``seed`` alone.
        pool: draw from the first ``pool`` test images only (None: the whole test split).
    """
    if n < 1:
        raise ValueError(f"n (number of pairs) must be >= 1, got {n!r}")
    test = data_mod.load(dataset, "test", limit=pool)
    if len(test) < 2:
        raise ValueError(f"need at least 2 test images to form pairs, got {len(test)}")
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(len(test), (n,), generator=gen)
    shift = torch.randint(1, len(test), (n,), generator=gen)
    tgt = (src + shift) % len(test)  # never the source itself
    return Pairs(test.images[src], test.images[tgt], src, tgt)
