"""The published numbers shown beside ours: ``literature.csv`` (transcribed from the thesis)."""

from __future__ import annotations

from importlib import resources

import pandas as pd

LITERATURE_FILE = "literature.csv"


def load_literature() -> pd.DataFrame:
    """Columns: table, method, column, value (float, NaN where the thesis prints '-'), kind, citation."""
    with resources.files("dcbench.leaderboard").joinpath(LITERATURE_FILE).open("r", encoding="utf-8") as f:
        frame = pd.read_csv(f, comment="#", dtype={"table": str, "method": str, "column": str,
                                                   "kind": str, "citation": str},
                            keep_default_na=False, na_values={"value": [""]})
    return frame
