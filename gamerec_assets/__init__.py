"""gamerec: game retrieval from player-game interactions, as a Dagster asset graph.

`Recommender.load(artifacts_dir)` serves top-K games from a materialized graph's artifacts.
It is imported on first use, so that importing the package stays cheap (a training worker's
first act is to ask to die with its parent, see `core.processes`).
"""

from typing import Any

__all__ = ["Recommender"]


def __getattr__(name: str) -> Any:
    if name == "Recommender":
        from gamerec_assets.core.recommend import Recommender

        return Recommender
    raise AttributeError(f"module 'gamerec_assets' has no attribute {name!r}")
