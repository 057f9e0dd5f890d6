"""The VQ-VAE: encoder, vector quantiser and decoder, exposed piece by piece for the searches.

Shapes used throughout the library:

- images ``(B, C, H, W)`` float in [0, 1]
- continuous latents (encoder outputs, codes) ``(B, D, h, w)``
- index grids ``(B, h, w)`` int64 in ``[0, k)``

Training loss (paper, section 3; van den Oord et al. 2017):
``MSE(x, decode(q(x))) + ||sg(e(x)) - c||^2 + beta * ||e(x) - sg(c)||^2``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VQVAEConfig:
    """Architecture of a VQ-VAE (each field's meaning beside it)."""

    in_channels: int = 1      # image channels: 1 for Fashion-MNIST, 3 for colour
    k: int = 512              # codebook size (number of code vectors)
    embedding_dim: int = 16   # D, the length of each code vector
    hidden: int = 64          # channels of the convolutional trunk (even)
    n_res: int = 1            # residual blocks in the encoder and in the decoder
    beta: float = 0.25        # weight of the commitment term

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels!r}")
        if self.k < 2:
            raise ValueError(f"k (codebook size) must be >= 2, got {self.k!r}")
        for name in ("embedding_dim", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.hidden % 2:
            raise ValueError(f"hidden must be even, got {self.hidden!r}")
        if self.n_res < 0:
            raise ValueError(f"n_res must be >= 0, got {self.n_res!r}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Quantized:
    """What the quantiser returns.

    Attributes:
        codes: ``(B, D, h, w)`` the selected code vectors, with the straight-through gradient
            (values of the codes, gradient copied to the encoder output).
        indices: ``(B, h, w)`` int64 nearest-code indices.
        codebook_loss: ``||sg(z_e) - c||^2`` (moves the codebook).
        commitment_loss: ``||z_e - sg(c)||^2`` (moves the encoder); unweighted by beta.
    """

    codes: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels // 2, 3, padding=1),
            nn.ReLU(), nn.Conv2d(channels // 2, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """Images ``(B, C, H, W)`` -> continuous latents ``(B, D, H/4, W/4)``."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.net = nn.Sequential(
            nn.Conv2d(cfg.in_channels, h // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(h // 2, h, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1),
            *[ResBlock(h) for _ in range(cfg.n_res)], nn.ReLU(),
            nn.Conv2d(h, cfg.embedding_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).contiguous()


def _subpixel_taps() -> torch.Tensor:
    """``(36,)`` int64: for each output parity ``(a, b)`` and 3x3 input offset ``(di, dj)``, the tap
    ``kh * 4 + kw`` of a stride-2, padding-1, 4x4 transposed convolution that connects them
    (``kh = a + 1 - 2 di``), or 16 (a zero) where none does."""
    taps = []
    for a in range(2):
        for b in range(2):
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    kh, kw = a + 1 - 2 * di, b + 1 - 2 * dj
                    taps.append(kh * 4 + kw if 0 <= kh < 4 and 0 <= kw < 4 else 16)
    return torch.tensor(taps)


class SubPixelConvTranspose2d(nn.ConvTranspose2d):
    """``ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)`` with the same parameters (and state-dict
    keys), computed as a 3x3 convolution to ``4 c_out`` channels, one per output parity, and a pixel
    shuffle: the same numbers up to float rounding. The decoder's last layer (to the image's 1 or 3
    channels) runs 2.6x faster this way on one CPU thread (19 against 7 ms forward over 256 grids of the
    quick k=512 model; the whole decoder 1.4-1.6x), because oneDNN's transposed convolution does poorly
    with so few output channels; with 32 outputs it is the other way round, so the wider upsampling
    layer stays a plain transposed convolution."""

    TAPS = _subpixel_taps()

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight                                                     # (c_in, c_out, 4, 4)
        c_in, c_out = w.shape[:2]
        padded = torch.cat([w.flatten(2), w.new_zeros(c_in, c_out, 1)], 2)  # tap 16 is a zero
        taps = padded[:, :, self.TAPS.to(w.device)].view(c_in, c_out, 2, 2, 3, 3)
        kernel = taps.permute(1, 2, 3, 0, 4, 5).reshape(4 * c_out, c_in, 3, 3)
        return F.pixel_shuffle(F.conv2d(x, kernel, self.bias.repeat_interleave(4), padding=1), 2)


class Decoder(nn.Module):
    """Latents ``(B, D, h, w)`` -> images ``(B, C, 4h, 4w)`` in [0, 1] (sigmoid output)."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.net = nn.Sequential(
            nn.Conv2d(cfg.embedding_dim, h, 3, padding=1),
            *[ResBlock(h) for _ in range(cfg.n_res)], nn.ReLU(),
            nn.ConvTranspose2d(h, h // 2, 4, stride=2, padding=1), nn.ReLU(),
            SubPixelConvTranspose2d(h // 2, cfg.in_channels),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)).contiguous()


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation onto a learned codebook ``(k, D)``.

    The codebook starts uniform in ``[-1/k, 1/k]`` (the paper's initial prior). With
    :meth:`restart_dead_codes` the training loop moves codes that no encoder output chose in
    the last window onto randomly chosen encoder outputs (a common remedy for codebook collapse).
    """

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.k, self.dim = k, dim
        self.codebook = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))
        self.register_buffer("window_counts", torch.zeros(k))

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Continuous latents ``(B, D, h, w)`` -> nearest-code indices ``(B, h, w)`` int64."""
        b, d, h, w = z_e.shape
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, d)
        cb = self.codebook.detach()
        # ||z - c||^2 = ||z||^2 + (||c||^2 - 2 z.c): the first term is the same for every code, so the
        # argmin needs only the second, one fused matrix product (no (N, k) temporaries added together)
        return torch.addmm(cb.pow(2).sum(1), flat, cb.t(), alpha=-2).argmin(1).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``(B, h, w)`` -> code vectors ``(B, D, h, w)``."""
        if indices.dtype != torch.long:
            raise TypeError(f"indices must be int64, got {indices.dtype}")
        return self.codebook[indices].permute(0, 3, 1, 2)

    def forward(self, z_e: torch.Tensor) -> Quantized:
        indices = self.nearest(z_e)
        codes = self.lookup(indices)
        codebook_loss = F.mse_loss(codes, z_e.detach())
        commitment_loss = F.mse_loss(z_e, codes.detach())
        if self.training:
            self.window_counts += torch.bincount(indices.flatten(), minlength=self.k).to(self.window_counts)
        straight_through = z_e + (codes - z_e).detach()
        return Quantized(straight_through, indices, codebook_loss, commitment_loss)

    @torch.no_grad()
    def restart_dead_codes(self, z_e: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Move codes unused since the last call onto random encoder outputs; return how many moved.

        Args:
            z_e: ``(B, D, h, w)`` encoder outputs of a recent batch to draw the new codes from.
        """
        dead = (self.window_counts == 0).nonzero().flatten()
        self.window_counts.zero_()
        if dead.numel() == 0:
            return 0
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)
        pick = torch.randint(flat.shape[0], (dead.numel(),), generator=generator).to(flat.device)
        self.codebook.data[dead] = flat[pick]
        return int(dead.numel())


class VQVAE(nn.Module):
    """Encoder, quantiser and decoder, each reachable on its own.

    Searches only need the *latent decoder* protocol: ``codebook`` ``(k, D)``,
    ``nearest(z) -> (B, h, w)``, ``lookup(indices) -> (B, D, h, w)`` and
    ``decode(codes) -> (B, C, H, W)``; the hardness chapter's decoders implement it too.

    >>> model = VQVAE(VQVAEConfig(k=8, hidden=8, embedding_dim=4))
    >>> x = torch.rand(2, 1, 28, 28)
    >>> model.encode(x).shape, model.quantize(model.encode(x)).indices.shape
    (torch.Size([2, 4, 7, 7]), torch.Size([2, 7, 7]))
    """

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizer(cfg.k, cfg.embedding_dim)
        self.decoder = Decoder(cfg)
        # Convolution weights in channels-last layout: the convolutions' activations follow them, which
        # oneDNN runs faster on a CPU (python -m vqtto.bench vqvae trains both layouts side by side: 1.21-1.34x
        # the images/s on 2 cores; decoding 1.2-1.6x, one thread). The values are those of the default
        # layout up to float rounding; encoder and decoder return plain contiguous tensors.
        self.to(memory_format=torch.channels_last)

    @property
    def codebook(self) -> torch.Tensor:
        """``(k, D)`` the code vectors."""
        return self.quantizer.codebook

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Continuous latents ``(B, D, h, w)`` -> nearest-code indices ``(B, h, w)`` int64."""
        return self.quantizer.nearest(z_e)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``(B, h, w)`` int64 -> code vectors ``(B, D, h, w)``."""
        return self.quantizer.lookup(indices)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> continuous latents ``(B, D, h, w)`` before quantisation."""
        return self.encoder(x)

    def quantize(self, z_e: torch.Tensor) -> Quantized:
        """Continuous latents ``(B, D, h, w)`` -> :class:`Quantized` (codes, indices, loss terms)."""
        return self.quantizer(z_e)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, D, h, w)`` (codes or any continuous tensor) -> images ``(B, C, H, W)``."""
        return self.decoder(codes)

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> index grids ``(B, h, w)`` int64."""
        return self.quantizer.nearest(self.encoder(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """Reconstruct ``x``; returns the reconstruction ``(B, C, H, W)`` and the :class:`Quantized`."""
        q = self.quantize(self.encode(x))
        return self.decode(q.codes), q

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The paper's training loss and its parts: ``total``, ``recon``, ``codebook``, ``commitment``."""
        recon, q = self(x)
        rec = F.mse_loss(recon, x)
        total = rec + q.codebook_loss + self.cfg.beta * q.commitment_loss
        return {"total": total, "recon": rec, "codebook": q.codebook_loss, "commitment": q.commitment_loss,
                "indices": q.indices}


def codebook_usage(indices: torch.Tensor, k: int) -> dict[str, float]:
    """How much of the codebook a set of index grids uses.

    Args:
        indices: ``(N, h, w)`` int64 index grids.
        k: codebook size.

    Returns:
        ``codes_used`` (distinct indices seen) and ``perplexity`` (exp of the entropy of the
        index histogram; k when all codes are used equally, 1 when one code is used).
    """
    counts = torch.bincount(indices.flatten().cpu(), minlength=k).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codes_used": int((counts > 0).sum()), "perplexity": float(entropy.exp())}
