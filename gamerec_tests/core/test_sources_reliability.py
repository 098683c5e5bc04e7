"""Input that used to be read silently wrong: text timestamps, true/false hours, sums that
overflow, damaged bytes, and a file replaced while it was being read."""

import gzip
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from gamerec_assets.core.features import index_interactions
from gamerec_assets.core.settings import SettingError, Source
from gamerec_assets.core.sources import (
    InteractionsFileError,
    heldout_snapshot_path,
    load_source,
    load_test_pairs,
    read_interactions_file,
    read_steam200k,
    snapshot_path,
    snapshot_source,
    snapshot_test,
)
from gamerec_assets.core.splits import leave_one_out_split


def _csv(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path, **options) -> str:
    with pytest.raises(InteractionsFileError) as caught:
        read_interactions_file(path, **options)
    return str(caught.value)


def _times(path: Path, **options) -> list[datetime]:
    return read_interactions_file(path, **options).frame["timestamp"].to_list()


# --- timestamps ----------------------------------------------------------------------------


def test_iso_text_timestamps_become_times_in_every_usual_spelling(tmp_path):
    path = _csv(
        tmp_path,
        "user_id,game_id,timestamp\n"
        "1,1,2019-12-31\n"
        "1,2,2019-12-31T10:00:00\n"
        "1,3,2019-12-31 10:00:00.250\n"
        "1,4,2019-12-31T10:00:00Z\n"
        "1,5,2019-12-31T12:00:00+02:00\n"
        "1,6,2019-12-31T10:30\n"
        "1,7,\n",
    )
    frame = read_interactions_file(path).frame
    assert frame["timestamp"].dtype == pl.Datetime("us")
    assert frame["timestamp"].to_list() == [
        datetime(2019, 12, 31),
        datetime(2019, 12, 31, 10),
        datetime(2019, 12, 31, 10, 0, 0, 250_000),
        datetime(2019, 12, 31, 10),
        datetime(2019, 12, 31, 10),  # +02:00 converted to UTC
        datetime(2019, 12, 31, 10, 30),
        None,  # empty: no time, never held out by `latest` unless nothing else is
    ]


def test_text_that_is_not_iso_is_refused_naming_row_and_the_setting(tmp_path):
    path = _csv(
        tmp_path, "user_id,game_id,timestamp\n1,1,2019-12-31\n1,2,12/31/2019\n2,1,1/2/2020\n"
    )
    assert _error(path) == (
        f"{path}: data row 2 (line 3), column timestamp: expected an ISO 8601 date or time "
        "(2019-12-31, 2019-12-31T23:59:59, optionally with an offset such as +02:00 or Z); for "
        "another layout set GAMEREC_TIMESTAMP_FORMAT, got '12/31/2019' (2 such rows)"
    )


def test_a_timestamp_format_reads_other_layouts_and_refuses_what_does_not_fit(tmp_path):
    path = _csv(tmp_path, "user_id,game_id,timestamp\n1,1,12/31/2019\n1,2,1/2/2020\n")
    assert _times(path, timestamp_format="%m/%d/%Y") == [
        datetime(2019, 12, 31),
        datetime(2020, 1, 2),
    ]
    message = _error(path, timestamp_format="%d/%m/%Y")
    assert (
        "data row 1 (line 2), column timestamp: expected a time in the layout %d/%m/%Y" in message
    )
    numbers = _csv(tmp_path, "user_id,game_id,timestamp\n1,1,20191231\n", "n.csv")
    assert _times(numbers, timestamp_format="%Y%m%d") == [datetime(2019, 12, 31)]


def test_a_bad_timestamp_format_setting_is_one_line():
    with pytest.raises(SettingError, match=r"GAMEREC_TIMESTAMP_FORMAT='MM/DD/YYYY' .*: expected"):
        Source(kind="interactions", path="x.csv", timestamp_format="MM/DD/YYYY")


def test_unix_times_are_seconds_unless_said_otherwise_and_a_wrong_unit_is_named(tmp_path):
    seconds = _csv(tmp_path, "user_id,game_id,timestamp\n1,1,1577836800\n1,2,1577836800.5\n")
    assert _times(seconds) == [datetime(2020, 1, 1), datetime(2020, 1, 1, 0, 0, 0, 500_000)]
    millis = _csv(tmp_path, "user_id,game_id,timestamp\n1,1,1577836800000\n", "ms.csv")
    assert _error(millis) == (
        f"{millis}: data row 1 (line 2), column timestamp: 1577836800000 read as unix_s is "
        "not a time between 1900 and 2200 (1 such row); if they are unix_ms, set "
        "GAMEREC_TIMESTAMP_FORMAT=unix_ms"
    )
    assert _times(millis, timestamp_format="unix_ms") == [datetime(2020, 1, 1)]


def test_parquet_timestamps_as_text_as_times_with_a_zone_and_as_dates(tmp_path):
    text = pl.DataFrame({"user_id": [1, 1], "game_id": [1, 2], "timestamp": ["2020-01-02", "x"]})
    text.write_parquet(tmp_path / "text.parquet")
    assert "row 2, column timestamp: expected an ISO 8601" in _error(tmp_path / "text.parquet")
    zoned = pl.DataFrame(
        {
            "user_id": [1],
            "game_id": [1],
            "timestamp": pl.Series([datetime(2020, 1, 1, 12)]).dt.replace_time_zone("Europe/Paris"),
        }
    )
    zoned.write_parquet(tmp_path / "zoned.parquet")
    assert _times(tmp_path / "zoned.parquet") == [datetime(2020, 1, 1, 11)]  # in UTC
    dates = pl.DataFrame(
        {"user_id": [1], "game_id": [1], "timestamp": [datetime(2020, 1, 1).date()]}
    )
    dates.write_parquet(tmp_path / "dates.parquet")
    assert _times(tmp_path / "dates.parquet") == [datetime(2020, 1, 1)]
    flags = pl.DataFrame({"user_id": [1], "game_id": [1], "timestamp": [True]})
    flags.write_parquet(tmp_path / "flags.parquet")
    assert "column timestamp holds Boolean values" in _error(tmp_path / "flags.parquet")


def test_the_latest_split_holds_out_the_latest_game_not_the_last_in_text_order(tmp_path):
    """The issue's case: as text, '12/31/2019' sorts after '01/05/2020'."""

    def held_out(text: str, **options) -> list[int]:
        frame = read_interactions_file(_csv(tmp_path, text), **options).frame
        return (
            leave_one_out_split(index_interactions(frame).interactions, "latest")
            .val["item_idx"]
            .to_list()
        )

    us_dates = "user_id,game_id,timestamp\n1,10,12/31/2019\n1,11,01/05/2020\n1,12,06/30/2019\n"
    assert held_out(us_dates, timestamp_format="%m/%d/%Y") == [1]  # game 11, 2020-01-05
    offsets = (
        "user_id,game_id,timestamp\n"
        "2,10,2019-12-31T23:00:00+00:00\n"
        "2,11,2020-01-01T00:30:00+02:00\n"  # 2019-12-31T22:30 UTC: before game 10
    )
    assert held_out(offsets) == [0]


# --- hours ---------------------------------------------------------------------------------


def test_true_false_hours_in_parquet_are_refused_naming_the_row(tmp_path):
    frame = pl.DataFrame(
        {"user_id": [1, 1, 2], "game_id": [1, 2, 1], "play_time_hours": [None, True, False]}
    )
    frame.write_parquet(tmp_path / "flags.parquet")
    assert _error(tmp_path / "flags.parquet") == (
        f"{tmp_path / 'flags.parquet'}: row 2, column play_time_hours: expected a number (hours "
        "played), got True: the column holds Boolean values (2 such rows); store hours played "
        "as numbers"
    )


def test_hours_whose_sum_overflows_name_the_rows_summed(tmp_path):
    path = _csv(
        tmp_path,
        "user_id,game_id,play_time_hours\n1,5,1e308\n2,5,1\n1,5,1.5e308\n1,6,2\n",
    )
    assert _error(path) == (
        f"{path}: user 1, game 5: the hours of its 2 rows (data row 1 (line 2), data row 3 "
        "(line 4)) add up to more than a 64-bit float holds (infinity); expected a finite total "
        "(1 such (user, game))"
    )
    steam = _csv(tmp_path, '1,"A",play,1e308,0\n1,"A",play,1.5e308,0\n1,"B",play,1,0\n', "s.csv")
    with pytest.raises(
        InteractionsFileError,
        match=r"user 1, game 'A': the hours of its 2 rows "
        r"\(line 1, line 2\) add up to more than",
    ):
        read_steam200k(steam)


# --- bytes and paths -----------------------------------------------------------------------


def test_a_gzip_file_cut_short_is_named_as_such(tmp_path):
    rows = "user_id,game_id,play_time_hours\n" + "".join(f"{u},{u % 7},1\n" for u in range(5000))
    whole = gzip.compress(rows.encode())
    (tmp_path / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    assert "the gzip data is cut short or damaged" in _error(tmp_path / "cut.csv.gz")
    steam = gzip.compress("".join(f'{u},"G{u % 9}",play,1.0,0\n' for u in range(5000)).encode())
    (tmp_path / "steam.csv.gz").write_bytes(steam[: len(steam) // 2])
    with pytest.raises(InteractionsFileError, match=r"steam\.csv\.gz: the gzip data is cut short"):
        read_steam200k(tmp_path / "steam.csv.gz")


def test_text_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("user_id,game_id,title\n1,10,Ok\n1,11,Café\n".encode("latin-1"))
    assert _error(path) == (f"{path}: line 3: not UTF-8 text (byte 0xe9); save the file as UTF-8")
    steam = tmp_path / "steam.csv"
    steam.write_bytes('1,"Ok",play,1.0,0\n1,"Café",play,1.0,0\n'.encode("latin-1"))
    with pytest.raises(InteractionsFileError, match=r"line 2: not UTF-8 text \(byte 0xe9\)"):
        read_steam200k(steam)


def test_a_folder_or_a_missing_path_says_which(tmp_path):
    assert _error(tmp_path) == (
        f"{tmp_path}: a folder, not a file (set GAMEREC_SOURCE_PATH to the interactions file)"
    )
    assert _error(tmp_path / "nope.csv") == (
        f"{tmp_path / 'nope.csv'}: file not found (set GAMEREC_SOURCE_PATH to the file)"
    )


def test_titles_that_look_like_numbers_stay_as_written(tmp_path):
    path = _csv(tmp_path, "user_id,game_id,title\n1,10,007\n1,11,1942\n")
    assert read_interactions_file(path).frame["title"].to_list() == ["007", "1942"]


# --- the input read once -------------------------------------------------------------------


def test_what_is_parsed_is_the_copy_of_the_bytes_fingerprinted(tmp_path):
    path = _csv(tmp_path, "user_id,game_id,play_time_hours\n1,10,1\n1,11,2\n2,10,3\n")
    source = Source(kind="interactions", path=str(path))
    folder = tmp_path / "data" / "source"
    fingerprint = snapshot_source(source, folder)
    path.write_text("user_id,game_id,play_time_hours\n9,99,1\n")  # replaced after fingerprinting
    snapshot = snapshot_path(folder, source, fingerprint)
    raw = load_source(source, snapshot)
    assert sorted(raw.frame["user_id"].to_list()) == [1, 1, 2]  # the bytes fingerprinted
    assert raw.description == f"interactions:{path}"
    second = snapshot_source(source, folder)
    assert second != fingerprint and snapshot_path(folder, source, second).is_file()
    assert load_source(source, snapshot_path(folder, source, second)).frame[
        "user_id"
    ].to_list() == [9]
    path.write_text("user_id,game_id,play_time_hours\n1,10,-1\n")
    third = snapshot_source(source, folder)  # a third version: the oldest copy goes
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        snapshot_path(folder, source, f).name for f in (second, third)
    )
    with pytest.raises(InteractionsFileError) as caught:  # errors name the user's file
        load_source(source, snapshot_path(folder, source, third))
    assert str(caught.value).startswith(f"{path}: data row 1 (line 2), column play_time_hours")


def test_the_test_file_is_read_from_its_fingerprinted_copy_too(tmp_path):
    path = _csv(tmp_path, "user_id,game_id\n1,10\n1,11\n2,10\n2,12\n3,11\n3,12\n")
    test = _csv(tmp_path, "user_id,game_id\n1,12\n2,11\n", "test.csv")
    source = Source(kind="interactions", path=str(path), test_path=str(test))
    folder = tmp_path / "data" / "source"
    fingerprint = snapshot_test(source, folder)
    test.write_text("user_id,game_id\n3,10\n")  # replaced after fingerprinting
    indexed = index_interactions(load_source(source).frame)
    copy = heldout_snapshot_path(folder, source, fingerprint)
    pairs = load_test_pairs(source, indexed, copy)
    assert sorted(pairs["user_id"].to_list()) == [1, 2]  # the bytes fingerprinted
    assert load_test_pairs(source, indexed)["user_id"].to_list() == [3]  # the live file
    assert snapshot_test(replace(source, test_path=None), folder) is None
    copy.write_text("user_id,game_id\n1,10\n")  # a pair also trained on, named by its file
    with pytest.raises(InteractionsFileError) as caught:
        load_test_pairs(source, indexed, copy)
    assert str(caught.value).startswith(f"{test}: ") and "in the source too" in str(caught.value)


@pytest.mark.parametrize("make", ["missing", "folder"])
def test_a_missing_test_file_names_its_own_variable(tmp_path, make):
    path = _csv(tmp_path, "user_id,game_id\n1,10\n")
    test = tmp_path / "test.csv"
    if make == "folder":
        test.mkdir()
    source = Source(kind="interactions", path=str(path), test_path=str(test))
    with pytest.raises(InteractionsFileError, match="set GAMEREC_TEST_PATH to"):
        snapshot_test(source, tmp_path / "source")


def test_a_file_that_changes_while_it_is_copied_is_refused(tmp_path, monkeypatch):
    from gamerec_assets.core import sources

    path = _csv(tmp_path, "user_id,game_id\n1,10\n")
    original = sources._copy_hashing

    def copy_while_someone_writes(source, target):
        original(source, target)
        path.write_text("user_id,game_id\n1,10\n2,20\n")
        return original(source, target)

    monkeypatch.setattr(sources, "_copy_hashing", copy_while_someone_writes)
    with pytest.raises(InteractionsFileError, match="changed while it was being read"):
        snapshot_source(Source(kind="interactions", path=str(path)), tmp_path / "source")
    assert not any((tmp_path / "source").iterdir())
