"""The results page: the paper's claims beside the numbers the chapters of this build measured."""

from __future__ import annotations

from ..params import Param, chapter_schema, one_of
from ..profiles import PROFILES

PARAMS = chapter_schema({
    "results_dir": Param(str, "folder of the chapters' recorded results; None: $VQTTO_RESULTS or _build/results",
                         nullable=True, default=None),
}, device=False)
