"""vqtto: test-time optimisation in the discrete latent space of VQ-VAEs.

The library under the book. Modules, one concept each:

- ``device``       choose a ``torch.device`` once and pass it down; seeds
- ``params``       validate a chapter's papermill parameters (unknown names are errors)
- ``profiles``     smoke / quick / full model presets shared by every chapter
- ``data``         Fashion-MNIST, CIFAR-10 and Mini-ImageNet as in-memory tensors
- ``pairs``        the random source-target test pairs every searching chapter shares
- ``vqvae``        encoder, vector quantiser, decoder
- ``training``     the VQ-VAE training loop and its history
- ``artifacts``    a cache of trained models keyed by the hash of their full config
- ``search``       Algorithms 1-3 of the paper and the searches that go past it, one batched driver
- ``constraints``  pluggable losses on decoded images (MSE, masked MSE, downscaled MSE)
- ``codes``        index-grid data sets encoded by a trained VQ-VAE (cached)
- ``pixelcnn``     a gated PixelCNN prior over index grids
- ``gumbel``       the Gumbel-softmax (concrete) distribution with an exact log-density
- ``flows``        normalizing flows onto relaxed one-hot vectors, and PULSE-style search through them
- ``hardness``     the reduction from MAX-CUT to latent search, and exact solvers
- ``plots``, ``widgets``, ``report``, ``results``  figures, explorers, tables and the results page
- ``book``         the papermill runner and the site build; ``bench`` the speed benchmarks
"""

__version__ = "0.1.0"
