"""Tiny builders shared by the core tests."""

import polars as pl


def raw_frame(users, games, hours=None, titles=None, timestamps=None) -> pl.DataFrame:
    """A canonical raw interactions frame (the readers' output) from parallel lists."""
    columns = {
        "user_id": users,
        "game_id": games,
        "title": titles if titles is not None else [None if g is None else str(g) for g in games],
        "play_time_hours": hours if hours is not None else [1.0] * len(users),
    }
    if timestamps is not None:
        columns["timestamp"] = timestamps
    overrides = {"title": pl.String, "play_time_hours": pl.Float64}
    return pl.DataFrame(columns, schema_overrides=overrides)
