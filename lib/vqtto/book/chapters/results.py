"""The results page: the paper's claims beside the numbers the chapters of this build measured."""

from __future__ import annotations

from ...params import Param, PathName, chapter_schema
from ...models.profiles import PROFILES

PARAMS = chapter_schema({
    "results_dir": Param(str, "folder of the chapters' recorded results; None: $VQTTO_RESULTS or _build/results",
                         PathName(), nullable=True, default=None),
}, device=False)
