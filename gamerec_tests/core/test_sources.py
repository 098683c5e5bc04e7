import gzip
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from gamerec_assets.core.features import index_interactions
from gamerec_assets.core.settings import Source
from gamerec_assets.core.sources import (
    InteractionsFileError,
    load_source,
    load_test_pairs,
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
    assert "line 3, column 3 (behaviour)" in message and "'played'" in message
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


def test_read_steam200k_unparseable_value_names_file_line_and_column(tmp_path):
    path = tmp_path / "steam.csv"
    path.write_text('1,"A",play,2.0,0\n1,"B",play,lots,0\n', encoding="utf-8")
    with pytest.raises(InteractionsFileError) as caught:
        read_steam200k(path)
    assert str(caught.value) == (
        f"{path}: line 2, column 4 (value): expected a number (hours for play, 1 for purchase), "
        "got 'lots' (1 such row)"
    )


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


# --- bad input: every case names the file, the row or column, and what was expected -------


def _steam(tmp_path: Path, text: str, name: str = "steam.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(reader, path: Path) -> str:
    with pytest.raises(InteractionsFileError) as caught:
        reader(path)
    assert caught.value.path == str(path)
    return str(caught.value)


@pytest.mark.parametrize(
    "name, text",
    [("steam.csv", "\n\n"), ("steam.csv.gz", "")],
    ids=["blank-lines-only", "gzip-of-nothing"],
)
def test_read_steam200k_without_rows_names_file(tmp_path, name, text):
    path = _steam(tmp_path, text, name)
    assert _error(read_steam200k, path) == (
        f"{path}: no rows (expected lines of user id, quoted title, purchase|play, number, 0; "
        "the file has none)"
    )


@pytest.mark.parametrize(
    "text, line, found",
    [
        ('1,"A",play,1.0\n2,"B",play,2.0,0\n', 1, 4),  # short first line
        ('1,"A",play,1.0,0\n1,"B",play,2.0,0\n2,"C",play\n', 3, 3),  # short later line
        ('1,"A",play,1.0,0\n2,"B",play,2.0,0,7\n', 2, 6),  # one field too many
        ('1,"A",play,1.0,0\n\n2,"Half, Life",play,2.0,0,\n', 3, 6),  # blank line still counted
    ],
    ids=["too-few-first", "too-few-later", "too-many", "after-blank-line"],
)
def test_read_steam200k_wrong_field_count_names_the_line(tmp_path, text, line, found):
    path = _steam(tmp_path, text)
    assert _error(read_steam200k, path) == (
        f"{path}: line {line}: expected 5 comma-separated fields (user id, quoted title, "
        f"purchase|play, number, 0), found {found}"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        (',"A",play,1.0,0\n', "line 1, column 1 (user_id): expected a value"),
        (
            '1,"A",play,1.0,0\n"  ","B",play,1.0,0\n',
            "line 2, column 1 (user_id): expected a user id",
        ),
        ('1,"A",play,1.0,0\n1,"",play,1.0,0\n', "line 2, column 2 (title): expected a game title"),
        ('1,"A",,1.0,0\n', "line 1, column 3 (behaviour): expected a value"),
    ],
    ids=["null-user", "blank-user", "empty-title", "empty-behaviour"],
)
def test_read_steam200k_empty_key_names_line_and_column(tmp_path, text, expected):
    path = _steam(tmp_path, text)
    assert _error(read_steam200k, path).startswith(f"{path}: {expected}")


@pytest.mark.parametrize("value", ["-2.5", "nan", "inf", "-inf"])
def test_read_steam200k_invalid_hours_names_line_and_column(tmp_path, value):
    path = _steam(tmp_path, f'1,"A",purchase,1.0,0\n1,"A",play,{value},0\n')
    assert _error(read_steam200k, path) == (
        f"{path}: line 2, column 4 (value): expected a finite number >= 0 (hours played), "
        f"got {float(value)!r} (1 such row)"
    )


def test_read_steam200k_negative_hours_cannot_hide_in_a_sum(tmp_path):
    path = _steam(tmp_path, '1,"A",play,6.0,0\n1,"A",play,-5.0,0\n')
    assert "line 2, column 4 (value): expected a finite number >= 0" in _error(read_steam200k, path)


def _write_csv_text(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["in.csv", "in.csv.gz"])
def test_read_interactions_file_header_only_csv_names_file(tmp_path, name):
    path = tmp_path / name
    header = "user_id,game_id,play_time_hours\n"
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(header)
    else:
        path.write_text(header, encoding="utf-8")
    assert _error(read_interactions_file, path) == (
        f"{path}: no interaction rows (expected a header line and at least one data row)"
    )


def test_read_interactions_file_zero_row_parquet_names_file(tmp_path):
    path = tmp_path / "in.parquet"
    pl.DataFrame(
        {"user_id": [], "game_id": [], "play_time_hours": []},
        schema={"user_id": pl.Int64, "game_id": pl.Int64, "play_time_hours": pl.Float64},
    ).write_parquet(path)
    assert _error(read_interactions_file, path) == f"{path}: no interaction rows (expected rows)"


@pytest.mark.parametrize(
    "rows, expected",
    [
        (
            "1,10,1.0\n,11,2.0\n",
            "data row 2 (line 3), column user_id: expected a user id, got an empty value",
        ),
        (
            '1,10,1.0\n"",11,2.0\n',
            "data row 2 (line 3), column user_id: expected a user id, got ''",
        ),
        (
            "1,10,1.0\n2,  ,2.0\n",
            "data row 2 (line 3), column game_id: expected a game id, got '  '",
        ),
        (
            "1,10,1.0\n2,11,\n",
            "data row 2 (line 3), column play_time_hours: expected a finite number >= 0 "
            "(hours played), got an empty value",
        ),
    ],
    ids=["null-user", "empty-string-user", "blank-game", "empty-hours"],
)
def test_read_interactions_file_empty_value_names_row_and_column(tmp_path, rows, expected):
    path = _write_csv_text(tmp_path, "user_id,game_id,play_time_hours\n" + rows)
    assert _error(read_interactions_file, path) == f"{path}: {expected} (1 such row)"


def test_read_interactions_file_null_id_in_parquet_names_row(tmp_path):
    path = tmp_path / "in.parquet"
    pl.DataFrame({"user_id": [1, 2, 3], "game_id": [10, None, None]}).write_parquet(path)
    assert _error(read_interactions_file, path) == (
        f"{path}: row 2, column game_id: expected a game id, got an empty value (2 such rows)"
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("bad", [-3.0, float("nan"), float("inf"), float("-inf")])
def test_read_interactions_file_invalid_hours_names_row_and_column(tmp_path, suffix, bad):
    frame = pl.DataFrame(
        {
            "user_id": [1, 1, 2, 2],
            "game_id": [10, 11, 10, 11],
            "play_time_hours": [2.0, bad, 1.0, bad],
        }
    )
    path = _write(frame, tmp_path / f"in{suffix}")
    row = "data row 2 (line 3)" if suffix == ".csv" else "row 2"
    assert _error(read_interactions_file, path) == (
        f"{path}: {row}, column play_time_hours: expected a finite number >= 0 (hours played), "
        f"got {bad!r} (2 such rows)"
    )


def test_read_interactions_file_negative_hours_cannot_hide_in_a_merge(tmp_path):
    path = _write_csv_text(tmp_path, "user_id,game_id,play_time_hours\n1,10,6.0\n1,10,-5.0\n")
    assert "data row 2 (line 3), column play_time_hours" in _error(read_interactions_file, path)


def test_read_interactions_file_text_hours_in_parquet_names_row(tmp_path):
    frame = pl.DataFrame({"user_id": [1, 2], "game_id": [3, 4], "play_time_hours": ["1", "x"]})
    path = _write(frame, tmp_path / "in.parquet")
    assert _error(read_interactions_file, path) == (
        f"{path}: row 2, column play_time_hours: expected a number (hours played), got 'x'"
    )


def test_read_interactions_file_blank_lines_are_skipped_and_rows_keep_their_line(tmp_path):
    path = _write_csv_text(tmp_path, "user_id,game_id,play_time_hours\n1,10,1.0\n\n2,11,-1\n\n")
    assert "data row 3 (line 4), column play_time_hours" in _error(read_interactions_file, path)
    path.write_text("user_id,game_id,play_time_hours\n1,10,1.0\n\n2,11,2.0\n\n", encoding="utf-8")
    assert read_interactions_file(path).frame.select("user_id", "game_id").rows() == [
        (1, 10),
        (2, 11),
    ]


def test_read_interactions_file_csv_row_with_too_many_fields_names_the_line(tmp_path):
    path = _write_csv_text(tmp_path, "user_id,game_id,play_time_hours\n1,10,1.0\n2,11,2.0,9\n")
    assert _error(read_interactions_file, path) == (
        f"{path}: line 3: expected 3 comma-separated fields (as in the header: user_id, "
        "game_id, play_time_hours), found 4"
    )


# --- ids of every width and titles of every alphabet round-trip ----------------------------

WIDE_IDS = ["9223372036854775807", "-9223372036854775808", str(2**62), "-1", "0", "42"]


def test_int64_extreme_and_negative_ids_round_trip_to_distinct_users_and_games(tmp_path):
    lines = [f"{user},{game},1.0" for user, game in zip(WIDE_IDS, reversed(WIDE_IDS), strict=True)]
    path = _write_csv_text(tmp_path, "user_id,game_id,play_time_hours\n" + "\n".join(lines))
    frame = read_interactions_file(path).frame
    assert frame["user_id"].dtype == pl.Int64 and frame["game_id"].dtype == pl.Int64
    indexed = index_interactions(frame)
    assert indexed.n_users == indexed.n_items == len(WIDE_IDS)
    assert sorted(indexed.interactions["user_id"].to_list()) == sorted(map(int, WIDE_IDS))
    assert indexed.catalog["game_id"].to_list() == sorted(map(int, WIDE_IDS))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_text_ids_of_any_width_and_leading_zeros_stay_distinct(tmp_path, suffix):
    """One id beyond Int64 makes the whole column text; '007', '7' and '+7' stay three ids."""
    users = ["7", "007", "+7", str(2**64), "player-ü"]
    games = ["g", "007", "7", "+7", str(-(2**63) - 1)]
    frame = pl.DataFrame({"user_id": users, "game_id": games, "play_time_hours": [1.0] * 5})
    raw = read_interactions_file(_write(frame, tmp_path / f"in{suffix}")).frame
    assert raw["user_id"].dtype == pl.String and raw["game_id"].dtype == pl.String
    indexed = index_interactions(raw)
    assert indexed.n_users == indexed.n_items == 5
    assert set(indexed.interactions.select("user_id", "game_id").rows()) == set(
        zip(users, games, strict=True)
    )


def test_read_steam200k_text_and_zero_padded_user_ids_stay_distinct(tmp_path):
    path = _steam(tmp_path, '7,"A",play,1.0,0\n007,"A",play,2.0,0\nabc,"A",play,3.0,0\n')
    frame = read_steam200k(path).frame
    assert frame["user_id"].dtype == pl.String
    assert sorted(frame.select("user_id", "play_time_hours").rows()) == [
        ("007", 2.0),
        ("7", 1.0),
        ("abc", 3.0),
    ]


TITLES = ['Tom Clancy\'s "Rainbow" Six', "ポケモン", "Café 🎮, Deluxe", "  spaced  ", 'a,b,"c"']


def test_read_steam200k_unicode_and_quoted_titles_reach_the_catalog_exactly(tmp_path):
    quoted = ['"' + title.replace('"', '""') + '"' for title in TITLES]
    path = _steam(tmp_path, "".join(f"1,{title},play,1.0,0\n" for title in quoted))
    catalog = index_interactions(read_steam200k(path).frame).catalog
    assert sorted(catalog["title"].to_list()) == sorted(TITLES)
    assert catalog["title"].to_list() == catalog["game_id"].to_list()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_interactions_file_unicode_and_quoted_titles_reach_the_catalog_exactly(
    tmp_path, suffix
):
    frame = pl.DataFrame(
        {"user_id": [1] * len(TITLES), "game_id": list(range(len(TITLES))), "title": TITLES}
    )
    catalog = index_interactions(
        read_interactions_file(_write(frame, tmp_path / f"in{suffix}")).frame
    ).catalog
    assert catalog.select("game_id", "title").rows() == list(enumerate(TITLES))


# --- a predefined test file, read like the source and held to it ---------------------------------


def _source_and_test(tmp_path, test_rows: str, name: str = "test.csv"):
    (tmp_path / "train.csv").write_text("user_id,game_id\n1,10\n1,11\n2,10\n2,12\n")
    (tmp_path / name).write_text(test_rows)
    source = Source(
        kind="interactions", path=str(tmp_path / "train.csv"), test_path=str(tmp_path / name)
    )
    return source, index_interactions(load_source(source).frame)


def test_the_test_file_gets_the_sources_indices(tmp_path):
    source, indexed = _source_and_test(tmp_path, "user_id,game_id\n2,11\n1,12\n")
    test = load_test_pairs(source, indexed)
    assert test.columns == indexed.interactions.columns
    assert test.select("user_id", "game_id", "user_idx", "item_idx").rows() == [
        (1, 12, 0, 2),
        (2, 11, 1, 1),
    ]


@pytest.mark.parametrize(
    "rows, message",
    [
        ("user_id,game_id\n2,11\n3,10\n", "data row 2 (line 3): player 3 is not in the source"),
        ("user_id,game_id\n1,99\n", "data row 1 (line 2): game 99 is not in the source"),
        (
            "user_id,game_id\n2,11\n2,12\n",
            "data row 2 (line 3): the pair (player 2, game 12) is in the source too",
        ),
        ("user_id,game_id\n", "no interaction rows"),
        ("", "file is empty"),
    ],
    ids=["unknown-player", "unknown-game", "trained-pair", "header-only", "empty"],
)
def test_a_bad_test_file_names_the_file_and_row(tmp_path, rows, message):
    source, indexed = _source_and_test(tmp_path, rows)
    with pytest.raises(InteractionsFileError) as caught:
        load_test_pairs(source, indexed)
    assert str(tmp_path / "test.csv") in str(caught.value) and message in str(caught.value)
