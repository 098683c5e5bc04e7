"""Stage 1, ingestion: raw interactions -> one indexed row per (user, game), plus the catalog.

The input is read once: `raw_interactions` copies the file into DATA_DIR/source under the hash
of the bytes copied (its data version), and `interactions` parses that copy, the one its
latest fingerprint names. A file replaced between the two steps, or while a run goes on,
cannot be published under another file's fingerprint.
"""

from pathlib import Path

import dagster as dg
import polars as pl

from gamerec_assets.assets.common import content_version, markdown_table, table_metadata
from gamerec_assets.core.features import index_interactions
from gamerec_assets.core.io import write_parquet_atomic
from gamerec_assets.core.settings import Source
from gamerec_assets.core.sources import (
    heldout_snapshot_path,
    input_fingerprint,
    load_source,
    load_test_pairs,
    snapshot_path,
    snapshot_source,
    snapshot_test,
)
from gamerec_assets.resources import PathsResource, SourceResource
from gamerec_assets.versioning import effective_version

INTERACTIONS_NOT_EMPTY = "interactions_not_empty"
INTERACTIONS_KEYS_NOT_NULL = "interactions_keys_not_null"
INTERACTIONS_HOURS_VALID = "interactions_hours_valid"


def input_data_version(fingerprint: str) -> str:
    """The data version `raw_interactions` records for an input fingerprint (SHA-256 hex);
    the retraining sensor and schedule compare the current input with it."""
    return fingerprint[:16]


@dg.asset(
    group_name="ingestion",
    kinds={"file"},
    description=(
        "A fingerprint of the raw input as it stands: the hash of the source file's bytes (or "
        "of the synthetic spec, and with the test file's for GAMEREC_TEST_PATH) is its data "
        "version, so an input edited in place makes "
        "`interactions` stale, and an unchanged one leaves everything fresh. The bytes hashed "
        "are kept in DATA_DIR/source, and `interactions` parses exactly them. Cheap: it reads "
        "the file once (and copies it when it changed); `gamerec materialize` runs it first "
        "every time."
    ),
)
def raw_interactions(
    context: dg.AssetExecutionContext, source: SourceResource, paths: PathsResource
) -> dg.MaterializeResult:
    settings, folder = source.settings(), paths.settings().source_snapshots
    fingerprint = snapshot_source(settings, folder)
    test_fingerprint = snapshot_test(settings, folder)
    version = effective_version(context, "raw_interactions", {"source": source})
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            "source": source.kind,
            "path": source.path or "(synthetic generator)",
            "sha256": fingerprint,
            **({"test_sha256": test_fingerprint} if test_fingerprint else {}),
        },
        data_version=dg.DataVersion(
            input_data_version(input_fingerprint(settings, fingerprint, test_fingerprint))
        ),
    )


@dg.asset(
    deps=[raw_interactions],
    group_name="ingestion",
    kinds={"polars", "parquet"},
    description=(
        "One row per (user, game): original ids, contiguous user_idx/item_idx (sorted order of "
        "the original ids) and play_time_hours. For serving, the game catalog (item_idx, "
        "game_id, title) and every player's games (user_games.parquet) go to "
        "ARTIFACTS_DIR/staging, published with the rest by serving_set. With GAMEREC_TEST_PATH, "
        "its held-out pairs too, given the same indices (test_interactions.parquet)."
    ),
)
def interactions(
    context: dg.AssetExecutionContext, source: SourceResource, paths: PathsResource
) -> dg.MaterializeResult:
    settings, files = source.settings(), paths.settings()
    main, test_copy = fingerprinted_snapshots(context, settings, files.source_snapshots)
    raw = load_source(settings, main)
    indexed = index_interactions(raw.frame)
    test = load_test_pairs(settings, indexed, test_copy)
    written = [files.interactions, files.catalog, files.user_games]
    write_parquet_atomic(indexed.interactions, files.interactions)
    write_parquet_atomic(indexed.catalog, files.catalog)
    write_parquet_atomic(
        indexed.interactions.select("user_id", "user_idx", "item_idx", "play_time_hours"),
        files.user_games,
    )
    if test is None:
        files.test_interactions.unlink(missing_ok=True)
    else:
        write_parquet_atomic(test, files.test_interactions)
        written.append(files.test_interactions)
    context.log.info(
        f"{indexed.interactions.height} interactions, {indexed.n_users} users, "
        f"{indexed.n_items} games from {raw.description}"
    )
    version = effective_version(context, "interactions", {"paths": paths})
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            **table_metadata(indexed.interactions),
            **{f"source_{name}": value for name, value in raw.stats.items()},
            "source": raw.description,
            "n_users": indexed.n_users,
            "n_games": indexed.n_items,
            "path": dg.MetadataValue.path(str(files.interactions)),
            "catalog_path": dg.MetadataValue.path(str(files.catalog)),
            **({} if test is None else {"test_pairs": test.height}),
        },
        data_version=content_version(*written),
    )


def fingerprinted_snapshots(
    context: dg.AssetExecutionContext, settings: Source, folder: Path
) -> tuple[Path | None, Path | None]:
    """The copies of the input and of the test file (None for synthetic data, or without
    GAMEREC_TEST_PATH) that the latest `raw_interactions` fingerprinted: the version Dagster
    records for this step's input is theirs."""
    if settings.kind == "synthetic" and not settings.test_path:
        return None, None
    event = context.instance.get_latest_materialization_event(dg.AssetKey("raw_interactions"))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    fingerprinted = getattr(metadata.get("path"), "value", None)
    expected = settings.path or "(synthetic generator)"
    if "sha256" not in metadata or fingerprinted != expected:
        raise dg.Failure(
            f"{expected} has not been fingerprinted yet: materialize raw_interactions first "
            "(`gamerec materialize` does)"
        )
    main = test = None
    if settings.kind != "synthetic":
        main = _existing(snapshot_path(folder, settings, metadata["sha256"].value), settings.path)
    if settings.test_path:
        if "test_sha256" not in metadata:
            raise dg.Failure(
                f"{settings.test_path} has not been fingerprinted yet: materialize "
                "raw_interactions first (`gamerec materialize` does)"
            )
        fingerprint = metadata["test_sha256"].value
        test = _existing(heldout_snapshot_path(folder, settings, fingerprint), settings.test_path)
    return main, test


def _existing(snapshot: Path, configured: str) -> Path:
    if not snapshot.is_file():
        raise dg.Failure(
            f"the copy of {configured} that raw_interactions fingerprinted ({snapshot}) is "
            "gone: materialize raw_interactions again"
        )
    return snapshot


# The file readers (core.sources) already refuse empty tables, empty ids and invalid hours,
# naming the file and row, before `interactions` is written; these checks are the second line
# of defence, for sources that do not go through them (the synthetic generator, new readers).


def _bad_rows_result(bad: pl.DataFrame, problem: str) -> dg.AssetCheckResult:
    sample = bad.head(5).to_dicts()
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        description=f"{bad.height} rows {problem}" if bad.height else None,
        metadata={
            "bad_rows": bad.height,
            "sample": dg.MetadataValue.md(markdown_table(sample)),
        },
    )


@dg.asset_check(
    asset=interactions,
    name=INTERACTIONS_NOT_EMPTY,
    blocking=True,
    description="There is at least one interaction to train on.",
)
def interactions_not_empty(paths: PathsResource) -> dg.AssetCheckResult:
    rows = pl.scan_parquet(paths.settings().interactions).select(pl.len()).collect().item()
    return dg.AssetCheckResult(
        passed=rows > 0,
        description=None if rows else "the input has no interaction rows",
        metadata={"rows": rows},
    )


@dg.asset_check(
    asset=interactions,
    name=INTERACTIONS_KEYS_NOT_NULL,
    blocking=True,
    description="Every row has a user_id and a game_id.",
)
def interactions_keys_not_null(paths: PathsResource) -> dg.AssetCheckResult:
    bad = (
        pl.scan_parquet(paths.settings().interactions)
        .filter(pl.col("user_id").is_null() | pl.col("game_id").is_null())
        .select("user_id", "game_id", "play_time_hours")
        .collect()
    )
    return _bad_rows_result(bad, "have a null user_id or game_id")


@dg.asset_check(
    asset=interactions,
    name=INTERACTIONS_HOURS_VALID,
    blocking=True,
    description="play_time_hours is a finite number >= 0 on every row.",
)
def interactions_hours_valid(paths: PathsResource) -> dg.AssetCheckResult:
    hours = pl.col("play_time_hours")
    bad = (
        pl.scan_parquet(paths.settings().interactions)
        .filter(hours.is_null() | hours.is_nan() | hours.is_infinite() | (hours < 0))
        .select("user_id", "game_id", "play_time_hours")
        .collect()
    )
    return _bad_rows_result(bad, "have play_time_hours that is negative, NaN, infinite or missing")
