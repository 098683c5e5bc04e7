"""Stage 2, splits: leave-one-out train/validation interactions.

The split is where the evaluation protocol is fixed, so it is also where a data set that
cannot be evaluated stops the run, before training and before any file is written: no user
with two or more games, or a catalog too small for VAL_K (see `require_cutoff_below_catalog`).
"""

import math

import dagster as dg
import polars as pl

from gamerec_assets.assets.common import content_version, markdown_table, table_metadata
from gamerec_assets.core.evaluation import require_cutoff_below_catalog
from gamerec_assets.core.io import write_parquet_atomic
from gamerec_assets.core.splits import leave_one_out_split, require_heldout_users
from gamerec_assets.resources import EvaluationResource, PathsResource, SplitResource
from gamerec_assets.versioning import effective_version

CHANCE_RECALL_WARNING = 0.5
"""Warn when a random ranking's Recall@VAL_K would reach this."""
SPLIT_NO_LEAKAGE = "split_no_leakage"
SPLIT_EVAL_USERS_HAVE_TRAIN_DATA = "split_eval_users_have_train_data"
# Both split checks sit on train_interactions so that, being blocking, they stop training too.


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "train_interactions",
            deps=["interactions"],
            group_name="splits",
            kinds={"polars", "parquet"},
            description="Every interaction except each evaluated user's held-out game.",
        ),
        dg.AssetSpec(
            "val_interactions",
            deps=["interactions"],
            group_name="splits",
            kinds={"polars", "parquet"},
            description=(
                "One held-out game per user with at least two games (GAMEREC_SPLIT strategy; "
                "ties to the smallest item_idx)."
            ),
        ),
    ]
)
def leave_one_out_splits(
    context: dg.AssetExecutionContext,
    split: SplitResource,
    evaluation: EvaluationResource,
    paths: PathsResource,
):
    files = paths.settings()
    interactions = pl.read_parquet(files.interactions)
    result = leave_one_out_split(interactions, strategy=split.strategy, seed=split.seed)
    require_heldout_users(result)
    n_items = int(interactions["item_idx"].max()) + 1
    require_cutoff_below_catalog(evaluation.k, n_items)
    warning = cutoff_warning(evaluation.k, n_items)
    if warning:
        context.log.warning(warning)
    write_parquet_atomic(result.train, files.train_interactions)
    write_parquet_atomic(result.val, files.val_interactions)
    context.log.info(
        f"{split.strategy}: {result.train.height} train rows, {result.val.height} held-out users"
    )
    settings = dg.MetadataValue.json(split.model_dump())
    version = effective_version(context, "train_interactions", {"split": split})
    yield dg.MaterializeResult(
        asset_key="train_interactions",
        tags=version["tags"],
        metadata={
            **version["metadata"],
            **table_metadata(result.train),
            "n_users": result.train["user_idx"].n_unique(),
            "split": settings,
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
            "n_eval_users": result.val.height,
            "split": settings,
            "path": dg.MetadataValue.path(str(files.val_interactions)),
        },
        data_version=content_version(files.val_interactions),
    )


def cutoff_warning(k: int, n_items: int) -> str | None:
    """A warning when VAL_K is near the catalog size: a held-out game ranks among at most
    n_items - 1 candidates, so a random ranking already scores Recall@k of about
    k / (n_items - 1), and Recall@k tells little between models."""
    chance = k / max(n_items - 1, 1)
    if chance < CHANCE_RECALL_WARNING:
        return None
    largest = math.ceil((n_items - 1) * CHANCE_RECALL_WARNING) - 1
    return (
        f"VAL_K={k} is {chance:.0%} of the {n_items - 1} games a held-out game ranks among: a "
        f"random ranking scores Recall@{k} of about {chance:.2f}, so the metric tells little "
        f"between models; set VAL_K to at most {largest}"
    )


@dg.asset_check(
    asset="train_interactions",
    name=SPLIT_NO_LEAKAGE,
    additional_deps=["val_interactions"],
    blocking=True,
    description="No held-out (user, game) pair is in train; each user holds out at most one game.",
)
def split_no_leakage(paths: PathsResource) -> dg.AssetCheckResult:
    files = paths.settings()
    train = pl.scan_parquet(files.train_interactions).select("user_idx", "item_idx")
    val = pl.scan_parquet(files.val_interactions).select("user_idx", "item_idx")
    leaked = val.join(train, on=["user_idx", "item_idx"], how="inner").collect()
    repeated_users = val.group_by("user_idx").len().filter(pl.col("len") > 1).collect()
    return dg.AssetCheckResult(
        passed=leaked.height == 0 and repeated_users.height == 0,
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
