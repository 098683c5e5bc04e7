"""Leave-one-out split: one held-out game per user, everything else for training.

Strategies pick the held-out game per user:
- `max_playtime`: the game the user played most (the seed's rule);
- `latest`: the most recent interaction (needs a `timestamp` column);
- `random`: a uniformly random game, seeded.
Ties go to the smallest `item_idx` (indices follow the sorted original game ids), so the rule
is a function of the data alone. Users with a single interaction stay in train and are not
evaluated, so every evaluated user has training data and no held-out pair is in train. A data
set where no user has two games leaves nothing to evaluate: `require_heldout_users` turns that
into an error for the pipeline (the trainer's tuning split tolerates it and skips tuning).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from gamerec_assets.core.settings import SPLIT_STRATEGIES

SPLIT_COLUMNS = ("user_idx", "item_idx", "play_time_hours", "timestamp")
"""What training, evaluation and a second split need of a split file (`timestamp` if any)."""

MIN_GAMES_TO_EVALUATE = 2  # one held out, at least one left to train on


@dataclass(frozen=True)
class Split:
    train: pl.DataFrame
    val: pl.DataFrame


def require_heldout_users(split: Split) -> None:
    """Raise when no user has a held-out game: metrics over zero users are undefined."""
    if split.val.height:
        return
    n_users = split.train["user_idx"].n_unique() if split.train.height else 0
    raise ValueError(
        f"nothing to evaluate: each of the {n_users} users has a single game, and leave-one-out "
        f"holds out a game only from users with >= {MIN_GAMES_TO_EVALUATE} games (one held "
        "out, the rest to train on); the input needs users with two or more games"
    )


def read_split_frame(path: str | Path) -> pl.DataFrame:
    """A split file's columns that training and evaluation use, including `timestamp` when
    the file has one, so a tuning split carved from it can use any strategy."""
    present = pl.read_parquet_schema(path)
    return pl.read_parquet(path, columns=[name for name in SPLIT_COLUMNS if name in present])


def leave_one_out_split(interactions: pl.DataFrame, strategy: str, seed: int = 0) -> Split:
    """Split indexed interactions (see `features.index_interactions`) into train and val."""
    if strategy not in SPLIT_STRATEGIES:
        raise ValueError(
            f"split strategy must be one of {', '.join(SPLIT_STRATEGIES)}, got {strategy!r}"
        )
    frame = interactions.sort("user_idx", "item_idx")
    if strategy == "max_playtime":
        priority = pl.col("play_time_hours")
    elif strategy == "latest":
        if "timestamp" not in frame.columns or frame["timestamp"].null_count() == frame.height:
            raise ValueError(
                "split strategy 'latest' needs a timestamp column; this source has none "
                "(use max_playtime or random)"
            )
        priority = pl.col("timestamp")
    else:
        random_keys = np.random.default_rng(seed).random(frame.height)
        priority = pl.Series("random_key", random_keys)

    ranked = frame.with_columns(_priority=priority).sort(
        ["user_idx", "_priority", "item_idx"],
        descending=[False, True, False],
        nulls_last=True,
    )
    is_heldout = (pl.int_range(pl.len()).over("user_idx") == 0) & (pl.len().over("user_idx") >= 2)
    ranked = ranked.with_columns(_heldout=is_heldout)
    columns = frame.columns
    train = ranked.filter(~pl.col("_heldout")).select(columns).sort("user_idx", "item_idx")
    val = ranked.filter(pl.col("_heldout")).select(columns).sort("user_idx")
    return Split(train=train, val=val)
