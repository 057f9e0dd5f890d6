"""The latent-decoder protocol and the vector-quantize-pytorch adapter: every search runs on a foreign model."""

import pytest
import torch
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from vqtto import search
from vqtto.models.adapters import VectorQuantizeAdapter
from vqtto.latent import LatentAutoencoder, LatentDecoder, LatentShapes, check_latent_decoder

D, K = 4, 16


def _encoder() -> nn.Module:
    """1 x 16 x 16 images -> (B, D, 4, 4)."""
    return nn.Sequential(nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, D, 4, stride=2, padding=1))


def _decoder() -> nn.Module:
    """(B, D, 4, 4) -> 1 x 16 x 16 images in [0, 1]."""
    return nn.Sequential(nn.ConvTranspose2d(D, 8, 4, stride=2, padding=1), nn.ReLU(),
                         nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Sigmoid())


def _images(n: int, seed: int) -> torch.Tensor:
    """``(n, 1, 16, 16)`` made-up images: a bright axis-aligned rectangle on a dark background."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 1, 16, 16)
    corners = torch.randint(0, 10, (n, 2), generator=gen)
    sizes = torch.randint(3, 7, (n, 2), generator=gen)
    for i in range(n):
        (r, c), (h, w) = corners[i].tolist(), sizes[i].tolist()
        out[i, 0, r:r + h, c:c + w] = 1.0
    return out


def _train(encoder: nn.Module, vq: VectorQuantize, decoder: nn.Module, steps: int = 60) -> None:
    """A few Adam steps on the usual VQ-VAE loss: reconstruction plus the layer's commitment loss."""
    data = _images(64, seed=1)
    opt = torch.optim.Adam([*encoder.parameters(), *vq.parameters(), *decoder.parameters()], lr=1e-2)
    for s in range(steps):
        x = data[(s * 16) % 64:(s * 16) % 64 + 16]
        quantized, _, commit = vq(encoder(x))
        loss = nn.functional.mse_loss(decoder(quantized), x) + commit
        opt.zero_grad()
        loss.backward()
        opt.step()


def _trained(**vq_options) -> tuple[nn.Module, VectorQuantize, nn.Module]:
    """Encoder, layer (k-means initialised on the first batch, EMA updates) and decoder, trained, in eval mode."""
    torch.manual_seed(0)
    encoder, decoder = _encoder(), _decoder()
    vq = VectorQuantize(dim=D, codebook_size=K, accept_image_fmap=True, kmeans_init=True, **vq_options)
    _train(encoder, vq, decoder)
    return encoder.eval(), vq.eval(), decoder.eval()


@pytest.fixture(scope="module")
def trained():
    return _trained()


@pytest.fixture(scope="module")
def adapter(trained):
    return VectorQuantizeAdapter(*trained).eval()


def test_adapter_satisfies_the_protocol(adapter):
    assert isinstance(adapter, LatentDecoder) and isinstance(adapter, LatentAutoencoder)
    shapes = check_latent_decoder(adapter, images=_images(2, seed=5))
    assert shapes == LatentShapes(k=K, D=D, grid=(4, 4), image=(1, 16, 16))
    assert check_latent_decoder(adapter, grid=(3, 5)).grid == (3, 5)  # a fully convolutional decoder takes any grid


def test_adapter_quantises_as_the_layer_does(trained, adapter):
    encoder, vq, decoder = trained
    x = _images(8, seed=2)
    with torch.no_grad():
        quantized, indices, _ = vq(encoder(x))
        z = adapter.encode(x)
        assert torch.equal(adapter.nearest(z), indices)
        assert torch.equal(adapter.lookup(adapter.nearest(z)), quantized)
        assert torch.allclose(adapter(x), decoder(quantized))
    assert adapter.codebook.shape == (K, D)


def test_adapter_matches_a_layer_on_token_sequences():
    """The default layout ``(B, N, dim)``: the user rearranges around the layer, the adapter does not care."""
    torch.manual_seed(0)
    encoder, decoder = _encoder().eval(), _decoder().eval()
    vq = VectorQuantize(dim=D, codebook_size=K).eval()
    x = _images(4, seed=3)
    adapter = VectorQuantizeAdapter(encoder, vq, decoder)
    with torch.no_grad():
        f = encoder(x)
        quantized, indices, _ = vq(f.flatten(2).transpose(1, 2))                  # (B, h*w, D), (B, h*w)
        assert torch.equal(adapter.nearest(adapter.encode(x)).flatten(1), indices)
        assert torch.equal(adapter.lookup(adapter.nearest(f)), quantized.transpose(1, 2).view_as(f))


def test_adapter_with_a_projected_codebook_searches_in_codebook_space():
    encoder, vq, decoder = _trained(codebook_dim=2)
    adapter = VectorQuantizeAdapter(encoder, vq, decoder)
    x = _images(6, seed=4)
    with torch.no_grad():
        quantized, indices, _ = vq(encoder(x))
        z = adapter.encode(x)
        assert z.shape == (6, 2, 4, 4) and adapter.codebook.shape == (K, 2)
        assert torch.equal(adapter.nearest(z), indices)
        assert torch.allclose(adapter.decode(adapter.lookup(indices)), decoder(quantized), atol=1e-6)
    assert check_latent_decoder(adapter, images=x).D == 2


def _pairs(adapter):
    src, tgt = _images(3, seed=10), _images(3, seed=11)
    with torch.no_grad():
        z = adapter.encode(src)
    return z, tgt


SEARCHES = {
    "alg2": lambda m, z, loss: search.straight_through(m, z, loss, alpha=50.0, lam=20, max_unique=8, mask="all"),
    "alg3": lambda m, z, loss: search.straight_through(m, z, loss, alpha=50.0, lam=20, max_unique=8, mask="single"),
    "top2": lambda m, z, loss: search.straight_through(m, z, loss, alpha=50.0, lam=20, max_unique=8, mask="top", m=2),
    "alg1": lambda m, z, loss: search.gradient_descent(m, z, loss, alpha=5.0, max_steps=15),
    "greedy": lambda m, z, loss: search.greedy_coordinate(m, z, loss, positions=2, candidates=2, max_width=16,
                                                          max_unique=5),
    "relaxed": lambda m, z, loss: search.relaxed_straight_through(m, z, loss, lr=0.5, lam=10, max_steps=10,
                                                                  max_unique=8),
}


@pytest.mark.parametrize("method", list(SEARCHES))
def test_every_search_runs_through_the_adapter(adapter, method):
    z, tgt = _pairs(adapter)
    loss = search.mse_to(tgt)
    tr = SEARCHES[method](adapter, z, loss)
    assert tr.method == method and len(tr) == 3
    assert torch.equal(tr.grids[0][0], adapter.nearest(z[:1])[0])
    for i in range(3):
        g, l = tr.grids[i], tr.losses[i]
        assert g.dtype == torch.long and g.shape[1:] == (4, 4) and g.shape[0] == l.shape[0] >= 1
        assert int(g.min()) >= 0 and int(g.max()) < K
        assert bool(torch.isfinite(l).all())
        assert float(l.min()) <= float(l[0])
        assert tr.stop_reason[i] in search.STOP_REASONS
    assert max(tr.n_unique.tolist()) >= 2  # the search did move through the adapter
    if method != "alg1":  # Algorithm 1 records the continuous losses; the others the losses of their grids
        flat = torch.cat(tr.grids)
        owners = torch.cat([torch.full((g.shape[0],), i) for i, g in enumerate(tr.grids)])
        true = search.quantized_losses(adapter, search.mse_to(tgt[owners]), flat)
        assert torch.allclose(torch.cat(tr.losses), true, atol=1e-6)


@pytest.mark.parametrize("options,name", [
    ({"use_cosine_sim": True}, "use_cosine_sim"),
    ({"heads": 2}, "heads"),
    ({"heads": 2, "separate_codebook_per_head": True}, "heads"),
    ({"affine_param": True}, "affine_param"),
    ({"vq_bridge": nn.Identity(), "learnable_codebook": True, "ema_update": False}, "vq_bridge"),
    ({"kmeans_init": True}, "kmeans_init"),
])
def test_unsupported_configurations_are_refused(options, name):
    vq = VectorQuantize(dim=D, codebook_size=K, accept_image_fmap=True, **options)
    with pytest.raises(ValueError, match=name):
        VectorQuantizeAdapter(_encoder(), vq, _decoder())


def test_the_adapter_wants_a_vector_quantize_layer():
    with pytest.raises(TypeError, match="VectorQuantize"):
        VectorQuantizeAdapter(_encoder(), nn.Identity(), _decoder())


def test_vqvae_satisfies_the_protocol(tiny_vqvae):
    assert isinstance(tiny_vqvae, LatentAutoencoder)
    shapes = check_latent_decoder(tiny_vqvae.eval(), images=torch.rand(2, 1, 28, 28))
    assert shapes == LatentShapes(k=8, D=4, grid=(7, 7), image=(1, 28, 28))


def test_a_decoder_without_encode_is_a_latent_decoder_only():
    from vqtto import hardness

    dec = hardness.reduce_max_cut(hardness.random_graph(6, 0.7, seed=3), (2, 3)).decoder
    assert isinstance(dec, LatentDecoder) and not isinstance(dec, LatentAutoencoder)
    assert check_latent_decoder(dec, grid=(2, 3)) == LatentShapes(k=2, D=1, grid=(2, 3), image=(1, 1, 11))


class _NoDecode:
    codebook = torch.eye(3)

    def nearest(self, z):
        return torch.cdist(z.permute(0, 2, 3, 1), self.codebook).argmin(-1)

    def lookup(self, idx):
        return self.codebook[idx].permute(0, 3, 1, 2)


def test_an_object_without_decode_is_refused_by_name():
    assert not isinstance(_NoDecode(), LatentDecoder)
    with pytest.raises(TypeError, match="has no decode"):
        check_latent_decoder(_NoDecode(), grid=(2, 2))


class _Broken(_NoDecode):
    """A latent decoder with one fault at a time."""

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def nearest(self, z):
        idx = super().nearest(z)
        return {"nearest": idx.int(), "zeros": torch.zeros_like(idx)}.get(self.fault, idx)

    def decode(self, codes):
        out = codes.detach() if self.fault == "detached" else codes
        return out[:, :1] if self.fault != "flat" else out.flatten(1)


@pytest.mark.parametrize("fault,error,match", [
    ("nearest", TypeError, "nearest must return a torch.int64 tensor"),
    ("zeros", ValueError, "nearest of a code vector must be that code"),
    ("detached", ValueError, "decode must be differentiable"),
    ("flat", ValueError, r"decode must return shape images \(B=2, C, H, W\)"),
])
def test_a_faulty_latent_decoder_is_refused_with_the_member_named(fault, error, match):
    with pytest.raises(error, match=match):
        check_latent_decoder(_Broken(fault), grid=(2, 2))


def test_the_probe_needs_a_grid_or_images_and_encode_for_images():
    with pytest.raises(ValueError, match="grid size"):
        check_latent_decoder(_Broken("none"))
    with pytest.raises(TypeError, match="has no encode"):
        check_latent_decoder(_Broken("none"), images=torch.rand(1, 1, 2, 2))
