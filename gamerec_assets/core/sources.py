"""Readers that turn raw interaction exports into one canonical table.

Whatever the source, the result has one row per distinct (user, game) with the columns
`user_id`, `game_id` (original ids, any sortable type), `title`, `play_time_hours` and, where the
source has it, `timestamp`. Structural problems (a missing file, missing columns, values of the
wrong type) raise `InteractionsFileError` naming the file and what was expected; value problems
(null keys, negative or NaN hours, an empty table) pass through to the asset checks, which block
the run before training and say which rows are bad.
"""

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

STEAM200K_COLUMNS = ("user_id", "title", "behaviour", "value", "unused")
STEAM200K_BEHAVIOURS = ("purchase", "play")
REQUIRED_COLUMNS = ("user_id", "game_id")
OPTIONAL_COLUMNS = ("play_time_hours", "timestamp", "title")


class InteractionsFileError(ValueError):
    """An input file that cannot be read as interactions; the message names file and problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)


@dataclass(frozen=True)
class RawInteractions:
    """Canonical interactions plus what reading them did, for the asset's metadata."""

    frame: pl.DataFrame
    description: str
    stats: dict[str, int] = field(default_factory=dict)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise InteractionsFileError(path, "file not found")
    if not path.is_file():
        raise InteractionsFileError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise InteractionsFileError(path, "file is empty (expected interaction rows)")


def read_steam200k(path: str | Path) -> RawInteractions:
    """Read the Steam-200k CSV (no header: user id, title, purchase|play, value, 0; plain or .gz).

    Exact duplicate rows are dropped and counted. Each (user, title) becomes one interaction
    whose `play_time_hours` is the sum of its `play` rows (0 when the game was only purchased).
    The title is the game's id, since the format has no other.
    """
    path = Path(path)
    _require_file(path)
    schema = dict(
        zip(STEAM200K_COLUMNS, (pl.Int64, pl.String, pl.String, pl.Float64, pl.Int64), strict=True)
    )
    try:
        rows = pl.read_csv(path, has_header=False, schema=schema, quote_char='"')
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError) as error:
        raise InteractionsFileError(
            path,
            "cannot parse as Steam-200k CSV (expected 5 comma-separated fields per row: "
            f"integer user id, quoted title, purchase|play, number, 0): {error}",
        ) from error

    bad = rows.with_row_index("row", offset=1).filter(
        ~pl.col("behaviour").is_in(STEAM200K_BEHAVIOURS) | pl.col("behaviour").is_null()
    )
    if bad.height:
        first = bad.row(0, named=True)
        raise InteractionsFileError(
            path,
            f"row {first['row']}, column 3 (behaviour): expected 'purchase' or 'play', got "
            f"{first['behaviour']!r} ({bad.height} such rows)",
        )

    deduplicated = rows.unique(maintain_order=True)
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
    return RawInteractions(
        frame=frame,
        description=f"steam200k:{path}",
        stats={
            "raw_rows": rows.height,
            "duplicate_rows_dropped": rows.height - deduplicated.height,
        },
    )


def _integer_if_lossless(rows: pl.LazyFrame, column: str) -> pl.Expr:
    """A CSV id column as Int64 when every value is a plain integer ('42'), else as the text.

    Type inference would turn '007' and '7' into the same integer and silently merge two
    games; keeping text whenever the integer form would lose characters prevents that. One
    streaming pass over the column decides.
    """
    text = pl.col(column)
    as_int = text.cast(pl.Int64, strict=False)
    lossless = (
        rows.select(((as_int.cast(pl.String) == text).fill_null(False) | text.is_null()).all())
        .collect(engine="streaming")
        .item()
    )
    return as_int if lossless else text


def _scan_table(path: Path) -> pl.LazyFrame:
    """A lazy scan of a Parquet or CSV file (gzipped CSV is read eagerly: it cannot be seeked)."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith((".parquet", ".pq")):
        rows = pl.scan_parquet(path)
        rows.collect_schema()  # fail here, not mid-query, on a file that is not Parquet
        return rows
    options = dict(
        try_parse_dates=True, schema_overrides={column: pl.String for column in REQUIRED_COLUMNS}
    )
    if suffixes.endswith(".csv"):
        rows = pl.scan_csv(path, **options)
    elif suffixes.endswith(".csv.gz"):
        rows = pl.read_csv(path, **options).lazy()
    else:
        raise InteractionsFileError(path, "unknown file type (expected .parquet, .csv or .csv.gz)")
    columns = rows.collect_schema().names()
    return rows.with_columns(
        _integer_if_lossless(rows, column) for column in REQUIRED_COLUMNS if column in columns
    )


def _numeric_hours(rows: pl.LazyFrame, path: Path) -> pl.LazyFrame:
    """play_time_hours as Float64; text that is not a number is an error naming its row."""
    hours = pl.col("play_time_hours")
    if rows.collect_schema()["play_time_hours"].is_numeric():
        return rows.with_columns(hours.cast(pl.Float64))
    bad = (
        rows.with_row_index("row", offset=1)
        .filter(hours.is_not_null() & hours.cast(pl.Float64, strict=False).is_null())
        .select("row", hours)
        .head(1)
        .collect(engine="streaming")
    )
    if bad.height:
        row, value = bad.row(0)
        raise InteractionsFileError(
            path,
            f"data row {row}, column play_time_hours: expected a number (hours played), "
            f"got {value!r}",
        )
    return rows.with_columns(hours.cast(pl.Float64, strict=False))


def read_interactions_file(path: str | Path) -> RawInteractions:
    """Read a generic Parquet or CSV file with `user_id`, `game_id` and optional columns.

    Optional columns: `play_time_hours` (0 when absent), `timestamp`, `title` (the game id as
    text when absent). Several rows for one (user, game) are merged: hours summed, the latest
    timestamp kept. The file is scanned lazily and the query runs on polars' streaming
    engine, so the raw rows are never all in memory at once (only the merged result is).
    """
    path = Path(path)
    _require_file(path)
    try:
        rows = _scan_table(path)
        columns = rows.collect_schema().names()
        missing = [column for column in REQUIRED_COLUMNS if column not in columns]
        if missing:
            raise InteractionsFileError(
                path,
                f"missing required column(s) {', '.join(missing)}; expected columns "
                f"{', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}, "
                f"found {', '.join(columns) or 'none'}",
            )
        if "play_time_hours" not in columns:
            rows = rows.with_columns(play_time_hours=pl.lit(0.0))
        rows = _numeric_hours(rows, path)
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
    except pl.exceptions.PolarsError as error:
        raise InteractionsFileError(path, f"cannot read as a table: {error}") from error
    raw_rows = int(frame["_rows"].sum())
    return RawInteractions(
        frame=frame.drop("_rows"),
        description=f"interactions:{path}",
        stats={"raw_rows": raw_rows, "duplicate_rows_merged": raw_rows - frame.height},
    )
