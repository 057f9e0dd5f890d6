"""vqtto: test-time optimisation in the discrete latent space of VQ-VAEs.

The library under the book. Modules, one concept each:

- ``device``       choose a ``torch.device`` once and pass it down; seeds
- ``params``       a chapter's parameters, written once (type, default, help), validated
- ``profiles``     smoke / quick / full presets of the VQ-VAE and the prior, shared by every chapter
- ``data``         Fashion-MNIST, CIFAR-10 and Mini-ImageNet as in-memory tensors
- ``pairs``        the random source-target test pairs every searching chapter shares
- ``vqvae``        encoder, vector quantiser, decoder
- ``latent``       the latent-decoder protocol the searches need, a probe that checks a model, and the
                   one chunked encoder / decoder pass (``encode_grids``, ``decode_grids``)
- ``adapters``     models built on vector-quantize-pytorch as latent decoders
- ``training``     one training loop, used for the VQ-VAE, the PixelCNN and the benchmark
- ``artifacts``    a safe cache (JSON + tensors, digest-checked) keyed by the hash of a full config
- ``models``       trained VQ-VAEs and priors, from the cache or trained on demand; checkpoint files
- ``search``       Algorithms 1-3 of the paper and the searches past it (a package, one driver), and
                   ``search.registry``: every search by id, and the default (the best measured)
- ``tasks``        what the user has (``Task``: reconstruction, inpaint, super_resolve, edit), the one
                   entry point ``tasks.solve``, the prior-guided search, the answers without search
                   (``tasks.anchors``), and ``Benchmark``: a task posed from known images for measuring
- ``constraints``  pluggable losses on decoded images (MSE, masked MSE, downscaled MSE)
- ``codes``        index-grid data sets encoded by a trained VQ-VAE (cached)
- ``pixelcnn``     the gated PixelCNN prior over index grids and its likelihood metrics
- ``gumbel``       the Gumbel-softmax (concrete) distribution with an exact log-density
- ``flows``        normalizing flows onto relaxed one-hot vectors, and PULSE-style search through them
- ``hardness``     the reduction from MAX-CUT to latent search
- ``exact``        exact solvers (brute force, branch and bound) and what exhaustive search costs
- ``spin_glass``   the planar spin glass in a field and its reduction to a convolutional decoder
- ``reduced_searches``  the searches run on reduced instances (MAX-CUT, spin glass), scored against the optimum
- ``progress``     progress bars, and one switch (``TQDM_DISABLE``) that silences them all
- ``stats``        one median, quantiles and bootstrap intervals for every page
- ``paper``        the reference paper's numbers, each with its section
- ``plots``, ``widgets``  figures (one name and colour per method) and explorers
- ``report``, ``results``  tables, typed chapter results, and the results page
- ``images``       the user's image files and masks, read and checked, written atomically
- ``distributed``  torchrun process groups: sharded training batches and sharded searches
- ``cli``          the ``vqtto`` command: train, prior, search, book
- ``book``         the papermill runner and the site build; ``bench`` the speed benchmarks
"""

__version__ = "0.1.0"
