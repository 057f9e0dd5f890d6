"""Index-grid data sets: a data set's images encoded by a trained VQ-VAE (paper section 5.3).

A prior over the latents needs examples of them: every image of a split is encoded and
quantised to its nearest-code index grid ``(h, w)``. The grids, with the images' class labels,
form a :class:`CodeSet`; :func:`index_dataset` caches it (in the safe cache of
:mod:`vqtto.cache`) under the VQ-VAE's full config, so a retrained VQ-VAE never meets stale codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ..progress import progress_bar

from .. import cache as artifacts
from .. import data as data_mod
from ..device import pick_device


@dataclass(frozen=True)
class CodeSet:
    """Index grids of one split.

    Attributes:
        indices: ``(N, h, w)`` int64 in ``[0, k)``.
        labels: ``(N,)`` int64 class labels of the images they encode.
        k: codebook size.
        name: the data set's name.
    """

    indices: torch.Tensor
    labels: torch.Tensor
    k: int
    name: str

    def __len__(self) -> int:
        return self.indices.shape[0]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(h, w)`` of one grid."""
        return tuple(self.indices.shape[1:])


@torch.no_grad()
def encode(model, images: torch.Tensor, device: torch.device, batch_size: int = 1000,
           progress: bool = False) -> torch.Tensor:
    """Images ``(N, C, H, W)`` in [0, 1] -> nearest-code index grids ``(N, h, w)`` int64 (on CPU)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    was_training = model.training
    model.eval()
    out = []
    for start in progress_bar(range(0, images.shape[0], batch_size), desc="encoding", disable=not progress):
        x = images[start:start + batch_size].to(device)
        out.append(model.nearest(model.encode(x)).cpu())
    model.train(was_training)
    return torch.cat(out)


def codes_config(vqvae_config: dict, split: str, limit: int | None) -> dict:
    """The cache key's config of a split's codes: the VQ-VAE's full config, the split, the limit."""
    if split not in data_mod.SPLITS:
        raise ValueError(f"split must be one of {list(data_mod.SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit!r}")
    return {"vqvae": vqvae_config, "split": split, "limit": limit}


def index_dataset(trained, split: str = "train", limit: int | None = None,
                  device: torch.device | str = "auto", progress: bool = True) -> CodeSet:
    """The index grids of ``split`` under a :class:`vqtto.models.TrainedVQVAE`, from the cache.

    Args:
        trained: the VQ-VAE (its ``config`` keys the cache).
        split: ``"train"`` or ``"test"``.
        limit: encode only the first ``limit`` images (None: all).
    """
    device = pick_device(device) if isinstance(device, str) else device
    config = codes_config(trained.config, split, limit)
    dataset = trained.config["dataset"]
    k = trained.model.cfg.k

    def build() -> dict:
        images = data_mod.load(dataset, split, limit=limit)
        idx = encode(trained.model, images.images, device, progress=progress)
        small = torch.int16 if k <= torch.iinfo(torch.int16).max else torch.int32
        return {"indices": idx.to(small), "labels": images.labels}

    payload = artifacts.load_or_build("codes", config, build)
    return CodeSet(indices=payload["indices"].long(), labels=payload["labels"].long(), k=k, name=dataset)


def uniform_grids(n: int, k: int, shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``n`` index grids ``(n, h, w)`` int64 with every index uniform in ``[0, k)`` (the flat prior)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(k, (n, *shape), generator=gen)
