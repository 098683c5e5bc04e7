"""Stage 2, splits: the evaluation protocol, train and held-out interactions.

The split is where the evaluation protocol is fixed (GAMEREC_SPLIT: leave-one-out, temporal or
predefined), so it is also where a data set that cannot be evaluated stops the run, before
training and before any file is written: nothing held out, or a catalog too small for VAL_K
(see `require_cutoff_below_catalog`).
"""

import dagster as dg
import polars as pl

from gamerec_assets.assets.common import content_version, markdown_table, table_metadata
from gamerec_assets.core.evaluation import cutoff_warning, require_cutoff_below_catalog
from gamerec_assets.core.io import write_parquet_atomic
from gamerec_assets.core.settings import LEAVE_ONE_OUT
from gamerec_assets.core.splits import make_split, require_heldout_users
from gamerec_assets.resources import EvaluationResource, PathsResource, SplitResource
from gamerec_assets.versioning import effective_version

"""Warn when a random ranking's Recall@VAL_K would reach this."""
SPLIT_NO_LEAKAGE = "split_no_leakage"
SPLIT_EVAL_USERS_HAVE_TRAIN_DATA = "split_eval_users_have_train_data"
SPLIT_RESPECTS_CUTOFF = "split_respects_cutoff"
# The split checks sit on train_interactions so that, being blocking, they stop training too.


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "train_interactions",
            deps=["interactions"],
            group_name="splits",
            kinds={"polars", "parquet"},
            description="Every interaction except the held-out ones.",
        ),
        dg.AssetSpec(
            "val_interactions",
            deps=["interactions"],
            group_name="splits",
            kinds={"polars", "parquet"},
            description=(
                "The held-out (user, game) pairs (GAMEREC_SPLIT): one game per user with at "
                "least two (ties to the smallest item_idx), everything after a cut-off in time "
                "(`temporal`), or the pairs of GAMEREC_TEST_PATH (`predefined`)."
            ),
        ),
    ]
)
def split_interactions(
    context: dg.AssetExecutionContext,
    split: SplitResource,
    evaluation: EvaluationResource,
    paths: PathsResource,
):
    files, settings = paths.settings(), split.settings()
    interactions = pl.read_parquet(files.interactions)
    test = None
    if settings.strategy == "predefined" and files.test_interactions.exists():
        test = pl.read_parquet(files.test_interactions)
    result = make_split(interactions, settings, test)
    require_heldout_users(result)
    n_items = int(interactions["item_idx"].max()) + 1
    require_cutoff_below_catalog(evaluation.k, n_items)
    warning = cutoff_warning(evaluation.k, n_items)
    if warning:
        context.log.warning(warning)
    write_parquet_atomic(result.train, files.train_interactions)
    write_parquet_atomic(result.val, files.val_interactions)
    n_eval_users = result.val["user_idx"].n_unique()
    context.log.info(
        f"{split.strategy}: {result.train.height} train rows, {result.val.height} held-out "
        f"games of {n_eval_users} users"
        + "".join(f"; {name.replace('_', ' ')} {value}" for name, value in result.report.items())
    )
    shown = dg.MetadataValue.json(split.model_dump())
    version = effective_version(context, "train_interactions", {"split": split})
    yield dg.MaterializeResult(
        asset_key="train_interactions",
        tags=version["tags"],
        metadata={
            **version["metadata"],
            **table_metadata(result.train),
            "n_users": result.train["user_idx"].n_unique(),
            "split": shown,
            "path": dg.MetadataValue.path(str(files.train_interactions)),
        },
        data_version=content_version(files.train_interactions),
    )
    version = effective_version(context, "val_interactions", {"split": split})
    yield dg.MaterializeResult(
        asset_key="val_interactions",
        tags=version["tags"],
        metadata={
            **version["metadata"],
            **table_metadata(result.val),
            "n_eval_users": n_eval_users,
            **{key: value for key, value in result.report.items() if key != "strategy"},
            "split": shown,
            "path": dg.MetadataValue.path(str(files.val_interactions)),
        },
        data_version=content_version(files.val_interactions),
    )


@dg.asset_check(
    asset="train_interactions",
    name=SPLIT_NO_LEAKAGE,
    additional_deps=["val_interactions"],
    blocking=True,
    description=(
        "No held-out (user, game) pair is in train; with a leave-one-out strategy, each user "
        "holds out at most one game."
    ),
)
def split_no_leakage(paths: PathsResource, split: SplitResource) -> dg.AssetCheckResult:
    files = paths.settings()
    train = pl.scan_parquet(files.train_interactions).select("user_idx", "item_idx")
    val = pl.scan_parquet(files.val_interactions).select("user_idx", "item_idx")
    leaked = val.join(train, on=["user_idx", "item_idx"], how="inner").collect()
    repeated_users = val.group_by("user_idx").len().filter(pl.col("len") > 1).collect()
    one_each = split.strategy in LEAVE_ONE_OUT
    return dg.AssetCheckResult(
        passed=leaked.height == 0 and (repeated_users.height == 0 or not one_each),
        metadata={
            "leaked_pairs": leaked.height,
            "users_with_several_held_out": repeated_users.height,
            "sample": dg.MetadataValue.md(markdown_table(leaked.head(5).to_dicts())),
        },
    )


@dg.asset_check(
    asset="train_interactions",
    name=SPLIT_EVAL_USERS_HAVE_TRAIN_DATA,
    additional_deps=["val_interactions"],
    blocking=True,
    description="Every evaluated user has at least one training interaction.",
)
def split_eval_users_have_train_data(paths: PathsResource) -> dg.AssetCheckResult:
    files = paths.settings()
    train_users = pl.scan_parquet(files.train_interactions).select("user_idx").unique()
    val = pl.scan_parquet(files.val_interactions).select("user_idx")
    orphans = val.join(train_users, on="user_idx", how="anti").collect()
    n_eval = val.select(pl.len()).collect().item()
    return dg.AssetCheckResult(
        passed=orphans.height == 0 and n_eval > 0,
        description=(
            "no user has two or more games, so there is nothing to evaluate"
            if n_eval == 0
            else None
        ),
        metadata={"eval_users": n_eval, "eval_users_without_train_data": orphans.height},
    )


@dg.asset_check(
    asset="train_interactions",
    name=SPLIT_RESPECTS_CUTOFF,
    additional_deps=["val_interactions"],
    blocking=True,
    description=(
        "With GAMEREC_SPLIT=temporal, no training interaction is later than the cut-off and "
        "no held-out one earlier: the model never trains on what follows what it is tested on. "
        "Other strategies have no cut-off to respect."
    ),
)
def split_respects_cutoff(paths: PathsResource, split: SplitResource) -> dg.AssetCheckResult:
    if split.strategy != "temporal":
        return dg.AssetCheckResult(passed=True, metadata={"strategy": split.strategy})
    files = paths.settings()
    latest_train = pl.scan_parquet(files.train_interactions).select(pl.col("timestamp").max())
    earliest_val = pl.scan_parquet(files.val_interactions).select(pl.col("timestamp").min())
    latest, earliest = latest_train.collect().item(), earliest_val.collect().item()
    passed = latest is not None and earliest is not None and latest < earliest
    return dg.AssetCheckResult(
        passed=passed,
        description=None if passed else f"training reaches {latest}, held out from {earliest}",
        metadata={"latest_training": str(latest), "earliest_held_out": str(earliest)},
    )
