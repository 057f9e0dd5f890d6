"""``python -m vqtto.book``: execute the chapters, build the site (see :func:`vqtto.book.main`)."""

import sys

from . import main

sys.exit(main())
