import gzip
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from gamerec_assets.core.sources import (
    InteractionsFileError,
    read_interactions_file,
    read_steam200k,
)

STEAM_200K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "steam-200k.csv.gz"

# Steam-200k format: no header; user id, quoted title, purchase|play, value, 0.
STEAM_ROWS = (
    '10,"Half, Life",purchase,1.0,0\n'
    '10,"Half, Life",play,2.5,0\n'
    '10,"Half, Life",play,2.5,0\n'  # exact duplicate of the row above: dropped
    '10,"Half, Life",play,1.0,0\n'
    "10,Portal,purchase,1.0,0\n"
    "10,Portal,purchase,1.0,0\n"  # exact duplicate: dropped
    "7,Portal,purchase,1.0,0\n"
    "7,Portal,play,0.5,0\n"
    "7,Dota 2,play,12.0,0\n"
)


@pytest.fixture(params=["plain", "gzip"])
def steam_file(tmp_path, request):
    if request.param == "plain":
        path = tmp_path / "steam.csv"
        path.write_text(STEAM_ROWS, encoding="utf-8")
    else:
        path = tmp_path / "steam.csv.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(STEAM_ROWS)
    return path


def test_read_steam200k_one_row_per_user_title_with_summed_play_hours(steam_file):
    raw = read_steam200k(steam_file)
    assert raw.frame.columns == ["user_id", "game_id", "title", "play_time_hours"]
    assert raw.frame.rows() == [
        (7, "Dota 2", "Dota 2", 12.0),
        (7, "Portal", "Portal", 0.5),
        (10, "Half, Life", "Half, Life", 3.5),  # 2.5 + 1.0: the duplicate 2.5 counted once
        (10, "Portal", "Portal", 0.0),  # only purchased
    ]
    assert raw.frame["game_id"].to_list() == raw.frame["title"].to_list()


def test_read_steam200k_counts_raw_and_duplicate_rows(steam_file):
    raw = read_steam200k(steam_file)
    assert raw.stats == {"raw_rows": 9, "duplicate_rows_dropped": 2}
    assert str(steam_file) in raw.description


def test_read_steam200k_unknown_behaviour_names_file_and_row(tmp_path):
    path = tmp_path / "steam.csv"
    path.write_text(
        '1,"A",purchase,1.0,0\n1,"A",play,1.0,0\n1,"B",played,1.0,0\n2,"C",bought,1.0,0\n',
        encoding="utf-8",
    )
    with pytest.raises(InteractionsFileError) as caught:
        read_steam200k(path)
    message = str(caught.value)
    assert str(path) in message
    assert "row 3," in message and "'played'" in message
    assert "2 such rows" in message
    assert caught.value.path == str(path)


def test_read_steam200k_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.csv.gz"
    with pytest.raises(InteractionsFileError, match="file not found") as caught:
        read_steam200k(path)
    assert str(path) in str(caught.value)


def test_read_steam200k_empty_file_names_path(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(InteractionsFileError, match="empty") as caught:
        read_steam200k(path)
    assert str(path) in str(caught.value)


def test_read_steam200k_unparseable_value_names_file(tmp_path):
    path = tmp_path / "steam.csv"
    path.write_text('1,"A",play,lots,0\n', encoding="utf-8")
    with pytest.raises(InteractionsFileError, match="cannot parse as Steam-200k") as caught:
        read_steam200k(path)
    assert str(path) in str(caught.value)


@pytest.mark.skipif(
    not STEAM_200K.exists(), reason=f"real Steam-200k file not found at {STEAM_200K}"
)
def test_read_steam200k_real_data_counts():
    raw = read_steam200k(STEAM_200K)
    frame = raw.frame
    assert frame.height == 128_804
    assert frame["user_id"].n_unique() == 12_393
    assert frame["game_id"].n_unique() == 5_155
    assert raw.stats == {"raw_rows": 200_000, "duplicate_rows_dropped": 707}
    assert frame.select("user_id", "game_id").is_duplicated().sum() == 0
    assert frame["play_time_hours"].min() >= 0


# --- generic files -------------------------------------------------------------------------


def _write(frame: pl.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
@pytest.mark.parametrize(
    "users, games",
    [([2, 1, 2], [30, 10, 20]), (["u2", "u1", "u2"], ["g30", "g10", "g20"])],
    ids=["int_ids", "string_ids"],
)
def test_read_interactions_file_reads_parquet_and_csv(tmp_path, suffix, users, games):
    frame = pl.DataFrame(
        {
            "user_id": users,
            "game_id": games,
            "title": ["C", "A", "B"],
            "play_time_hours": [3.0, 1.0, 2.0],
        }
    )
    raw = read_interactions_file(_write(frame, tmp_path / f"in{suffix}"))
    assert raw.frame.rows() == [
        (users[1], games[1], 1.0, "A"),
        (users[0], games[2], 2.0, "B"),
        (users[0], games[0], 3.0, "C"),
    ]
    assert raw.frame.columns == ["user_id", "game_id", "play_time_hours", "title"]
    assert raw.stats == {"raw_rows": 3, "duplicate_rows_merged": 0}


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_read_interactions_file_missing_required_column_names_it_and_file(tmp_path, suffix):
    path = _write(pl.DataFrame({"user": [1], "game_id": [2]}), tmp_path / f"in{suffix}")
    with pytest.raises(InteractionsFileError) as caught:
        read_interactions_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert "missing required column(s) user_id;" in message


def test_read_interactions_file_missing_both_required_columns(tmp_path):
    path = _write(pl.DataFrame({"a": [1], "b": [2]}), tmp_path / "in.parquet")
    expected = r"missing required column\(s\) user_id, game_id"
    with pytest.raises(InteractionsFileError, match=expected):
        read_interactions_file(path)


def test_read_interactions_file_non_numeric_hours_names_column(tmp_path):
    frame = pl.DataFrame(
        {"user_id": [1, 1], "game_id": [1, 2], "play_time_hours": ["1.5", "a lot"]}
    )
    path = _write(frame, tmp_path / "in.csv")
    with pytest.raises(InteractionsFileError, match="play_time_hours") as caught:
        read_interactions_file(path)
    assert str(path) in str(caught.value)
    assert "data row 2" in str(caught.value) and "'a lot'" in str(caught.value)


def test_read_interactions_file_defaults_for_absent_optional_columns(tmp_path):
    path = _write(pl.DataFrame({"user_id": [5, 4], "game_id": [100, 7]}), tmp_path / "in.parquet")
    frame = read_interactions_file(path).frame
    assert "timestamp" not in frame.columns
    assert frame["play_time_hours"].dtype == pl.Float64
    assert frame.select("user_id", "game_id", "play_time_hours", "title").rows() == [
        (4, 7, 0.0, "7"),
        (5, 100, 0.0, "100"),
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_read_interactions_file_merges_duplicate_pairs(tmp_path, suffix):
    frame = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2],
            "game_id": [9, 9, 9, 9],
            "play_time_hours": [1.0, 2.5, 0.5, 4.0],
            "timestamp": [
                datetime(2024, 1, 5),
                datetime(2024, 3, 1),
                datetime(2023, 12, 31),
                datetime(2022, 6, 1),
            ],
        }
    )
    raw = read_interactions_file(_write(frame, tmp_path / f"in{suffix}"))
    out = raw.frame
    assert out["timestamp"].dtype.is_temporal()
    rows = out.select(
        "user_id", "game_id", "play_time_hours", pl.col("timestamp").cast(pl.Datetime("us"))
    ).rows()
    assert rows == [(1, 9, 4.0, datetime(2024, 3, 1)), (2, 9, 4.0, datetime(2022, 6, 1))]
    assert raw.stats == {"raw_rows": 4, "duplicate_rows_merged": 2}


def test_read_interactions_file_reads_gzipped_csv(tmp_path):
    path = tmp_path / "in.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("user_id,game_id,play_time_hours\n1,2,3.5\n1,2,0.5\n")
    frame = read_interactions_file(path).frame
    assert frame.select("user_id", "game_id", "play_time_hours").rows() == [(1, 2, 4.0)]


def test_read_interactions_file_missing_empty_and_unknown_type(tmp_path):
    missing = tmp_path / "missing.parquet"
    with pytest.raises(InteractionsFileError, match="file not found") as caught:
        read_interactions_file(missing)
    assert str(missing) in str(caught.value)

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InteractionsFileError, match="empty") as caught:
        read_interactions_file(empty)
    assert str(empty) in str(caught.value)

    other = tmp_path / "data.json"
    other.write_text("{}")
    with pytest.raises(InteractionsFileError, match="unknown file type"):
        read_interactions_file(other)


def test_read_interactions_file_corrupt_parquet_is_a_file_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(InteractionsFileError, match="cannot read as a table") as caught:
        read_interactions_file(path)
    assert str(path) in str(caught.value)


def test_read_interactions_file_keeps_distinct_csv_ids_with_leading_zeros(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("user_id,game_id,play_time_hours\n001,007,1.0\n1,7,2.0\n", encoding="utf-8")
    frame = read_interactions_file(path).frame
    assert frame.height == 2
    assert sorted(map(str, frame["game_id"])) == ["007", "7"]
