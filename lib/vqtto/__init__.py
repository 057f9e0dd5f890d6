"""vqtto: test-time optimisation in the discrete latent space of VQ-VAEs.

The library under the book, grouped by concern (a folder per concern, a module per concept):

``models/`` what is trained
    ``models`` itself: trained VQ-VAEs and priors from the cache (or trained on demand), checkpoint
    files; ``autoencoder`` the VQ-VAE (encoder, vector quantiser, decoder); ``pixelcnn`` the gated
    PixelCNN prior and its likelihoods; ``masked`` the masked-token (bidirectional) prior;
    ``training`` one training loop for all of them; ``profiles`` the smoke / quick / full presets
    every chapter shares; ``adapters`` models built on vector-quantize-pytorch as latent decoders.
``data/`` what is read
    ``data`` itself: Fashion-MNIST, CIFAR-10 and Mini-ImageNet as in-memory tensors; ``pairs`` the
    random source-target test pairs; ``images`` the user's image files and masks, checked and
    written atomically; ``codes`` index-grid data sets encoded by a trained VQ-VAE (cached).
``search/`` the searches in the latent space
    Algorithms 1-3 of the paper and the searches past it on one driver and one trace type;
    ``search.registry`` every search by id, and ``search.DEFAULT``, the book's best measured one;
    ``search.losses`` the losses a search minimises; ``search.energy`` a prior in the energy.
``tasks/`` what the user asks
    ``problems`` what the user has (``Task``: ``reconstruct``, ``inpaint``, ``super_resolve``,
    ``edit``) and ``Benchmark`` (a task posed from known images, the truth kept apart);
    ``solve`` the one entry point of the book and the command line; ``guided`` the prior-guided
    search; ``baselines`` the answers that need no search; ``completion`` measures of a
    completion (SSIM on the hidden pixels, class consistency); ``pair_benchmark`` the paper's
    source-target benchmark.
``flows/`` normalizing flows onto Gumbel-softmax relaxations (the paper's and ours), PULSE through them
``hardness/`` the MAX-CUT reduction, exact solvers (``exact``), the planar spin glass
    (``spin_glass``) and the searches on reduced instances (``instance_searches``)
``book/`` the book
    the papermill runner and the site build (``book`` itself), ``chapters/`` one module per chapter
    (its parameters, tables, figures and typed result), ``report`` tables and typed results,
    ``results_page``, ``plots`` (one name and colour per method), ``widgets``, ``paper`` (the
    reference paper's numbers), ``sphinx_ext``.

Across concerns: ``latent`` the latent-decoder protocol and the one chunked encoder / decoder pass;
``cache`` a safe cache (JSON + tensors, digest-checked) keyed by the hash of a full config;
``params`` parameters written once and validated; ``device``; ``progress`` progress bars;
``stats`` medians, shares and their intervals; ``distributed`` torchrun process groups; ``cli`` the
``vqtto`` command (argument parsing and files only); ``bench`` the speed benchmarks.
"""

__version__ = "0.1.0"
