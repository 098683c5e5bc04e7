import polars as pl
import pytest

from gamerec_assets.core.features import index_interactions
from gamerec_tests.core.conftest import raw_frame


@pytest.mark.parametrize(
    "users, games",
    [
        ([30, 10, 20, 10, 30], [7, 5, 7, 9, 100]),
        (["b", "a", "10", "a", "9"], ["z", "x", "z", "Y", "10"]),
    ],
    ids=["int_ids", "string_ids"],
)
def test_indices_are_contiguous_in_sorted_id_order(users, games):
    indexed = index_interactions(raw_frame(users, games))
    frame = indexed.interactions
    user_map = dict(zip(frame["user_id"], frame["user_idx"]))
    item_map = dict(zip(frame["game_id"], frame["item_idx"]))
    assert user_map == {uid: i for i, uid in enumerate(sorted(set(users)))}
    assert item_map == {gid: i for i, gid in enumerate(sorted(set(games)))}
    assert indexed.n_users == len(set(users))
    assert indexed.n_items == len(set(games))
    assert frame["user_idx"].dtype == pl.Int64 and frame["item_idx"].dtype == pl.Int64


def test_string_ids_sort_lexicographically():
    indexed = index_interactions(raw_frame(["9", "10", "a"], ["g2", "g10", "g1"]))
    assert indexed.catalog["game_id"].to_list() == ["g1", "g10", "g2"]
    users = indexed.interactions.sort("user_idx")["user_id"].to_list()
    assert users == ["10", "9", "a"]


def test_catalog_row_i_has_item_idx_i_and_first_non_null_title():
    raw = raw_frame(
        [1, 2, 3, 1],
        [20, 10, 20, 30],
        titles=[None, "Ten", "Twenty", "Thirty"],
    )
    catalog = index_interactions(raw).catalog
    assert catalog.columns == ["item_idx", "game_id", "title"]
    assert catalog["item_idx"].to_list() == list(range(catalog.height))
    assert catalog.rows() == [(0, 10, "Ten"), (1, 20, "Twenty"), (2, 30, "Thirty")]


def test_round_trip_recovers_original_ids_for_every_row():
    raw = raw_frame(
        [5, 3, 5, 8, 3, 8],
        [40, 40, 11, 11, 99, 7],
        hours=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    )
    indexed = index_interactions(raw)
    frame = indexed.interactions
    users = frame.select("user_idx", "user_id").unique()
    back = (
        frame.select("user_idx", "item_idx", "play_time_hours")
        .join(users, on="user_idx")
        .join(indexed.catalog.select("item_idx", "game_id"), on="item_idx")
    )
    expected = raw.select("user_id", "game_id", "play_time_hours").sort("user_id", "game_id")
    assert back.select(expected.columns).sort("user_id", "game_id").equals(expected)
    assert frame.height == raw.height


def test_interactions_columns_sorted_by_indices_and_timestamp_kept():
    from datetime import datetime

    raw = raw_frame([2, 1, 1], [1, 2, 1], timestamps=[datetime(2024, 1, d) for d in (1, 2, 3)])
    frame = index_interactions(raw).interactions
    assert frame.columns == [
        "user_id",
        "game_id",
        "user_idx",
        "item_idx",
        "play_time_hours",
        "timestamp",
    ]
    assert frame.select("user_idx", "item_idx").rows() == [(0, 0), (0, 1), (1, 0)]
    stamp = frame.filter(pl.col("user_id") == 1, pl.col("game_id") == 2)["timestamp"].item()
    assert stamp == datetime(2024, 1, 2)


def test_null_ids_are_kept_and_sort_first():
    raw = raw_frame([None, 4, 4, 2], [7, None, 7, 3])
    indexed = index_interactions(raw)
    frame = indexed.interactions
    assert frame.height == raw.height
    assert frame["user_idx"].null_count() == 0 and frame["item_idx"].null_count() == 0
    null_user = frame.filter(pl.col("user_id").is_null())
    assert null_user["user_idx"].to_list() == [0]
    null_game = frame.filter(pl.col("game_id").is_null())
    assert null_game["item_idx"].to_list() == [0]
    assert indexed.catalog["game_id"].to_list() == [None, 3, 7]
    assert indexed.n_users == 3 and indexed.n_items == 3


def test_empty_frame_has_no_users_or_items():
    raw = raw_frame([], []).cast({"user_id": pl.Int64, "game_id": pl.Int64})
    indexed = index_interactions(raw)
    assert indexed.n_users == 0 and indexed.n_items == 0
