"""vqtto: test-time optimisation in the discrete latent space of VQ-VAEs.

The library under the book. Modules, one concept each:

- ``device``    choose a ``torch.device`` once and pass it down
- ``params``    validate a chapter's papermill parameters (unknown names are errors)
- ``profiles``  smoke / quick / full model presets shared by every chapter
- ``data``      Fashion-MNIST, CIFAR-10 and Mini-ImageNet as in-memory tensors
- ``vqvae``     encoder, vector quantiser, decoder
- ``training``  the VQ-VAE training loop and its history
- ``artifacts`` a cache of trained models keyed by the hash of their full config
- ``plots``     figures shared across chapters
"""

__version__ = "0.1.0"
