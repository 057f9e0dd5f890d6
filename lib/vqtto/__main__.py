"""``python -m vqtto``: the command line of :mod:`vqtto.cli` (also installed as ``vqtto``)."""

from .cli import main

raise SystemExit(main())
