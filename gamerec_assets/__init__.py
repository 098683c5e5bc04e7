"""gamerec: game retrieval from player-game interactions, as a Dagster asset graph.

`Recommender.load(artifacts_dir)` serves top-K games from a materialized graph's artifacts.
"""

from gamerec_assets.core.recommend import Recommender

__all__ = ["Recommender"]
