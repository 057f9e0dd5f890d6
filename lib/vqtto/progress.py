"""Progress bars for long work, one switch to turn them all off.

Every bar in the library comes from :func:`progress_bar` (``tqdm.auto``, so a notebook shows a widget and
a terminal a text line). Setting ``TQDM_DISABLE=1`` (or ``VQTTO_NO_PROGRESS=1``) silences all of
them, even where a caller asked for progress: the tests do this so that a chapter whose models are
trained in one run and loaded from the cache in the next prints the same outputs both times.
"""

from __future__ import annotations

import os


def silenced() -> bool:
    """Whether the environment turns every progress bar off."""
    return any(os.environ.get(name, "").strip() not in ("", "0") for name in ("TQDM_DISABLE", "VQTTO_NO_PROGRESS"))


def progress_bar(iterable=None, *, disable: bool = False, **options):
    """A ``tqdm.auto`` progress bar over ``iterable`` (or with ``total=``), off when :func:`silenced`."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=disable or silenced(), **options)
