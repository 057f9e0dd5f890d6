"""Adapters: models built on other VQ libraries, exposed as latent decoders for the searches.

:class:`VectorQuantizeAdapter` takes a model made of the user's own encoder and decoder around
the ``VectorQuantize`` layer of vector-quantize-pytorch and gives it the
:class:`~vqtto.latent.LatentAutoencoder` protocol (``codebook``, ``nearest``, ``lookup``,
``decode``, ``encode``), so every search of :mod:`vqtto.search` runs on it unchanged.

    vq = VectorQuantize(dim=64, codebook_size=512, accept_image_fmap=True)
    ...  # train decoder(vq(encoder(x))[0]) as usual
    model = VectorQuantizeAdapter(encoder, vq, decoder).eval()
    trace = search.straight_through(model, model.encode(sources), search.mse_to(targets))
"""

from __future__ import annotations

import torch
from torch import nn
from vector_quantize_pytorch import VectorQuantize

__all__ = ["VectorQuantizeAdapter"]


class VectorQuantizeAdapter(nn.Module):
    """``encoder``, a ``VectorQuantize`` layer and ``decoder`` as one latent autoencoder.

    The wrapped model is ``decoder(vq(encoder(images))[0])`` on feature maps: ``encoder`` maps
    images ``(B, C, H, W)`` to ``(B, dim, h, w)`` and ``decoder`` maps ``(B, dim, h, w)`` back to
    images, as with ``VectorQuantize(..., accept_image_fmap=True)``. The layer's own layout flags
    (``channel_last``, ``accept_image_fmap``) do not matter here: the adapter never calls the
    layer's forward, it reads the codebook and quantises by itself, exactly as the layer does in
    eval mode (Euclidean argmin, no sampling), and never updates the codebook.

    The latent space of the searches is the codebook's space, ``D = codebook_dim``:

    - ``codebook_dim`` unset (or equal to ``dim``): ``D = dim`` and the latents are the encoder's
      outputs;
    - ``codebook_dim != dim``: the layer quantises ``project_in(x)`` (a linear map, and a
      LayerNorm with ``layernorm_after_project_in``) and hands ``project_out(code)`` to the decoder.
      Then :meth:`encode` includes ``project_in`` and :meth:`decode` starts with ``project_out``,
      so ``decode(lookup(nearest(encode(x))))`` is still the model's reconstruction.

    Refused with a ValueError naming the option (each breaks the searches' Euclidean-codebook
    assumption, or has no single codebook): ``use_cosine_sim=True``, ``heads > 1``,
    ``affine_param=True``, ``vq_bridge``, ``accept_3d_fmap=True``, and ``kmeans_init=True`` before
    the layer has seen data. Anything that only changes training (EMA or learnable codebook,
    rotation trick, stochastic sampling, dead-code expiry, commitment losses) is fine.

    Call ``.eval()`` before searching if the encoder or decoder has dropout or batch norm.

    Args:
        encoder: images ``(B, C, H, W)`` -> ``(B, dim, h, w)``.
        vq: a trained ``vector_quantize_pytorch.VectorQuantize``.
        decoder: ``(B, dim, h, w)`` -> images ``(B, C, H, W)``.
    """

    def __init__(self, encoder: nn.Module, vq: VectorQuantize, decoder: nn.Module) -> None:
        super().__init__()
        if not isinstance(vq, VectorQuantize):
            raise TypeError(f"vq must be a vector_quantize_pytorch.VectorQuantize, got {type(vq).__name__}")
        _refuse_unsupported(vq)
        self.encoder, self.vq, self.decoder = encoder, vq, decoder

    @property
    def codebook(self) -> torch.Tensor:
        """``(k, D)`` the code vectors (the layer's own tensor, ``D = codebook_dim``)."""
        cb = self.vq.codebook
        return cb[0] if cb.dim() == 3 else cb  # separate_codebook_per_head with one head: (1, k, D)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> continuous latents ``(B, D, h, w)`` (after ``project_in``, if any)."""
        x = self.encoder(images)
        if x.dim() != 4 or x.shape[1] != self.vq.dim:
            raise ValueError(f"the encoder must return feature maps (B, dim={self.vq.dim}, h, w), got {tuple(x.shape)}")
        return _channels(self.vq.project_in, x) if self.vq.has_projections else x

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Continuous latents ``(B, D, h, w)`` -> Euclidean nearest-code indices ``(B, h, w)`` int64.

        The layer's own arithmetic: float32 squared distances ``|z|^2 + |c|^2 - 2 z.c``.
        """
        b, d, h, w = self._check_latents(z, "z").shape
        cb = self.codebook.detach().float()
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, d)
        dist = (flat.pow(2).sum(1)[:, None] + cb.pow(2).sum(1)[None]) + (flat @ cb.t()) * -2
        return dist.argmin(1).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Index grids ``(B, h, w)`` int64 -> code vectors ``(B, D, h, w)``."""
        if indices.dtype != torch.long:
            raise TypeError(f"indices must be int64, got {indices.dtype}")
        return self.codebook[indices].permute(0, 3, 1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, D, h, w)`` (codes or any continuous tensor) -> images, via ``project_out`` if any."""
        self._check_latents(codes, "codes")
        return self.decoder(_channels(self.vq.project_out, codes) if self.vq.has_projections else codes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``decode(lookup(nearest(encode(images))))`` ``(B, C, H, W)``."""
        return self.decode(self.lookup(self.nearest(self.encode(images))))

    def _check_latents(self, z: torch.Tensor, name: str) -> torch.Tensor:
        d = self.codebook.shape[1]
        if z.dim() != 4 or z.shape[1] != d:
            raise ValueError(f"{name} must have shape (B, D={d}, h, w), got {tuple(z.shape)}")
        return z


def _channels(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a channel-last ``layer`` (Linear, LayerNorm) to the channels of ``(B, C, h, w)``."""
    return layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _refuse_unsupported(vq: VectorQuantize) -> None:
    """Raise ValueError naming the first option of ``vq`` the adapter cannot represent faithfully."""
    book = vq._codebook  # the Codebook module of vector-quantize-pytorch 1.32 (pinned)
    refusals = [
        (vq.use_cosine_sim, "use_cosine_sim=True",
         "a cosine-similarity codebook picks codes by angle, but the searches step through the Euclidean "
         "Voronoi cells of the codebook"),
        (vq.heads != 1, f"heads={vq.heads}",
         "with several heads a position holds several codes, not one index"),
        (bool(getattr(book, "affine_param", False)), "affine_param=True",
         "the codes in use are re-scaled by running batch statistics, so there is no fixed codebook"),
        (getattr(book, "vq_bridge", None) is not None, "vq_bridge",
         "the codes in use are vq_bridge(codebook), not the codebook"),
        (vq.accept_3d_fmap, "accept_3d_fmap=True",
         "the searches work on 2-D index grids (B, h, w)"),
        (not bool(getattr(book, "initted", True)), "kmeans_init=True",
         "the codebook is not initialised yet (all zeros): run the layer on data (train it) first"),
    ]
    for bad, option, why in refusals:
        if bad:
            raise ValueError(f"VectorQuantizeAdapter does not support VectorQuantize({option}): {why}")
