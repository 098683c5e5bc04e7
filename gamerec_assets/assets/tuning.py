"""Stage 3a, tuning: the automatic search of training settings on the tuning split.

Its own asset, so that it is cached on its own: its version is the training data and the
search (its settings and the names it varies), not the fixed training settings, so a new `LR`
retrains without searching again, while new data or a new search space searches again.
"""

import base64
import json
from dataclasses import replace

import dagster as dg
import polars as pl

from gamerec_assets.assets.common import markdown_table
from gamerec_assets.core.io import config_fingerprint
from gamerec_assets.core.plots import search_trials_png
from gamerec_assets.core.settings import Paths, TrainConfig, Tuning
from gamerec_assets.core.splits import read_split_frame
from gamerec_assets.core.training.job import KnownLength
from gamerec_assets.core.training.world import World
from gamerec_assets.core.tuning import (
    TuningResult,
    read_result,
    reusable_length,
    search,
    write_result,
)
from gamerec_assets.resources import (
    ComputeResource,
    PathsResource,
    SplitResource,
    TrainingResource,
    TuningResource,
)
from gamerec_assets.versioning import effective_version

TRAINING_POOL = "gamerec_training"
"""The concurrency pool of the steps that train (the search and the checkpoint): the
deployment's instance (deploy/docker/dagster.yaml) runs one at a time; without a limit (the
local instance) it changes nothing."""


def catalog_size(files: Paths) -> tuple[int, int]:
    """(players, games) of the indexed interactions: the sizes of the model's tables."""
    n_users = pl.scan_parquet(files.interactions).select(pl.col("user_idx").max()).collect()
    n_items = pl.scan_parquet(files.catalog).select(pl.len()).collect().item()
    return n_users.item() + 1, n_items


@dg.asset(
    deps=["train_interactions", "val_interactions", "interactions"],
    group_name="training",
    pool=TRAINING_POOL,
    kinds={"optuna"},
    description=(
        "The training settings chosen for this data: an Optuna study (TPE, bad trials pruned "
        "at the median) of GAMEREC_TUNE_PARAMS on a tuning split carved from train, within "
        "GAMEREC_TUNE_TRIALS trials and GAMEREC_TUNE_MINUTES; the first trial is the declared "
        "defaults and settings given explicitly are fixed. tuned_settings.json holds the "
        "best settings, the length they trained for and every trial; the study's journal "
        "beside it lets a killed search resume."
    ),
)
def tuned_settings(
    context: dg.AssetExecutionContext,
    training: TrainingResource,
    tuning: TuningResource,
    split: SplitResource,
    compute: ComputeResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    config, search_settings, files = training.settings(), tuning.settings(), paths.settings()
    device = compute.setup()
    version = effective_version(context, "tuned_settings", {"tuning": tuning, "training": training})
    n_users, n_items = catalog_size(files)
    result = search(
        read_split_frame(files.train_interactions),
        n_users,
        n_items,
        config,
        search_settings,
        split.strategy,
        read_split_frame(files.val_interactions),
        files.tuning_study,
        f"gamerec-{version['tags']['dagster/code_version']}",
        fixed=config.explicit_fields(),
        log=context.log.info,
        world=World(device=device),
    )
    write_result(files.tuned_settings, result)
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={**version["metadata"], **search_metadata(result, search_settings, config)},
        data_version=dg.DataVersion(config_fingerprint(chosen(result))[:16]),
    )


def chosen(result: TuningResult | None) -> dict[str, object]:
    """What downstream steps take from a search: its settings and its length."""
    if result is None:
        return {}
    return {"params": result.params, "periods": result.best_period, "config": result.trial_config}


def search_metadata(
    result: TuningResult | None, search_settings: Tuning, config: TrainConfig
) -> dict[str, object]:
    searched = search_settings.searched(config.explicit_fields())
    if result is None:
        return {"searched": dg.MetadataValue.json(searched), "trials": 0}
    searched = [name for name in searched if name in result.params]  # as the search ran
    first = result.trials[0]["value"] if result.trials else None
    plot = base64.b64encode(search_trials_png(result.trials, search_settings.k)).decode()
    rows = [
        {
            "trial": t["number"],
            "state": t["state"],
            f"tuning NDCG@{search_settings.k}": "" if t["value"] is None else f"{t['value']:.4f}",
            "epoch": t["best_epoch"] if t["best_epoch"] is not None else "",
            "seconds": f"{t['seconds']:.0f}" if t["seconds"] else "",
            **{name: json.dumps(value) for name, value in t["params"].items()},
        }
        for t in result.trials
    ]
    return {
        "chosen": dg.MetadataValue.json(result.params),
        "best_tuning_ndcg": result.tuning_ndcg,
        "defaults_tuning_ndcg": first,
        "best_epoch": result.best_epoch,
        "searched": dg.MetadataValue.json(searched),
        "trials": len(result.trials),
        "pruned_trials": sum(t["state"] == "pruned" for t in result.trials),
        "search_seconds": round(result.seconds, 1),
        "trial_history": dg.MetadataValue.md(
            f"![trials](data:image/png;base64,{plot})\n\n{markdown_table(rows)}"
        ),
    }


def tuned_config(config: TrainConfig, files: Paths) -> tuple[TrainConfig, KnownLength | None]:
    """The configuration to train: the search's choices for every setting not given
    explicitly, and the length its best trial trained for when that trial was this very
    configuration (no selection phase is then needed)."""
    result = read_result(files.tuned_settings) if files.tuned_settings.exists() else None
    if result is None:
        return config, None
    explicit = config.explicit_fields()
    params = {name: value for name, value in result.params.items() if name not in explicit}
    tuned = replace(config, **params)
    return tuned, reusable_length(result, tuned)
