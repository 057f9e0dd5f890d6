"""The results page: the paper's claims beside the numbers the chapters of this build measured."""

from __future__ import annotations

from ..params import Param, one_of
from ..profiles import PROFILES

PARAMS = {
    "profile": Param(str, "which profile's recorded results to show: smoke | quick | full", one_of(*PROFILES)),
    "results_dir": Param(str, "folder of the chapters' recorded results; None: $VQTTO_RESULTS or _build/results",
                         nullable=True),
}
