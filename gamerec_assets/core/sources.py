"""Readers that turn raw interaction exports into one canonical table.

Whatever the source, the result has one row per distinct (user, game) with the columns
`user_id`, `game_id` (original ids, any sortable type), `title`, `play_time_hours` and, where the
source has it, `timestamp`. Every problem a reader can see raises `InteractionsFileError`,
naming the file, the row (and line) or column, and what was expected:
- structure: a missing or empty file, no data rows, missing columns, a Steam-200k line with
  the wrong number of fields, a value of the wrong type (text where hours should be);
- values: an empty user or game id, hours that are empty, negative, NaN or infinite, hours
  stored as true/false, an unknown Steam-200k behaviour, a timestamp that is not a time;
- bytes: a gzip stream cut short, text that is not UTF-8 (naming the line);
- sums: several rows of one (user, game) whose hours add up to infinity (naming the rows).
Values are checked row by row before duplicates are merged, so a bad row cannot hide in a sum.
Ids may be integers of any width or text (leading zeros are kept: '007' and '7' are two
ids); blank lines in a CSV are skipped. The asset checks on `interactions` stay as a second
line of defence for sources that do not go through these readers (the synthetic one).

Timestamps become a Datetime column (microseconds, UTC when an offset is given), so the
`latest` split sorts times, never text: ISO 8601 text by default (`2019-12-31`,
`2019-12-31T23:59:59.5`, a space for the T, an offset or Z), another layout through
GAMEREC_TIMESTAMP_FORMAT (`%m/%d/%Y`), numbers as Unix seconds (or `unix_ms`, `unix_us`,
`unix_ns`). A value that does not parse, or a number that would fall outside 1900-2200, is
an error naming its row.

The input is read once: `snapshot_source` copies the file into DATA_DIR/source under the
SHA-256 of the bytes copied, and that hash is the input's fingerprint; `load_source` parses the
copy, so the version recorded and the content parsed cannot disagree, whatever happens to the
original file meanwhile.
"""

import codecs
import csv
import gzip
import hashlib
import math
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import polars as pl

from gamerec_assets.core.features import IndexedInteractions
from gamerec_assets.core.io import atomic_path, config_fingerprint, file_sha256
from gamerec_assets.core.settings import UNIX_TIME_UNITS, Source
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions

STEAM200K_COLUMNS = ("user_id", "title", "behaviour", "value", "unused")
STEAM200K_BEHAVIOURS = ("purchase", "play")
STEAM200K_LAYOUT = "user id, quoted title, purchase|play, number, 0"
REQUIRED_COLUMNS = ("user_id", "game_id")
OPTIONAL_COLUMNS = ("play_time_hours", "timestamp", "title")
HOURS_EXPECTED = "expected a finite number >= 0 (hours played)"
ROW = "_row"
ISO_NAIVE = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")
ISO_WITH_OFFSET = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")
ISO_EXPECTED = (
    "expected an ISO 8601 date or time (2019-12-31, 2019-12-31T23:59:59, optionally with an "
    "offset such as +02:00 or Z)"
)
UNIX_SECONDS_RANGE = (-2_208_988_800, 7_258_118_400)  # 1900-01-01 .. 2200-01-01 UTC
SNAPSHOTS_KEPT = 2
TEST_PATH_VARIABLE = "GAMEREC_TEST_PATH"


class InteractionsFileError(ValueError):
    """An input file that cannot be read as interactions; the message names file and problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class RawInteractions:
    """Canonical interactions plus what reading them did, for the asset's metadata."""

    frame: pl.DataFrame
    description: str
    stats: dict[str, int] = field(default_factory=dict)


def _require_file(path: Path, variable: str = "GAMEREC_SOURCE_PATH") -> None:
    if not path.exists():
        raise InteractionsFileError(path, f"file not found (set {variable} to the file)")
    if path.is_dir():
        raise InteractionsFileError(
            path, f"a folder, not a file (set {variable} to the interactions file)"
        )
    if not path.is_file():
        raise InteractionsFileError(path, "not a regular file (a device or a pipe?)")
    if path.stat().st_size == 0:
        raise InteractionsFileError(path, "file is empty (expected interaction rows)")
    if not os.access(path, os.R_OK):
        raise InteractionsFileError(path, "not readable: permission denied")


def _first_line(error: BaseException) -> str:
    """A library's message up to its first line break (polars appends multi-line hints)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _undecodable(path: Path) -> str | None:
    """Why a file cannot be read as text, if that is the problem: a gzip stream that is cut
    short or damaged, or bytes that are not UTF-8 (with the line of the first one)."""
    opener = gzip.open if _is_gzip(path) else open
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as error:
                    line += chunk.count(b"\n", 0, max(error.start, 0))
                    return (
                        f"line {line}: not UTF-8 text (byte 0x{error.object[error.start]:02x}); "
                        "save the file as UTF-8"
                    )
                line += chunk.count(b"\n")
    except (EOFError, OSError, zlib.error) as error:
        return (
            f"the gzip data is cut short or damaged ({_first_line(error)}); copy or download "
            "the file again"
        )
    return None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank record of a CSV file, plain or gzipped.

    A plain Python pass, used only to explain a file already known to be wrong.
    """
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        try:
            for fields in reader:
                if fields:
                    yield reader.line_num, fields
        except (csv.Error, OSError, EOFError):
            return


def _first_ragged_line(path: Path, n_fields: int, skip_lines: int = 0) -> tuple[int, int] | None:
    """(line number, field count) of the first record after `skip_lines` without `n_fields`."""
    return next(
        (
            (line, len(fields))
            for line, fields in _csv_records(path)
            if line > skip_lines and len(fields) != n_fields
        ),
        None,
    )


def _rows(count: int) -> str:
    return "1 such row" if count == 1 else f"{count} such rows"


def _describe(value: object) -> str:
    return "an empty value" if value is None else repr(value)


def _is_blank_id(column: str, dtype: pl.DataType) -> pl.Expr:
    """An id that is missing: null, or text that is empty or only whitespace."""
    blank = pl.col(column).is_null()
    if dtype == pl.String:
        blank = blank | (pl.col(column).str.strip_chars() == "")
    return blank


def _is_invalid_hours(column: str) -> pl.Expr:
    hours = pl.col(column)
    return hours.is_null() | hours.is_nan() | hours.is_infinite() | (hours < 0)


# --- Steam-200k ------------------------------------------------------------------------------


def read_steam200k(path: str | Path) -> RawInteractions:
    """Read the Steam-200k CSV (no header: user id, title, purchase|play, value, 0; plain or .gz).

    Each line must have the five fields; the fifth is not used. User ids are kept as integers
    when every one is a plain integer, else as text. Exact duplicate rows are dropped and
    counted. Each (user, title) becomes one interaction whose `play_time_hours` is the sum of
    its `play` rows (0 when the game was only purchased). The title is the game's id, since the
    format has no other. Errors name the line (the format has one record per line).
    """
    path = Path(path)
    _require_file(path)
    schema = dict.fromkeys(STEAM200K_COLUMNS, pl.String)
    try:
        rows = pl.read_csv(path, has_header=False, schema=schema, quote_char='"')
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError) as error:
        _raise_if_undecodable(path)
        _raise_if_steam_ragged(path)
        if next(_csv_records(path), None) is None:
            _raise_no_steam_rows(path)
        raise InteractionsFileError(
            path,
            f"cannot parse as Steam-200k CSV (expected 5 comma-separated fields per line: "
            f"{STEAM200K_LAYOUT}): {_first_line(error)}",
        ) from error

    columns = list(STEAM200K_COLUMNS)
    rows = rows.with_row_index(ROW, offset=1).filter(
        ~pl.all_horizontal(pl.col(columns).is_null())  # blank lines
    )
    if rows.height == 0:
        _raise_no_steam_rows(path)
    _check_steam_fields(path, rows)
    rows = _steam_values(path, rows)
    rows = rows.with_columns(_integer_if_lossless(rows.lazy(), "user_id"))

    keys = ["user_id", "title", "behaviour", "value"]
    deduplicated = rows.select(keys).unique(maintain_order=True)
    played = rows.lazy().filter(pl.col("behaviour") == "play")
    frame = (
        deduplicated.group_by("user_id", "title")
        .agg(
            play_time_hours=pl.when(pl.col("behaviour") == "play")
            .then(pl.col("value"))
            .otherwise(0.0)
            .sum()
        )
        .with_columns(game_id=pl.col("title"))
        .select("user_id", "game_id", "title", "play_time_hours")
        .sort("user_id", "game_id")
    )
    contributing = played.select(
        "user_id", ROW, game_id=pl.col("title"), play_time_hours=pl.col("value")
    )
    _refuse_infinite_sums(path, frame, contributing, lambda row: f"line {row}")
    return RawInteractions(
        frame=frame,
        description=f"steam200k:{path}",
        stats={
            "raw_rows": rows.height,
            "duplicate_rows_dropped": rows.height - deduplicated.height,
        },
    )


def _raise_if_undecodable(path: Path) -> None:
    problem = _undecodable(path)
    if problem is not None:
        raise InteractionsFileError(path, problem)


def _refuse_infinite_sums(
    path: Path, merged: pl.DataFrame, rows: pl.LazyFrame, label: Callable[[int], str]
) -> None:
    """Each (user, game)'s hours are a sum of its rows: one that overflows to infinity is an
    error naming the rows summed (`rows`: user_id, game_id, _row; `label` names a row)."""
    overflowed = merged.filter(pl.col("play_time_hours").is_infinite())
    if overflowed.height == 0:
        return
    user, game = overflowed.row(0, named=True)["user_id"], overflowed["game_id"][0]
    summed = (
        rows.filter((pl.col("user_id") == user) & (pl.col("game_id") == game))
        .select(ROW)
        .collect()[ROW]
        .to_list()
    )
    shown = ", ".join(label(row) for row in summed[:5])
    more = f" and {len(summed) - 5} more" if len(summed) > 5 else ""
    pairs = "1 such (user, game)" if overflowed.height == 1 else f"{overflowed.height} such pairs"
    raise InteractionsFileError(
        path,
        f"user {user!r}, game {game!r}: the hours of its {len(summed)} rows ({shown}{more}) add "
        f"up to more than a 64-bit float holds (infinity); expected a finite total ({pairs})",
    )


def _raise_no_steam_rows(path: Path) -> None:
    raise InteractionsFileError(
        path, f"no rows (expected lines of {STEAM200K_LAYOUT}; the file has none)"
    )


def _raise_if_steam_ragged(path: Path, before_line: int | None = None) -> None:
    ragged = _first_ragged_line(path, len(STEAM200K_COLUMNS))
    if ragged is not None and (before_line is None or ragged[0] <= before_line):
        line, found = ragged
        raise InteractionsFileError(
            path,
            f"line {line}: expected 5 comma-separated fields ({STEAM200K_LAYOUT}), found {found}",
        )


def _first_bad(rows: pl.DataFrame, problem: pl.Expr) -> tuple[dict, int] | None:
    """The first row where `problem` holds, and how many rows it holds on."""
    bad = rows.filter(problem)
    return (bad.row(0, named=True), bad.height) if bad.height else None


def _check_steam_fields(path: Path, rows: pl.DataFrame) -> None:
    """Every line has five fields, a user id and a title, and a known behaviour."""
    columns = list(STEAM200K_COLUMNS)
    incomplete = _first_bad(rows, pl.any_horizontal(pl.col(columns).is_null()))
    if incomplete is not None:
        first, _ = incomplete
        _raise_if_steam_ragged(path, before_line=first[ROW])
        column = next(name for name in columns if first[name] is None)
        number = columns.index(column) + 1
        raise InteractionsFileError(
            path,
            f"line {first[ROW]}, column {number} ({column}): expected a value "
            f"({STEAM200K_LAYOUT}), found an empty field",
        )
    for number, column, what in ((1, "user_id", "a user id"), (2, "title", "a game title")):
        blank = _first_bad(rows, _is_blank_id(column, pl.String))
        if blank is not None:
            first, count = blank
            raise InteractionsFileError(
                path,
                f"line {first[ROW]}, column {number} ({column}): expected {what}, got "
                f"{first[column]!r} ({_rows(count)})",
            )
    unknown = _first_bad(rows, ~pl.col("behaviour").is_in(STEAM200K_BEHAVIOURS))
    if unknown is not None:
        first, count = unknown
        raise InteractionsFileError(
            path,
            f"line {first[ROW]}, column 3 (behaviour): expected 'purchase' or 'play', got "
            f"{first['behaviour']!r} ({_rows(count)})",
        )


def _steam_values(path: Path, rows: pl.DataFrame) -> pl.DataFrame:
    """Column 4 as Float64: a finite number >= 0 on every line (1 for purchase, hours for play)."""
    rows = rows.with_columns(
        _text=pl.col("value"), value=pl.col("value").cast(pl.Float64, strict=False)
    )
    for problem, expected, shown in (
        (pl.col("value").is_null(), "expected a number (hours for play, 1 for purchase)", "_text"),
        (_is_invalid_hours("value"), HOURS_EXPECTED, "value"),
    ):
        bad = _first_bad(rows, problem)
        if bad is not None:
            first, count = bad
            raise InteractionsFileError(
                path,
                f"line {first[ROW]}, column 4 (value): {expected}, got {first[shown]!r} "
                f"({_rows(count)})",
            )
    return rows.drop("_text")


# --- generic Parquet / CSV -------------------------------------------------------------------


def _integer_if_lossless(rows: pl.LazyFrame, column: str) -> pl.Expr:
    """A text id column as Int64 when every value is a plain integer ('42'), else as the text.

    Type inference would turn '007' and '7' into the same integer and silently merge two
    games; keeping text whenever the integer form would lose characters prevents that (so do
    '+7', ' 7' and integers beyond Int64). One streaming pass over the column decides.
    """
    text = pl.col(column)
    as_int = text.cast(pl.Int64, strict=False)
    lossless = (
        rows.select(((as_int.cast(pl.String) == text).fill_null(False) | text.is_null()).all())
        .collect(engine="streaming")
        .item()
    )
    return as_int if lossless else text


def _is_csv(path: Path) -> bool:
    return "".join(path.suffixes[-2:]).lower().endswith((".csv", ".csv.gz"))


def _scan_table(path: Path) -> pl.LazyFrame:
    """A lazy scan of a Parquet or CSV file (gzipped CSV is read eagerly: it cannot be seeked).

    Rows are numbered from 1 in column `_row` (CSV: data rows, the header not counted); blank
    CSV lines are dropped after numbering, so the numbers stay those of the file.
    """
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith((".parquet", ".pq")):
        rows = pl.scan_parquet(path)
        rows.collect_schema()  # fail here, not mid-query, on a file that is not Parquet
        return rows.with_row_index(ROW, offset=1)
    # ids and titles stay text ('007' is not 7; a game called 1942 keeps its title); dates are
    # parsed by `_timestamps`, not guessed
    text_columns = (*REQUIRED_COLUMNS, "title")
    options = dict(
        try_parse_dates=False, schema_overrides={column: pl.String for column in text_columns}
    )
    if suffixes.endswith(".csv"):
        rows = pl.scan_csv(path, **options)
    elif suffixes.endswith(".csv.gz"):
        rows = pl.read_csv(path, **options).lazy()
    else:
        raise InteractionsFileError(path, "unknown file type (expected .parquet, .csv or .csv.gz)")
    columns = rows.collect_schema().names()
    return (
        rows.with_row_index(ROW, offset=1)
        .filter(~pl.all_horizontal(pl.col(columns).is_null()))
        .with_columns(
            _integer_if_lossless(rows, column) for column in REQUIRED_COLUMNS if column in columns
        )
    )


def _row_label(path: Path, row: int) -> str:
    """How a row is named in messages: CSV rows also by line (the header is line 1)."""
    return f"data row {row} (line {row + 1})" if _is_csv(path) else f"row {row}"


def _numeric_hours(rows: pl.LazyFrame, path: Path) -> pl.LazyFrame:
    """play_time_hours as Float64; text that is not a number is an error naming its row, and
    so is a column of another type (true/false hours are refused, not read as 0 and 1)."""
    hours = pl.col("play_time_hours")
    dtype = rows.collect_schema()["play_time_hours"]
    if dtype.is_numeric() or dtype == pl.Null:
        return rows.with_columns(hours.cast(pl.Float64))
    if dtype != pl.String:
        present = rows.filter(hours.is_not_null())
        first = present.select(ROW, hours).head(1).collect(engine="streaming")
        count = present.select(pl.len()).collect(engine="streaming").item()
        row, value = first.row(0) if first.height else (1, None)
        raise InteractionsFileError(
            path,
            f"{_row_label(path, row)}, column play_time_hours: expected a number (hours "
            f"played), got {_describe(value)}: the column holds {dtype} values ({_rows(count)}); "
            "store hours played as numbers",
        )
    bad = (
        rows.filter(hours.is_not_null() & hours.cast(pl.Float64, strict=False).is_null())
        .select(ROW, hours)
        .head(1)
        .collect(engine="streaming")
    )
    if bad.height:
        row, value = bad.row(0)
        raise InteractionsFileError(
            path,
            f"{_row_label(path, row)}, column play_time_hours: expected a number (hours "
            f"played), got {value!r}",
        )
    return rows.with_columns(hours.cast(pl.Float64, strict=False))


def _check_values(rows: pl.LazyFrame, path: Path) -> None:
    """Ids are present and hours valid on every row: one streaming pass; on failure, the
    first bad row (by column, in the order user_id, game_id, play_time_hours) and a count."""
    schema = rows.collect_schema()
    problems = {
        "user_id": (_is_blank_id("user_id", schema["user_id"]), "expected a user id"),
        "game_id": (_is_blank_id("game_id", schema["game_id"]), "expected a game id"),
        "play_time_hours": (_is_invalid_hours("play_time_hours"), HOURS_EXPECTED),
    }
    first = (
        rows.filter(pl.any_horizontal(problem for problem, _ in problems.values()))
        .select(ROW)
        .head(1)
        .collect(engine="streaming")
    )
    if first.height == 0:
        return
    for column, (problem, expected) in problems.items():
        bad = rows.filter(problem).select(ROW, column).head(1).collect(engine="streaming")
        if bad.height:
            count = rows.filter(problem).select(pl.len()).collect(engine="streaming").item()
            row, value = bad.row(0)
            raise InteractionsFileError(
                path,
                f"{_row_label(path, row)}, column {column}: {expected}, got "
                f"{_describe(value)} ({_rows(count)})",
            )


def read_interactions_file(
    path: str | Path, timestamp_format: str | None = None
) -> RawInteractions:
    """Read a generic Parquet or CSV file with `user_id`, `game_id` and optional columns.

    Optional columns: `play_time_hours` (0 when absent), `timestamp` (read as described in
    the module docstring, with `timestamp_format` as GAMEREC_TIMESTAMP_FORMAT), `title` (the
    game id as text when absent). Several rows for one (user, game) are merged and counted:
    hours summed, the latest timestamp kept. The file is scanned lazily and the queries run on
    polars' streaming engine, so the raw rows are never all in memory at once (only the merged
    result is); checking the values costs one more pass.
    """
    path = Path(path)
    _require_file(path)
    try:
        rows = _scan_table(path)
        columns = [name for name in rows.collect_schema().names() if name != ROW]
        _require_columns(path, columns)
        if "play_time_hours" not in columns:
            rows = rows.with_columns(play_time_hours=pl.lit(0.0))
        rows = _numeric_hours(rows, path)
        _check_values(rows, path)
        if "timestamp" in columns:
            rows = _timestamps(rows, path, timestamp_format)
        if "title" not in columns:
            rows = rows.with_columns(title=pl.col("game_id").cast(pl.String))

        aggregations = [
            pl.col("play_time_hours").sum(),
            pl.col("title").cast(pl.String).first(),
            pl.len().alias("_rows"),
        ]
        if "timestamp" in columns:
            aggregations.append(pl.col("timestamp").max())
        frame = (
            rows.group_by("user_id", "game_id")
            .agg(aggregations)
            .sort("user_id", "game_id", nulls_last=False)
            .collect(engine="streaming")
        )
        _refuse_infinite_sums(path, frame, rows, lambda row: _row_label(path, row))
    except (pl.exceptions.PolarsError, OSError) as error:
        if _is_csv(path):
            _raise_if_undecodable(path)
            _raise_if_csv_ragged(path)
        raise InteractionsFileError(
            path, f"cannot read as a table: {_first_line(error)}"
        ) from error
    if frame.height == 0:
        expected = "a header line and at least one data row" if _is_csv(path) else "rows"
        raise InteractionsFileError(path, f"no interaction rows (expected {expected})")
    raw_rows = int(frame["_rows"].sum())
    return RawInteractions(
        frame=frame.drop("_rows"),
        description=f"interactions:{path}",
        stats={"raw_rows": raw_rows, "duplicate_rows_merged": raw_rows - frame.height},
    )


def _require_columns(path: Path, columns: list[str]) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise InteractionsFileError(
            path,
            f"missing required column(s) {', '.join(missing)}; expected columns "
            f"{', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}, "
            f"found {', '.join(columns) or 'none'}",
        )


# --- timestamps ------------------------------------------------------------------------------


def _timestamps(rows: pl.LazyFrame, path: Path, layout: str | None) -> pl.LazyFrame:
    """`timestamp` as Datetime("us"), naive UTC; a value that is not a time names its row."""
    column = pl.col("timestamp")
    dtype = rows.collect_schema()["timestamp"]
    if dtype == pl.Null:
        return rows.with_columns(column.cast(pl.Datetime("us")))
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            column = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return rows.with_columns(column.dt.cast_time_unit("us"))
    if dtype == pl.Date:
        return rows.with_columns(column.cast(pl.Datetime("us")))
    if (dtype.is_integer() or dtype.is_float()) and (layout is None or layout in UNIX_TIME_UNITS):
        return _unix_times(rows, path, layout or "unix_s")
    if dtype.is_integer():
        rows, dtype = rows.with_columns(column.cast(pl.String)), pl.String  # e.g. 20191231
    if dtype != pl.String:
        raise InteractionsFileError(
            path,
            f"column timestamp holds {dtype} values: expected dates and times as text "
            "(ISO 8601, or GAMEREC_TIMESTAMP_FORMAT) or as Unix times (numbers)",
        )
    if layout in UNIX_TIME_UNITS:
        expected = f"expected a number (GAMEREC_TIMESTAMP_FORMAT={layout})"
        parsed = column.str.strip_chars().cast(pl.Float64, strict=False)
        rows = _refuse_unparsed(rows.with_columns(_parsed=parsed), path, expected)
        return _unix_times(rows.with_columns(timestamp=pl.col("_parsed")), path, layout)
    text = column.str.strip_chars()
    if layout is None:
        expected = f"{ISO_EXPECTED}; for another layout set GAMEREC_TIMESTAMP_FORMAT"
        parsed = _iso_datetimes(text)
    else:
        expected = f"expected a time in the layout {layout} (GAMEREC_TIMESTAMP_FORMAT)"
        parsed = text.str.to_datetime(layout, strict=False, time_unit="us")
        if re.search(r"%[#:]?z", layout):
            parsed = parsed.dt.replace_time_zone(None)
    rows = _refuse_unparsed(rows.with_columns(_parsed=parsed), path, expected)
    return rows.with_columns(timestamp=pl.col("_parsed")).drop("_parsed")


def _iso_datetimes(text: pl.Expr) -> pl.Expr:
    """ISO 8601 dates and times; a space (or t) for the T; with an offset, converted to UTC."""
    text = text.str.replace(r"^(\d{4}-\d{2}-\d{2})[ tT]", "${1}T")
    naive = [text.str.to_datetime(f, strict=False, time_unit="us") for f in ISO_NAIVE]
    with_offset = [
        text.str.to_datetime(f, strict=False, time_unit="us").dt.replace_time_zone(None)
        for f in ISO_WITH_OFFSET
    ]
    return pl.coalesce(*naive, *with_offset)


def _refuse_unparsed(rows: pl.LazyFrame, path: Path, expected: str) -> pl.LazyFrame:
    """Raise naming the first row whose non-empty `timestamp` did not parse into `_parsed`."""
    given = pl.col("timestamp").cast(pl.String).str.strip_chars()
    unparsed = rows.filter(given.is_not_null() & (given != "") & pl.col("_parsed").is_null())
    first = unparsed.select(ROW, "timestamp").head(1).collect(engine="streaming")
    if first.height:
        count = unparsed.select(pl.len()).collect(engine="streaming").item()
        row, value = first.row(0)
        raise InteractionsFileError(
            path,
            f"{_row_label(path, row)}, column timestamp: {expected}, got {value!r} "
            f"({_rows(count)})",
        )
    return rows


def _unix_times(rows: pl.LazyFrame, path: Path, unit: str) -> pl.LazyFrame:
    """Numbers since 1970-01-01 UTC in `unit` as Datetime; outside 1900-2200 names the row and
    the unit that would fit (milliseconds read as seconds land in the year 50,000)."""
    per_second = UNIX_TIME_UNITS[unit]
    low, high = (bound * per_second for bound in UNIX_SECONDS_RANGE)
    value = pl.col("timestamp").cast(pl.Float64)
    bad = rows.filter(value.is_not_null() & (value.is_nan() | (value < low) | (value > high)))
    first = bad.select(ROW, "timestamp").head(1).collect(engine="streaming")
    if first.height:
        count = bad.select(pl.len()).collect(engine="streaming").item()
        row, number = first.row(0)
        fits = [
            name
            for name, scale in UNIX_TIME_UNITS.items()
            if math.isfinite(number)
            and UNIX_SECONDS_RANGE[0] <= number / scale <= UNIX_SECONDS_RANGE[1]
        ]
        hint = f"; if they are {fits[0]}, set GAMEREC_TIMESTAMP_FORMAT={fits[0]}" if fits else ""
        raise InteractionsFileError(
            path,
            f"{_row_label(path, row)}, column timestamp: {number!r} read as {unit} is not a "
            f"time between 1900 and 2200 ({_rows(count)}){hint}",
        )
    microseconds = (value * (1_000_000 / per_second)).round(0).cast(pl.Int64)
    return rows.with_columns(timestamp=pl.from_epoch(microseconds, time_unit="us"))


def _raise_if_csv_ragged(path: Path) -> None:
    """A CSV record whose field count differs from the header's, named by its line."""
    _, header = next(_csv_records(path), (0, []))
    ragged = _first_ragged_line(path, len(header), skip_lines=1)
    if header and ragged is not None:
        line, found = ragged
        raise InteractionsFileError(
            path,
            f"line {line}: expected {len(header)} comma-separated fields (as in the header: "
            f"{', '.join(header)}), found {found}",
        )


# --- the configured source -------------------------------------------------------------------


def synthetic_spec(source: Source) -> SyntheticSpec:
    return SyntheticSpec(
        n_users=source.synthetic_users,
        n_games=source.synthetic_games,
        n_interactions=source.synthetic_interactions,
        seed=source.synthetic_seed,
    )


def source_fingerprint(source: Source) -> str:
    """Hash of the input itself: the file's bytes (with the test file's), or the synthetic
    spec (it is seeded). What `raw_interactions` records as its data version."""
    if source.kind == "synthetic":
        return input_fingerprint(source, config_fingerprint(asdict(synthetic_spec(source))))
    path = Path(source.path)
    _require_file(path)
    return input_fingerprint(source, file_sha256(path))


def input_fingerprint(source: Source, main: str, test: str | None = None) -> str:
    """The fingerprint of the input whose main file (or synthetic spec) hashes to `main`:
    that hash, combined with the test file's (`test`, or hashed now) when GAMEREC_TEST_PATH is
    set, so an edited test set makes the graph stale too."""
    if not source.test_path:
        return main
    if test is None:
        path = Path(source.test_path)
        _require_file(path, TEST_PATH_VARIABLE)
        test = file_sha256(path)
    return config_fingerprint([main, test])


def read_file(kind: str, path: str | Path, timestamp_format: str | None = None) -> RawInteractions:
    """A file of the given source kind, read and checked."""
    if kind == "steam200k":
        return read_steam200k(path)
    return read_interactions_file(path, timestamp_format)


def snapshot_path(folder: str | os.PathLike, source: Source, fingerprint: str) -> Path:
    """Where `snapshot_source` keeps the copy of the input with this fingerprint (its
    SHA-256), under the input's own suffixes so the copy is read the same way."""
    suffix = "".join(Path(source.path or "").suffixes[-2:]).lower()
    return Path(folder) / f"{fingerprint}{suffix}"


def heldout_snapshot_path(folder: str | os.PathLike, source: Source, fingerprint: str) -> Path:
    """Where `snapshot_test` keeps the copy of the GAMEREC_TEST_PATH file it hashed."""
    suffix = "".join(Path(source.test_path or "").suffixes[-2:]).lower()
    return Path(folder) / "test" / f"{fingerprint}{suffix}"


def snapshot_source(source: Source, folder: str | os.PathLike) -> str:
    """The input's fingerprint, with a copy of exactly the bytes it hashes kept in `folder`.

    A file is hashed; unless a copy with that hash is there already, it is copied and hashed
    again on the way, and a file that changed meanwhile (still being written) is an error
    rather than a copy under the wrong name. The newest SNAPSHOTS_KEPT copies are kept.
    Synthetic data has no file: its fingerprint is the hash of its (seeded) spec.
    """
    if source.kind == "synthetic":
        return config_fingerprint(asdict(synthetic_spec(source)))
    return _snapshot(
        Path(source.path), lambda fp: snapshot_path(folder, source, fp), "GAMEREC_SOURCE_PATH"
    )


def snapshot_test(source: Source, folder: str | os.PathLike) -> str | None:
    """The same for the GAMEREC_TEST_PATH file (None without one), so the held-out pairs
    evaluated are the bytes fingerprinted too."""
    if not source.test_path:
        return None
    return _snapshot(
        Path(source.test_path),
        lambda fp: heldout_snapshot_path(folder, source, fp),
        TEST_PATH_VARIABLE,
    )


def _snapshot(path: Path, target_of: Callable[[str], Path], variable: str) -> str:
    _require_file(path, variable)
    fingerprint = file_sha256(path)
    target = target_of(fingerprint)
    if not target.is_file():
        with atomic_path(target, needed=path.stat().st_size) as tmp:
            if _copy_hashing(path, tmp) != fingerprint:
                raise InteractionsFileError(
                    path, "changed while it was being read (still being written?); run again"
                )
    os.utime(target)  # the newest snapshot is the one in use
    pattern = "[0-9a-f]" * 64 + "*"
    snapshots = sorted(target.parent.glob(pattern), key=lambda p: p.stat().st_mtime)
    for old in snapshots[:-SNAPSHOTS_KEPT]:
        old.unlink(missing_ok=True)
    return fingerprint


def _copy_hashing(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


def load_source(source: Source, snapshot: str | os.PathLike | None = None) -> RawInteractions:
    """The configured input as canonical interactions; from `snapshot` (a copy that
    `snapshot_source` made) when given, with messages naming the configured file."""
    if source.kind == "synthetic":
        spec = synthetic_spec(source)
        frame = generate_synthetic_interactions(spec)
        description = (
            f"synthetic:users={spec.n_users},games={spec.n_games},"
            f"interactions={spec.n_interactions},seed={spec.seed}"
        )
        return RawInteractions(
            frame=frame, description=description, stats={"raw_rows": frame.height}
        )
    path = Path(snapshot) if snapshot is not None else Path(source.path)
    try:
        raw = read_file(source.kind, path, source.timestamp_format)
    except InteractionsFileError as error:
        if snapshot is None:
            raise
        raise InteractionsFileError(source.path, error.problem) from error
    return replace(raw, description=f"{source.kind}:{source.path}")


def load_test_pairs(
    source: Source, indexed: IndexedInteractions, snapshot: str | os.PathLike | None = None
) -> pl.DataFrame | None:
    """The held-out pairs of GAMEREC_TEST_PATH (read like the source, from `snapshot`, the
    copy `snapshot_test` made, when given; then given the source's indices), or None when
    there is no test file. Players or games the source does not train on, and pairs also in
    the source, are errors naming the file and the first such row."""
    if not source.test_path:
        return None
    path = Path(snapshot) if snapshot is not None else Path(source.test_path)
    kind = "interactions" if source.kind == "synthetic" else source.kind
    try:
        return _indexed_test_pairs(path, kind, source, indexed)
    except InteractionsFileError as error:
        if snapshot is None:
            raise
        raise InteractionsFileError(source.test_path, error.problem) from error


def _indexed_test_pairs(
    path: Path, kind: str, source: Source, indexed: IndexedInteractions
) -> pl.DataFrame:
    test = read_file(kind, path, source.timestamp_format).frame
    users = indexed.interactions.select("user_id", "user_idx").unique()
    games = indexed.catalog.select("game_id", "item_idx")
    joined = test.join(users, on="user_id", how="left").join(games, on="game_id", how="left")
    for column, index, what in (("user_id", "user_idx", "player"), ("game_id", "item_idx", "game")):
        unknown = joined.filter(pl.col(index).is_null())
        if unknown.height:
            value = unknown[column][0]
            raise InteractionsFileError(
                path,
                f"{_first_row(path, kind, column, value)}: {what} {value!r} is not in the source "
                f"({_rows(unknown.height)}); a test set may only hold players and games the "
                "source trains on",
            )
    both = joined.join(indexed.interactions, on=["user_idx", "item_idx"], how="semi")
    if both.height:
        user, game = both["user_id"][0], both["game_id"][0]
        raise InteractionsFileError(
            path,
            f"{_first_row(path, kind, 'user_id', user, ('game_id', game))}: the pair (player "
            f"{user!r}, game {game!r}) is in the source too ({_rows(both.height)}); a held-out "
            "pair must not be trained on",
        )
    extra = [column for column in ("timestamp",) if column in indexed.interactions.columns]
    for column in extra:
        if column not in joined.columns:
            joined = joined.with_columns(
                pl.lit(None).cast(indexed.interactions[column].dtype).alias(column)
            )
    return joined.select(indexed.interactions.columns).sort("user_idx", "item_idx")


def _first_row(
    path: Path, kind: str, column: str, value: object, also: tuple[str, object] | None = None
) -> str:
    """How to name the first row of a file where `column` (and `also`) has the value."""
    if kind == "steam200k":
        positions = {"user_id": 0, "game_id": 1}
        for line, fields in _csv_records(path):
            matches = fields[positions[column]] == str(value)
            if matches and (also is None or fields[positions[also[0]]] == str(also[1])):
                return f"line {line}"
        return "a line"
    wanted = pl.col(column) == value
    if also is not None:
        wanted = wanted & (pl.col(also[0]) == also[1])
    found = _scan_table(path).filter(wanted).select(ROW).head(1).collect()
    return _row_label(path, found.item()) if found.height else "a row"
