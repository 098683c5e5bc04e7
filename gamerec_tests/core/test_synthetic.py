from datetime import datetime

import polars as pl
import pytest

from gamerec_assets.core.synthetic import (
    SyntheticSpec,
    generate_synthetic_interactions,
    genre_name,
)

SMALL = SyntheticSpec(n_users=500, n_games=100, n_interactions=6000, seed=1)
# More games per genre than SMALL, so taste / long-tail structure is not
# squeezed by users exhausting their genres.
STRUCTURED = SyntheticSpec(n_users=1000, n_games=1000, n_interactions=15_000, n_genres=10, seed=2)
SCHEMA = {
    "user_id": pl.Int64,
    "game_id": pl.Int64,
    "title": pl.String,
    "play_time_hours": pl.Float64,
    "timestamp": pl.Datetime("us"),
}


@pytest.fixture(scope="module")
def small() -> pl.DataFrame:
    return generate_synthetic_interactions(SMALL)


@pytest.fixture(scope="module")
def default_frame() -> pl.DataFrame:
    return generate_synthetic_interactions(SyntheticSpec())


@pytest.fixture(scope="module", params=["default", "structured"])
def with_genre(request, default_frame) -> tuple[pl.DataFrame, SyntheticSpec]:
    if request.param == "default":
        df, spec = default_frame, SyntheticSpec()
    else:
        df, spec = generate_synthetic_interactions(STRUCTURED), STRUCTURED
    df = df.with_columns(genre=pl.col("title").str.replace(r" Game \d+$", ""))
    top = (
        df.group_by("user_id", "genre")
        .len()
        .sort("user_id", "len", "genre", descending=[False, True, False])
        .group_by("user_id", maintain_order=True)
        .first()
        .select("user_id", top_genre="genre")
    )
    df = df.join(top, on="user_id").with_columns(in_top=pl.col("genre") == pl.col("top_genre"))
    return df, spec


def test_schema_and_dtypes(small):
    assert small.schema == pl.Schema(SCHEMA)
    assert small.null_count().sum_horizontal().item() == 0


def test_pairs_unique_and_sorted(small):
    assert small.select("user_id", "game_id").is_duplicated().sum() == 0
    assert small.equals(small.sort("user_id", "game_id"))


def test_deterministic_per_seed(small):
    assert generate_synthetic_interactions(SMALL).equals(small)
    other = generate_synthetic_interactions(SyntheticSpec(500, 100, 6000, seed=2))
    assert not other.equals(small)


def test_count_near_target_and_all_users_present(small):
    assert abs(len(small) - SMALL.n_interactions) <= 0.1 * SMALL.n_interactions
    assert small["user_id"].n_unique() == SMALL.n_users


def test_some_users_have_a_single_game(small):
    per_user = small.group_by("user_id").len()["len"]
    assert (per_user == 1).sum() >= 5
    assert per_user.max() >= 5 * per_user.median()  # heavy tail


def test_zero_hour_share_in_band(small):
    zero = (small["play_time_hours"] == 0).mean()
    assert 0.1 < zero < 0.35
    assert small["play_time_hours"].min() >= 0


def test_ids_are_not_contiguous(small):
    assert small["user_id"].min() > 2**32
    assert small["user_id"].n_unique() < small["user_id"].max() - small["user_id"].min() + 1
    assert (small["game_id"] % 10 == 0).all() and small["game_id"].min() >= 10


def test_titles_readable_and_unique_per_game(small):
    games = small.select("game_id", "title").unique()
    assert len(games) == games["game_id"].n_unique() == games["title"].n_unique()
    assert games["title"].str.contains(r"^[A-Za-z ]+(?: \d+)? Game \d{4}$").all()
    assert genre_name(0) == "Action" and genre_name(20) == "Action 2"
    many = generate_synthetic_interactions(SyntheticSpec(200, 300, 3000, n_genres=25))
    assert (
        many.select("game_id", "title").unique()["title"].n_unique() == many["game_id"].n_unique()
    )


def test_timestamps_within_2025(small):
    ts = small["timestamp"]
    assert ts.min() >= datetime(2025, 1, 1) and ts.max() < datetime(2026, 1, 1)
    assert (ts.max() - ts.min()).days > 300


def test_default_spec_is_near_target(default_frame):
    df = default_frame
    assert abs(len(df) - 150_000) <= 15_000
    assert df["user_id"].n_unique() == 10_000


def test_popularity_long_tail(with_genre):
    df, spec = with_genre
    counts = df.group_by("game_id").len()["len"].sort(descending=True).to_numpy()
    assert counts[: spec.n_games // 10].sum() > 0.4 * len(df)


def test_users_have_focused_tastes(with_genre):
    df, spec = with_genre
    per_user = df.group_by("user_id").agg(n=pl.len(), top=pl.col("in_top").sum())
    share = per_user.filter(pl.col("n") >= 5).select((pl.col("top") / pl.col("n")).mean()).item()
    assert share > 3.0 / spec.n_genres
    assert share > 0.3
    # The most-played game is usually from the user's most frequent genre.
    most_played = (
        df.sort("play_time_hours", descending=True)
        .group_by("user_id")
        .first()
        .join(per_user.filter(pl.col("n") >= 5), on="user_id")
    )
    assert most_played["in_top"].mean() > 0.5


def test_hours_follow_affinity(with_genre):
    df, _ = with_genre
    stats = df.group_by("in_top").agg(
        hours=pl.col("play_time_hours").mean(),
        zero=(pl.col("play_time_hours") == 0).mean(),
    )
    top = stats.filter(pl.col("in_top")).row(0, named=True)
    other = stats.filter(~pl.col("in_top")).row(0, named=True)
    assert top["hours"] > 2 * other["hours"]
    assert top["zero"] < other["zero"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"n_users": 0}, "n_users"),
        ({"n_games": -5}, "n_games"),
        ({"n_interactions": 0}, "n_interactions"),
        ({"n_genres": 0}, "n_genres"),
        ({"seed": -1}, "seed"),
        ({"n_users": 2.5}, "n_users"),
        ({"n_genres": 101}, "n_genres"),
        ({"n_interactions": 30_000}, "n_interactions"),  # > 500 * 100 / 2
        ({"n_interactions": 499}, "n_interactions"),  # < one game per user
    ],
)
def test_invalid_spec_raises_naming_field(changes, field):
    spec = SyntheticSpec(**{**SMALL.__dict__, **changes})
    with pytest.raises(ValueError, match=field):
        generate_synthetic_interactions(spec)
