from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from gamerec_assets.core.features import index_interactions
from gamerec_assets.core.settings import LEAVE_ONE_OUT, SettingError
from gamerec_assets.core.settings import Split as SplitSettings
from gamerec_assets.core.splits import (
    leave_one_out_split,
    make_split,
    require_heldout_users,
    temporal_split,
    tuning_split,
)
from gamerec_tests.core.conftest import raw_frame


def _indexed(users, games, hours=None, timestamps=None) -> pl.DataFrame:
    raw = raw_frame(users, games, hours=hours, timestamps=timestamps)
    return index_interactions(raw).interactions


def _random_interactions(n_users=40, n_items=30, seed=0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    users, games, hours, stamps = [], [], [], []
    start = datetime(2024, 1, 1)
    for user in range(n_users):
        count = int(rng.integers(1, 8))  # some users have a single interaction
        for game in rng.choice(n_items, size=count, replace=False):
            users.append(user)
            games.append(int(game))
            hours.append(float(rng.integers(0, 4)))  # many ties
            stamps.append(start + timedelta(hours=int(rng.integers(0, 10_000))))
    return _indexed(users, games, hours=hours, timestamps=stamps)


def _pairs(frame: pl.DataFrame) -> set[tuple[int, int]]:
    return set(frame.select("user_idx", "item_idx").iter_rows())


@pytest.mark.parametrize("strategy", LEAVE_ONE_OUT)
def test_split_invariants(strategy):
    frame = _random_interactions()
    split = leave_one_out_split(frame, strategy, seed=3)
    counts = dict(frame.group_by("user_idx").len().iter_rows())
    multi = {u for u, n in counts.items() if n >= 2}
    single = {u for u, n in counts.items() if n == 1}
    assert multi and single  # the data exercises both cases

    val_users = split.val["user_idx"].to_list()
    assert sorted(val_users) == sorted(multi)  # exactly one val row per user with >= 2
    assert set(split.train["user_idx"]) >= single
    assert not _pairs(split.val) & _pairs(split.train)
    assert _pairs(split.val) | _pairs(split.train) == _pairs(frame)
    assert split.train.height + split.val.height == frame.height
    assert split.train.columns == frame.columns == split.val.columns
    assert split.val["user_idx"].is_sorted()
    assert split.train.select("user_idx", "item_idx").equals(
        split.train.select("user_idx", "item_idx").sort("user_idx", "item_idx")
    )


def test_max_playtime_picks_most_played_with_ties_to_smallest_item():
    frame = _indexed(
        users=[1, 1, 1, 2, 2, 2, 3, 3, 3, 4],
        games=[10, 20, 30, 10, 20, 30, 30, 20, 10, 10],
        hours=[1.0, 9.0, 2.0, 5.0, 0.5, 5.0, 0.0, 0.0, 0.0, 8.0],
    )
    split = leave_one_out_split(frame, "max_playtime")
    # item_idx: game 10 -> 0, 20 -> 1, 30 -> 2; user_idx: user 1 -> 0 ... user 4 -> 3
    assert split.val.select("user_idx", "item_idx").rows() == [(0, 1), (1, 0), (2, 0)]
    assert split.val["game_id"].to_list() == [20, 10, 10]
    assert split.train.filter(pl.col("user_idx") == 3).height == 1  # single-interaction user
    assert split.train.height == 7


def test_latest_picks_max_timestamp():
    t = datetime(2024, 5, 1)
    frame = _indexed(
        users=[1, 1, 1, 2, 2],
        games=[10, 20, 30, 10, 20],
        hours=[100.0, 0.0, 1.0, 0.0, 50.0],
        timestamps=[t, t + timedelta(days=3), t + timedelta(days=1), t + timedelta(days=2), t],
    )
    split = leave_one_out_split(frame, "latest")
    assert split.val["game_id"].to_list() == [20, 10]


def test_latest_ties_go_to_smallest_item():
    t = datetime(2024, 5, 1)
    frame = _indexed(users=[1, 1, 1], games=[30, 20, 10], timestamps=[t, t, t - timedelta(days=1)])
    assert leave_one_out_split(frame, "latest").val["game_id"].to_list() == [20]


def test_random_is_deterministic_for_a_seed_and_varies_across_seeds():
    frame = _random_interactions(n_users=200, n_items=50, seed=1)
    first = leave_one_out_split(frame, "random", seed=7)
    again = leave_one_out_split(frame, "random", seed=7)
    other = leave_one_out_split(frame, "random", seed=8)
    assert first.val.equals(again.val) and first.train.equals(again.train)
    assert not first.val.equals(other.val)
    assert first.val["user_idx"].to_list() == other.val["user_idx"].to_list()


def test_random_does_not_depend_on_input_row_order():
    frame = _random_interactions(n_users=50, seed=2)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=11)
    assert leave_one_out_split(frame, "random", seed=4).val.equals(
        leave_one_out_split(shuffled, "random", seed=4).val
    )


def test_latest_without_timestamp_raises():
    frame = _indexed(users=[1, 1], games=[1, 2])
    with pytest.raises(ValueError, match="timestamp"):
        leave_one_out_split(frame, "latest")


def test_latest_with_all_null_timestamps_raises():
    frame = _indexed(users=[1, 1], games=[1, 2]).with_columns(
        timestamp=pl.lit(None, dtype=pl.Datetime("us"))
    )
    with pytest.raises(ValueError, match="timestamp"):
        leave_one_out_split(frame, "latest")


def test_unknown_strategy_raises():
    frame = _indexed(users=[1, 1], games=[1, 2])
    with pytest.raises(ValueError, match="'newest'"):
        leave_one_out_split(frame, "newest")


@pytest.mark.parametrize("strategy", LEAVE_ONE_OUT)
def test_every_user_with_one_game_leaves_nothing_to_evaluate(strategy):
    t = datetime(2024, 5, 1)
    frame = _indexed(users=[1, 2, 3], games=[10, 10, 20], timestamps=[t, t, t])
    split = leave_one_out_split(frame, strategy)
    assert split.val.height == 0 and split.train.height == 3  # the split itself is defined
    with pytest.raises(ValueError) as caught:
        require_heldout_users(split)
    assert str(caught.value) == (
        "nothing to evaluate: each of the 3 users has a single game, and leave-one-out holds out "
        "a game only from users with >= 2 games (one held out, the rest to train on); the input "
        "needs users with two or more games"
    )


def test_one_user_with_two_games_is_enough_to_evaluate():
    split = leave_one_out_split(_indexed(users=[1, 2, 2], games=[10, 10, 20]), "max_playtime")
    require_heldout_users(split)
    assert split.val["user_idx"].to_list() == [1]


# --- temporal and predefined: several held-out games per user ----------------------------------


def test_temporal_holds_out_everything_after_the_cutoff_and_counts_the_cold():
    frame = _random_interactions(n_users=60, seed=5)
    split = temporal_split(frame, 0.25)
    latest_train = split.train["timestamp"].max()
    assert latest_train < split.val["timestamp"].min()  # nothing trained on is later
    later = frame.filter(pl.col("timestamp") > latest_train)
    assert later.height == split.report["pairs_after_cutoff"]
    assert abs(later.height - 0.25 * frame.height) <= 2
    assert split.report["cutoff"] == str(latest_train)
    warm = later.filter(
        pl.col("user_idx").is_in(split.train["user_idx"].implode())
        & pl.col("item_idx").is_in(split.train["item_idx"].implode())
    )
    assert _pairs(split.val) == _pairs(warm)  # the cold ones left out, and only those
    left_out = split.report["their_pairs_left_out"] + split.report["pairs_of_those_games_left_out"]
    assert later.height - warm.height == left_out
    assert split.val.group_by("user_idx").len()["len"].max() > 1  # several games a user


def test_temporal_takes_a_date_too():
    frame = _random_interactions(n_users=60, seed=5)
    moment = datetime(2024, 9, 1)
    split = make_split(frame, SplitSettings(strategy="temporal", cutoff="2024-09-01"))
    assert split.train["timestamp"].max() <= moment < split.val["timestamp"].min()
    with pytest.raises(ValueError, match="needs a timestamp column"):
        temporal_split(frame.drop("timestamp"), 0.2)


@pytest.mark.parametrize("aware", [False, True], ids=["naive-utc", "utc-aware"])
def test_a_cutoff_with_an_offset_is_the_same_moment_in_utc(aware):
    frame = _random_interactions(n_users=60, seed=5)
    if aware:
        frame = frame.with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    local = make_split(frame, SplitSettings(strategy="temporal", cutoff="2024-09-01T02:00+02:00"))
    utc = make_split(frame, SplitSettings(strategy="temporal", cutoff="2024-09-01T00:00:00Z"))
    assert _pairs(local.val) == _pairs(utc.val) and local.val.height > 0


@pytest.mark.parametrize("cutoff", ["2019-13-45", "2019-02-30", "2019-06-01T25:00"])
def test_a_cutoff_that_is_no_real_date_is_refused_before_anything_runs(cutoff):
    with pytest.raises(SettingError, match=f"GAMEREC_SPLIT_CUTOFF='{cutoff}'.*expected an ISO"):
        SplitSettings(strategy="temporal", cutoff=cutoff)


def test_predefined_takes_the_given_pairs_and_needs_them():
    frame = _random_interactions(seed=2)
    test = frame.head(5)
    train = frame.slice(5)
    split = make_split(train, SplitSettings(strategy="predefined"), test)
    assert split.train.equals(train) and _pairs(split.val) == _pairs(test)
    with pytest.raises(ValueError, match="GAMEREC_TEST_PATH"):
        make_split(train, SplitSettings(strategy="predefined"), None)


def test_the_tuning_split_follows_the_protocol():
    frame = _random_interactions(n_users=80, seed=9)
    evaluation = temporal_split(frame, 0.2)
    carved = tuning_split(evaluation.train, "temporal", 0, heldout=evaluation.val)
    assert carved.train["timestamp"].max() < carved.val["timestamp"].min()
    share = carved.report["pairs_after_cutoff"] / evaluation.train.height
    assert share == pytest.approx(evaluation.val.height / frame.height, abs=0.03)
    # predefined: each user holds out the share of games the test file holds out for them
    test = frame.filter(pl.col("item_idx") % 3 == 0)
    train = frame.filter(pl.col("item_idx") % 3 != 0)
    carved = tuning_split(train, "predefined", 4, heldout=test)
    per_user = (
        train.group_by("user_idx")
        .agg(games=pl.len())
        .join(test.group_by("user_idx").agg(tests=pl.len()), on="user_idx", how="left")
        .join(carved.val.group_by("user_idx").agg(held=pl.len()), on="user_idx", how="left")
        .fill_null(0)
    )
    expected = per_user["tests"] / (per_user["games"] + per_user["tests"]) * per_user["games"]
    expected = expected.round().clip(0, per_user["games"] - 1)
    assert per_user["held"].to_list() == expected.cast(pl.Int64).to_list()
    assert not _pairs(carved.val) & _pairs(carved.train)
    assert _pairs(carved.val) | _pairs(carved.train) == _pairs(train)
    again = tuning_split(train, "predefined", 4, heldout=test)
    assert again.val.equals(carved.val)  # seeded
