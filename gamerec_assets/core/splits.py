"""The evaluation protocol: which (user, game) pairs are held out, and the rest for training.

Leave-one-out strategies hold out one game per user with at least two:
- `max_playtime`: the game the user played most (the seed's rule);
- `latest`: the most recent interaction (needs a `timestamp` column);
- `random`: a uniformly random game, seeded.
Ties go to the smallest `item_idx` (indices follow the sorted original game ids), so the rule
is a function of the data alone. Two more hold out several games per user:
- `temporal`: one global cut-off in time; every interaction after it is held out, so no model
  trains on anything later than what it is tested on. Players and games first seen after the
  cut-off have no training history (no history tower or ID row can score them): their pairs
  are left out of the hold-out, and counted.
- `predefined`: the held-out pairs come from a second file (a benchmark's official test set).
Every evaluated user has training data and no held-out pair is in train. A data set that leaves
nothing to evaluate is an error for the pipeline (`require_heldout_users`); the tuning split
carved from training data (`tuning_split`) tolerates it and skips tuning.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from gamerec_assets.core.settings import LEAVE_ONE_OUT, cutoff_moment
from gamerec_assets.core.settings import Split as SplitSettings

SPLIT_COLUMNS = ("user_idx", "item_idx", "play_time_hours", "timestamp")
"""What training, evaluation and a second split need of a split file (`timestamp` if any)."""

MIN_GAMES_TO_EVALUATE = 2  # one held out, at least one left to train on


@dataclass(frozen=True)
class Split:
    train: pl.DataFrame
    val: pl.DataFrame
    report: dict[str, object] = field(default_factory=dict)
    """What the split left out and why (cold players and games of a temporal split)."""


def require_heldout_users(split: Split) -> None:
    """Raise when no user has a held-out game: metrics over zero users are undefined."""
    if split.val.height:
        return
    n_users = split.train["user_idx"].n_unique() if split.train.height else 0
    if split.report.get("strategy") == "temporal":
        raise ValueError(
            f"nothing to evaluate: no interaction after the cut-off {split.report['cutoff']} "
            "belongs to a player and a game seen before it; set GAMEREC_SPLIT_CUTOFF earlier "
            "(or to a larger fraction)"
        )
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


def make_split(
    interactions: pl.DataFrame, settings: SplitSettings, test: pl.DataFrame | None = None
) -> Split:
    """The evaluation split the settings describe; `test` holds the predefined pairs."""
    if settings.strategy in LEAVE_ONE_OUT:
        return leave_one_out_split(interactions, settings.strategy, settings.seed)
    if settings.strategy == "temporal":
        return temporal_split(interactions, settings.cutoff_value())
    if test is None:
        raise ValueError(
            "GAMEREC_SPLIT=predefined needs the held-out pairs: set GAMEREC_TEST_PATH to the "
            "test file (same columns as the source)"
        )
    return Split(interactions, test.select(interactions.columns), {"strategy": "predefined"})


def leave_one_out_split(interactions: pl.DataFrame, strategy: str, seed: int = 0) -> Split:
    """Split indexed interactions (see `features.index_interactions`) into train and val."""
    if strategy not in LEAVE_ONE_OUT:
        raise ValueError(
            f"leave-one-out strategy must be one of {', '.join(LEAVE_ONE_OUT)}, got {strategy!r}"
        )
    frame = interactions.sort("user_idx", "item_idx")
    if strategy == "max_playtime":
        priority = pl.col("play_time_hours")
    elif strategy == "latest":
        require_timestamps(frame, strategy)
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


def require_timestamps(frame: pl.DataFrame, strategy: str) -> None:
    if "timestamp" not in frame.columns or frame["timestamp"].null_count() == frame.height:
        raise ValueError(
            f"split strategy {strategy!r} needs a timestamp column; this source has none "
            "(use max_playtime or random)"
        )


def temporal_split(interactions: pl.DataFrame, cutoff: float | str) -> Split:
    """Everything after one cut-off in time held out: `cutoff` is a date or datetime (ISO), or
    a fraction of the interactions, the latest ones. Interactions at the cut-off train."""
    require_timestamps(interactions, "temporal")
    frame = interactions.sort("user_idx", "item_idx")
    times = frame["timestamp"]
    if isinstance(cutoff, float):
        moment = times.sort(nulls_last=True)[max(0, round(len(times) * (1 - cutoff)) - 1)]
    elif isinstance(times.dtype, pl.Datetime):
        moment = pl.Series([cutoff_moment(cutoff)]).dt.replace_time_zone(
            "UTC" if times.dtype.time_zone else None
        )
        moment = moment.cast(times.dtype)[0]
    elif times.dtype == pl.Date:
        moment = cutoff_moment(cutoff).date()
    else:
        raise ValueError(
            f"GAMEREC_SPLIT_CUTOFF={cutoff!r} is a date, but the timestamp column holds "
            f"{times.dtype} values; give the cut-off as a fraction of the interactions"
        )
    later = frame.filter(pl.col("timestamp") > moment)
    train = frame.filter(pl.col("timestamp") <= moment)
    seen = {column: train[column].unique().implode() for column in ("user_idx", "item_idx")}
    warm_user, warm_game = (pl.col(c).is_in(seen[c]) for c in ("user_idx", "item_idx"))
    val = later.filter(warm_user & warm_game).sort("user_idx", "item_idx")
    report = {
        "strategy": "temporal",
        "cutoff": str(moment),
        "pairs_after_cutoff": later.height,
        "players_first_seen_after_cutoff": later.filter(~warm_user)["user_idx"].n_unique(),
        "their_pairs_left_out": later.filter(~warm_user).height,
        "games_first_seen_after_cutoff": later.filter(~warm_game)["item_idx"].n_unique(),
        "pairs_of_those_games_left_out": later.filter(warm_user & ~warm_game).height,
    }
    return Split(train=train, val=val, report=report)


def tuning_split(
    train: pl.DataFrame,
    strategy: str,
    seed: int,
    n_users: int = 0,
    heldout: pl.DataFrame | None = None,
) -> Split:
    """A hold-out carved from training data, to choose epochs and weights on, never the
    evaluation hold-out, in the evaluation's own protocol: the same leave-one-out strategy; for
    `temporal`, a cut-off inside train holding out the same share of it; for `predefined`, a
    seeded random hold-out of each user's games, the share of them the test file holds out
    (`heldout`: the evaluation hold-out, read for its shares only). For a seeded sample of
    `n_users` users (0: every user): the others keep all their games, so on large data the
    hold-out is small next to the training pairs and its scoring stays cheap."""
    if strategy in LEAVE_ONE_OUT:
        carved = leave_one_out_split(train, strategy, seed)
    elif strategy == "temporal":
        share = 0.0 if heldout is None else heldout.height / (train.height + heldout.height)
        carved = temporal_split(train, share) if share > 0 else Split(train, train.clear())
    else:
        carved = _random_share_split(train, heldout, seed)
    users = carved.val["user_idx"].unique().sort()
    if n_users <= 0 or len(users) <= n_users:
        return carved
    chosen = users.sample(n=n_users, seed=seed).implode()
    returned = carved.val.filter(~pl.col("user_idx").is_in(chosen))
    kept = pl.concat([carved.train, returned]).sort("user_idx", "item_idx")
    return Split(train=kept, val=carved.val.filter(pl.col("user_idx").is_in(chosen)))


def _random_share_split(train: pl.DataFrame, heldout: pl.DataFrame | None, seed: int) -> Split:
    """Hold out, per user, a seeded random share of their games: the share of that user's
    games the test file holds out (users without test pairs hold out nothing; one game always
    stays in train)."""
    if heldout is None or heldout.height == 0:
        return Split(train, train.clear())
    tests = heldout.group_by("user_idx").agg(tests=pl.len())
    ranked = (
        train.sort("user_idx", "item_idx")
        .with_columns(_key=pl.Series(np.random.default_rng(seed).random(train.height)))
        .join(tests, on="user_idx", how="left")
        .with_columns(pl.col("tests").fill_null(0))
        .with_columns(
            _rank=pl.col("_key").rank("ordinal").over("user_idx") - 1,
            _games=pl.len().over("user_idx"),
        )
        .with_columns(
            _quota=(pl.col("tests") / (pl.col("_games") + pl.col("tests")))
            .mul(pl.col("_games"))
            .round()
            .clip(0, pl.col("_games") - 1)
        )
    )
    held = pl.col("_rank") < pl.col("_quota")
    columns = train.columns
    return Split(
        ranked.filter(~held).select(columns).sort("user_idx", "item_idx"),
        ranked.filter(held).select(columns).sort("user_idx", "item_idx"),
    )
