"""Contiguous integer indices for users and games, and the game catalog.

Embedding tables are indexed by row, so original ids (Steam ids, titles, strings of any width)
are remapped to `user_idx` / `item_idx` in 0..n-1. Indices follow the sorted order of the
original ids, so the mapping is a documented function of the data alone and results can be
compared across tools (the split's tie-break relies on it).
"""

from dataclasses import dataclass

import polars as pl

INDEX_DTYPE = pl.Int64


@dataclass(frozen=True)
class IndexedInteractions:
    interactions: pl.DataFrame
    """user_id, game_id, user_idx, item_idx, play_time_hours[, timestamp], sorted by indices."""
    catalog: pl.DataFrame
    """item_idx, game_id, title: one row per game, row i is item_idx i."""

    @property
    def n_users(self) -> int:
        return int(self.interactions["user_idx"].max() or 0) + 1 if self.interactions.height else 0

    @property
    def n_items(self) -> int:
        return self.catalog.height


def index_interactions(raw: pl.DataFrame) -> IndexedInteractions:
    """Assign `user_idx`/`item_idx` in sorted order of the original ids and build the catalog.

    Null ids are kept (and sort first) so the asset checks can report them rather than a join
    silently dropping them.
    """
    users = (
        raw.select("user_id")
        .unique()
        .sort("user_id", nulls_last=False)
        .with_row_index("user_idx")
        .with_columns(pl.col("user_idx").cast(INDEX_DTYPE))
    )
    catalog = (
        raw.group_by("game_id")
        .agg(pl.col("title").drop_nulls().first())
        .sort("game_id", nulls_last=False)
        .with_row_index("item_idx")
        .with_columns(pl.col("item_idx").cast(INDEX_DTYPE))
        .select("item_idx", "game_id", "title")
    )
    extra = [column for column in ("timestamp",) if column in raw.columns]
    interactions = (
        raw.join(users, on="user_id", how="left", nulls_equal=True)
        .join(catalog.select("game_id", "item_idx"), on="game_id", how="left", nulls_equal=True)
        .select("user_id", "game_id", "user_idx", "item_idx", "play_time_hours", *extra)
        .sort("user_idx", "item_idx")
    )
    return IndexedInteractions(interactions=interactions, catalog=catalog)
