import pytest
import torch

from vqtto.models.autoencoder import VQVAE, VQVAEConfig, codebook_usage


def test_shapes(tiny_vqvae):
    x = torch.rand(3, 1, 28, 28)
    z_e = tiny_vqvae.encode(x)
    assert z_e.shape == (3, 4, 7, 7)
    q = tiny_vqvae.quantize(z_e)
    assert q.indices.shape == (3, 7, 7) and q.indices.dtype == torch.long
    assert q.codes.shape == z_e.shape
    assert tiny_vqvae.decode(q.codes).shape == x.shape
    assert torch.allclose(tiny_vqvae.decode(tiny_vqvae.lookup(q.indices)), tiny_vqvae.decode(q.codes), atol=1e-6)
    assert torch.equal(tiny_vqvae.encode_indices(x), q.indices)


def test_colour_images_shapes():
    m = VQVAE(VQVAEConfig(in_channels=3, k=4, hidden=8, embedding_dim=2))
    assert m.encode_indices(torch.rand(2, 3, 32, 32)).shape == (2, 8, 8)


def test_nearest_is_nearest(tiny_vqvae):
    z_e = torch.randn(2, 4, 7, 7)
    idx = tiny_vqvae.quantizer.nearest(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    brute = torch.cdist(flat, tiny_vqvae.codebook.detach()).argmin(1)
    assert torch.equal(idx.flatten(), brute)


def test_straight_through_gradient_reaches_encoder(tiny_vqvae):
    x = torch.rand(2, 1, 28, 28)
    recon, _ = tiny_vqvae(x)
    torch.nn.functional.mse_loss(recon, x).backward()
    grads = [p.grad for p in tiny_vqvae.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # the reconstruction term alone gives the codebook no gradient
    assert tiny_vqvae.codebook.grad is None or tiny_vqvae.codebook.grad.abs().sum() == 0


def test_codebook_term_moves_only_codebook(tiny_vqvae):
    q = tiny_vqvae.quantize(tiny_vqvae.encode(torch.rand(2, 1, 28, 28)))
    q.codebook_loss.backward()
    assert tiny_vqvae.codebook.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_vqvae.encoder.parameters())


def test_commitment_term_moves_only_encoder(tiny_vqvae):
    q = tiny_vqvae.quantize(tiny_vqvae.encode(torch.rand(2, 1, 28, 28)))
    q.commitment_loss.backward()
    assert tiny_vqvae.codebook.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_vqvae.encoder.parameters())


def test_dead_codes_restart_onto_encoder_outputs(tiny_vqvae):
    tiny_vqvae.train()
    z_e = tiny_vqvae.encode(torch.rand(4, 1, 28, 28))
    used = tiny_vqvae.quantize(z_e).indices.unique()
    moved = tiny_vqvae.quantizer.restart_dead_codes(z_e, torch.Generator().manual_seed(0))
    assert moved == 8 - used.numel()
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    dead = [i for i in range(8) if i not in used.tolist()]
    for i in dead:  # each restarted code now sits exactly on some encoder output
        assert (flat - tiny_vqvae.codebook.detach()[i]).norm(dim=1).min() < 1e-6
    assert tiny_vqvae.quantizer.window_counts.sum() == 0


def test_codebook_usage():
    idx = torch.tensor([[[0, 0], [1, 1]]])
    u = codebook_usage(idx, k=4)
    assert u["codes_used"] == 2
    assert u["perplexity"] == pytest.approx(2.0)


@pytest.mark.parametrize("bad", [{"k": 1}, {"in_channels": 2}, {"beta": -1.0}, {"hidden": 7}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        VQVAEConfig(**bad)


def test_latent_decoder_protocol(tiny_vqvae):
    z = torch.randn(2, 4, 7, 7)
    idx = tiny_vqvae.nearest(z)
    assert torch.equal(tiny_vqvae.lookup(idx), tiny_vqvae.codebook[idx].permute(0, 3, 1, 2))


def test_fused_nearest_picks_the_three_term_distance_argmin():
    """The fused ||c||^2 - 2 z.c argmin is the full Euclidean argmin, code vectors map to themselves."""
    from vqtto.bench import _three_term_nearest

    torch.manual_seed(1)
    model = VQVAE(VQVAEConfig(k=64, hidden=8, embedding_dim=6))
    model.quantizer.codebook.data.normal_()
    z = torch.randn(5, 6, 7, 7) * 2
    assert torch.equal(model.nearest(z), _three_term_nearest(model.quantizer)(z))
    idx = torch.randint(0, 64, (3, 7, 7))
    assert torch.equal(model.nearest(model.lookup(idx)), idx)


def test_channels_last_weights_give_the_default_layout_values():
    """The model keeps its convolution weights channels-last; decoding, the latent gradient and a training
    loss agree with a default-layout copy up to float rounding, and the outputs are plain contiguous."""
    from vqtto.bench import gauge_model

    torch.manual_seed(2)
    model = VQVAE(VQVAEConfig(k=16, hidden=16, embedding_dim=4, in_channels=3))
    conv = model.decoder.net[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    plain = VQVAE(VQVAEConfig(k=16, hidden=16, embedding_dim=4, in_channels=3))
    plain.load_state_dict(model.state_dict())
    gauge_model(plain)
    assert plain.decoder.net[0].weight.is_contiguous()
    z = torch.randn(4, 4, 8, 8)
    grads = []
    for m in (model, plain):
        latent = z.clone().requires_grad_(True)
        images = m.decode(latent)
        assert images.is_contiguous() and images.shape == (4, 3, 32, 32)
        grads.append((images, torch.autograd.grad(images.square().sum(), latent)[0]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)
    x = torch.rand(2, 3, 32, 32)
    assert model.encode(x).is_contiguous()
    assert torch.allclose(model.loss(x)["total"], plain.loss(x)["total"], atol=1e-6)
    assert all(t.is_contiguous() for t in plain.state_dict().values())


@pytest.mark.parametrize("c_out", [1, 3])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_subpixel_layer_is_the_transposed_convolution(c_out, layout):
    """The decoder's last layer, computed as a 3x3 convolution and a pixel shuffle, gives what a plain
    ConvTranspose2d(4, stride=2, padding=1) with its parameters gives: outputs and both gradients."""
    from vqtto.models.autoencoder import SubPixelConvTranspose2d

    torch.manual_seed(3)
    fast = SubPixelConvTranspose2d(8, c_out).to(memory_format=layout)
    plain = torch.nn.ConvTranspose2d(8, c_out, 4, stride=2, padding=1)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(5, 8, 7, 6).to(memory_format=layout)
    weights = torch.rand(5, c_out, 14, 12)
    outs = []
    for layer in (fast, plain):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        gx, gw, gb = torch.autograd.grad((y * weights).sum(),
                                         (xi, layer.weight, layer.bias))
        outs.append((y, gx, gw, gb))
    assert outs[0][0].shape == (5, c_out, 14, 12)
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-5)


def test_decoder_keeps_its_state_dict_keys_and_the_gauge_runs_the_transposed_convolution():
    """Checkpoints from before the sub-pixel layer load unchanged, and the machine gauge still times oneDNN's
    transposed convolution (the old code) with the same decoded images."""
    from vqtto.bench import gauge_model
    from vqtto.models.autoencoder import SubPixelConvTranspose2d

    model = VQVAE(VQVAEConfig(k=16, hidden=16, embedding_dim=4))
    last = model.decoder.net[-1]
    assert isinstance(last, SubPixelConvTranspose2d)
    keys = dict(model.state_dict())
    old = torch.nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)
    assert {k.rsplit(".", 1)[1] for k in keys if k.startswith(f"decoder.net.{len(model.decoder.net) - 1}.")} == set(old.state_dict())
    z = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        before = model.decode(z)
        gauge_model(model)
        assert model.decoder.net[-1].forward.__func__ is torch.nn.ConvTranspose2d.forward
        assert torch.allclose(model.decode(z), before, atol=1e-6)
