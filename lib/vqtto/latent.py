"""The latent-decoder protocol: what every search of :mod:`vqtto.search` needs of a model.

A *latent decoder* maps index grids to images through a codebook. The searches use exactly
these members of their ``model`` argument (and nothing else):

- ``codebook``: ``(k, D)`` float tensor, the code vectors (the searches read it detached);
- ``nearest(z (B, D, h, w)) -> (B, h, w)`` int64, the Euclidean nearest code at every position;
- ``lookup(idx (B, h, w)) -> (B, D, h, w)``, the code vectors of an index grid;
- ``decode(codes (B, D, h, w)) -> (B, C, H, W)``, images, differentiable in ``codes``.

Starting a search from images (and :func:`vqtto.search.reference_losses`) also needs
``encode(images (B, C, H, W)) -> (B, D, h, w)``: that is :class:`LatentAutoencoder`.
:func:`check_latent_decoder` probes a model for all of this before any work, with an error that
names what is missing or of the wrong shape. :func:`encode_latents`, :func:`encode_grids` and
:func:`decode_grids` are the one chunked way to go between images and grids through the protocol. :class:`vqtto.models.autoencoder.VQVAE` is a latent
autoencoder; :class:`vqtto.models.adapters.VectorQuantizeAdapter` makes one of a model built on
vector-quantize-pytorch.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch

__all__ = ["LatentAutoencoder", "LatentDecoder", "LatentShapes", "check_latent_decoder", "decode_grids", "encode_grids",
           "encode_latents"]


@runtime_checkable
class LatentDecoder(Protocol):
    """What the searches need: a codebook, nearest codes, code lookup and a differentiable decoder.

    Shapes: ``k`` codes of length ``D``; latents ``(B, D, h, w)``; index grids ``(B, h, w)``
    int64 in ``[0, k)``; images ``(B, C, H, W)``. Any batch size ``B >= 1`` must work, and every
    result lies on the device of ``codebook``.

    Guarantees an implementation must keep (the searches rely on them):

    - ``nearest`` is the *Euclidean* nearest code: ``nearest(z)[b, i, j]`` minimises
      ``|z[b, :, i, j] - codebook[c]|`` over ``c`` (ties may go either way). The straight-through
      searches count the steps to the next Voronoi cell from ``codebook`` alone, so any other
      rule (cosine similarity, a learned metric) breaks them silently.
    - ``lookup(idx)[b, :, i, j] == codebook[idx[b, i, j]]``; hence ``lookup(nearest(z))`` is the
      quantised latent of ``z``, and ``nearest(lookup(idx))`` picks codes equal to ``idx``'s.
    - ``decode`` accepts any continuous latent, not only codes (Algorithm 1 decodes the points in
      between), and is differentiable in its input: the searches take ``d loss / d codes``.
    - None of them changes the model (no EMA update, no codebook restart): a search calls them
      thousands of times.
    """

    @property
    def codebook(self) -> torch.Tensor:
        """``(k, D)`` the code vectors."""
        ...

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Continuous latents ``(B, D, h, w)`` -> Euclidean nearest-code indices ``(B, h, w)`` int64."""
        ...

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Index grids ``(B, h, w)`` int64 -> code vectors ``(B, D, h, w)``."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, D, h, w)`` (codes or any continuous tensor) -> images ``(B, C, H, W)``."""
        ...


@runtime_checkable
class LatentAutoencoder(LatentDecoder, Protocol):
    """A :class:`LatentDecoder` that can also encode images, so searches can start from them."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> continuous latents ``(B, D, h, w)`` before quantisation."""
        ...


class LatentShapes(NamedTuple):
    """What :func:`check_latent_decoder` found: ``k`` codes of length ``D``, grids ``(h, w)``,
    images ``(C, H, W)``."""

    k: int
    D: int
    grid: tuple[int, int]
    image: tuple[int, int, int]


_METHODS = ("nearest", "lookup", "decode")


def check_latent_decoder(model, *, images: torch.Tensor | None = None,
                         grid: tuple[int, int] | None = None) -> LatentShapes:
    """Probe ``model`` for the :class:`LatentDecoder` protocol; raise before any real work if it fails.

    The probe decodes two grids, all code 0 and all code ``k - 1``, of size ``grid``; with
    ``images`` ``(B, C, H, W)`` it also needs ``encode``, takes the grid size from
    ``encode(images)`` and checks that the decoded images have the images' ``(C, H, W)``.

    Args:
        model: the candidate latent decoder (in the mode it will be searched in, usually eval).
        images: a few sample images; then ``model`` must be a :class:`LatentAutoencoder`.
        grid: ``(h, w)`` of the index grids, needed when ``images`` is not given.

    Returns:
        :class:`LatentShapes` of the model.

    Raises:
        TypeError: a member is missing or not callable, or a result is not a tensor of the right
            dtype; the message names the member.
        ValueError: a result has the wrong shape, ``lookup``/``nearest`` disagree with the
            codebook, or ``decode`` is not differentiable in its input; the message names the member.
    """
    name = type(model).__name__
    wanted = _METHODS + (("encode",) if images is not None else ())
    missing = [m for m in ("codebook",) + wanted if not hasattr(model, m)]
    if missing:
        needs = "codebook (k, D), nearest, lookup and decode" + (", and encode to start from images" if images is not None else "")
        raise TypeError(f"{name} is not a latent decoder: it has no {', '.join(missing)} (it needs {needs})")
    for m in wanted:
        if not callable(getattr(model, m)):
            raise TypeError(f"{name}.{m} must be a method, got {type(getattr(model, m)).__name__}")
    cb = model.codebook
    if not isinstance(cb, torch.Tensor) or not cb.is_floating_point():
        raise TypeError(f"{name}.codebook must be a float tensor (k, D), got {_describe(cb)}")
    if cb.dim() != 2 or cb.shape[0] < 1 or cb.shape[1] < 1:
        raise ValueError(f"{name}.codebook must have shape (k, D), got {tuple(cb.shape)}")
    k, dim = cb.shape
    if images is not None:
        found = _probe_encode(model, name, images, cb)
        if grid is not None and tuple(grid) != found:
            raise ValueError(f"{name}.encode gives grids {found} (h, w) but grid={tuple(grid)} was asked for")
        grid = found
    if grid is None:
        raise ValueError("check_latent_decoder needs images (B, C, H, W) or the grid size (h, w) to probe with")
    if len(grid) != 2 or not all(isinstance(s, int) and s >= 1 for s in grid):
        raise ValueError(f"grid must be two positive integers (h, w), got {grid!r}")
    h, w = grid
    idx = torch.zeros(2, h, w, dtype=torch.long, device=cb.device)
    idx[1] = k - 1
    with torch.no_grad():
        codes = _tensor(model.lookup(idx), f"{name}.lookup", (2, dim, h, w), f"(B=2, D={dim}, {h}, {w})")
        if not torch.allclose(codes.to(cb.dtype), cb.detach()[idx].permute(0, 3, 1, 2), rtol=1e-5, atol=1e-6):
            raise ValueError(f"{name}.lookup(idx)[b, :, i, j] must be codebook[idx[b, i, j]]")
        near = _tensor(model.nearest(codes), f"{name}.nearest", (2, h, w), f"(B=2, {h}, {w})", torch.long)
        if bool(((near < 0) | (near >= k)).any()) or not torch.equal(cb.detach()[near], cb.detach()[idx]):
            raise ValueError(f"{name}.nearest of a code vector must be that code (Euclidean nearest code)")
    with torch.enable_grad():
        probe = codes.detach().clone().requires_grad_(True)
        out = model.decode(probe)
        _tensor(out, f"{name}.decode", (2, None, None, None), "images (B=2, C, H, W)")
        if not out.requires_grad:
            raise ValueError(f"{name}.decode must be differentiable in its input codes (the searches take the "
                             "gradient of the loss at the codes); its output does not require grad")
    image = tuple(int(s) for s in out.shape[1:])
    if images is not None and image != tuple(images.shape[1:]):
        raise ValueError(f"{name}.decode gives images {image} (C, H, W) but the images are {tuple(images.shape[1:])}")
    return LatentShapes(int(k), int(dim), (h, w), image)


def _probe_encode(model, name: str, images: torch.Tensor, cb: torch.Tensor) -> tuple[int, int]:
    """Check ``encode`` on the first image; returns the grid size ``(h, w)`` of its latent."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < 1:
        raise ValueError(f"images must be a (B >= 1, C, H, W) tensor, got {_describe(images)}")
    with torch.no_grad():
        z = _tensor(model.encode(images[:1].to(cb.device)), f"{name}.encode", (1, cb.shape[1], None, None),
                    f"latents (B=1, D={cb.shape[1]}, h, w)")
    return int(z.shape[2]), int(z.shape[3])


def _tensor(value, what: str, shape: tuple[int | None, ...], text: str,
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` if it is a finite tensor (of ``dtype``, when given) of ``shape`` (None: any size there)."""
    if not isinstance(value, torch.Tensor) or (dtype is not None and value.dtype != dtype):
        kind = f"a {dtype} tensor" if dtype is not None else "a tensor"
        raise TypeError(f"{what} must return {kind}, got {_describe(value)}")
    if value.dim() != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        raise ValueError(f"{what} must return shape {text}, got {tuple(value.shape)}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{what} returned non-finite values")
    return value


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor {tuple(value.shape)}"
    return type(value).__name__


# --- chunked passes through the protocol ----------------------------------------------------------

def _device_of(model) -> torch.device:
    return model.codebook.device


@torch.no_grad()
def encode_latents(model, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Images ``(B, C, H, W)`` (any device) -> continuous latents ``(B, D, h, w)`` on the model's device, in chunks."""
    dev = _device_of(model)
    return torch.cat([model.encode(images[s:s + batch].to(dev)) for s in range(0, images.shape[0], batch)])


@torch.no_grad()
def encode_grids(model, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Images ``(B, C, H, W)`` -> ``nearest(encode(images))`` ``(B, h, w)`` int64 on the model's device, in chunks."""
    dev = _device_of(model)
    return torch.cat([model.nearest(model.encode(images[s:s + batch].to(dev))) for s in range(0, images.shape[0], batch)])


@torch.no_grad()
def decode_grids(model, grids: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Index grids ``(..., h, w)`` int64 -> images ``(..., C, H, W)`` on the CPU, decoded in chunks of ``batch``."""
    dev = _device_of(model)
    flat = grids.reshape(-1, *grids.shape[-2:])
    images = torch.cat([model.decode(model.lookup(flat[s:s + batch].to(dev))).cpu() for s in range(0, flat.shape[0], batch)])
    return images.reshape(*grids.shape[:-2], *images.shape[1:])
