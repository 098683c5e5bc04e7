"""Stage 4, evaluation: leave-one-out metrics of the model and of the popularity baseline."""

import json

import dagster as dg
import numpy as np
import polars as pl
import torch

from gamerec_assets.assets.common import content_version, markdown_table
from gamerec_assets.core.io import write_json_atomic
from gamerec_assets.core.metrics import (
    DEFAULT_KS,
    TrainItems,
    heldout_ranks,
    popularity_vectors,
    ranking_metrics,
)
from gamerec_assets.core.trainer import load_checkpoint
from gamerec_assets.resources import ComputeResource, EvaluationResource, PathsResource
from gamerec_assets.versioning import effective_version

MODEL_BEATS_POPULARITY = "model_beats_popularity"


@dg.asset(
    deps=["item_embeddings", "two_tower_checkpoint", "train_interactions", "val_interactions"],
    group_name="evaluation",
    kinds={"pytorch"},
    description=(
        "metrics.json: Recall@K, NDCG@K (K = VAL_K, 10, 50) and MRR over the full catalog, "
        "each user's training games masked, for the model and the popularity baseline."
    ),
)
def eval_metrics(
    context: dg.AssetExecutionContext,
    evaluation: EvaluationResource,
    compute: ComputeResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    device = compute.setup()
    model, checkpoint = load_checkpoint(paths.checkpoint, device)
    item_vectors = torch.from_numpy(np.load(paths.item_embeddings)).to(device)
    train = pl.read_parquet(paths.train_interactions, columns=["user_idx", "item_idx"])
    val = pl.read_parquet(paths.val_interactions, columns=["user_idx", "item_idx"])
    n_users, n_items = model.n_users, model.n_items
    train_users, train_items = train["user_idx"].to_numpy(), train["item_idx"].to_numpy()
    masked = TrainItems.from_pairs(train_users, train_items, n_users)
    val_users, val_items = val["user_idx"].to_numpy(), val["item_idx"].to_numpy()
    ks = tuple(sorted({*DEFAULT_KS, evaluation.k}))

    model_metrics = ranking_metrics(
        heldout_ranks(model.user_vectors(), item_vectors, masked, val_users, val_items), ks
    )
    pop_users, pop_items = popularity_vectors(train_items, n_users, n_items)
    popularity = ranking_metrics(
        heldout_ranks(pop_users.to(device), pop_items.to(device), masked, val_users, val_items), ks
    )
    report = {
        **model_metrics,
        "k": evaluation.k,
        "n_eval_users": int(len(val_users)),
        "n_games": int(n_items),
        "baselines": {"popularity": popularity},
        "checkpoint_config": checkpoint["config"],
    }
    write_json_atomic(paths.metrics, report)
    headline = [f"recall@{evaluation.k}", f"ndcg@{evaluation.k}"]
    context.log.info(
        "model "
        + ", ".join(f"{m}={model_metrics[m]:.4f}" for m in headline)
        + " | popularity "
        + ", ".join(f"{m}={popularity[m]:.4f}" for m in headline)
    )
    table = [
        {
            "metric": name,
            "model": f"{model_metrics[name]:.4f}",
            "popularity": f"{popularity[name]:.4f}",
        }
        for name in model_metrics
    ]
    version = effective_version(context, "eval_metrics", {"evaluation": evaluation})
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            **model_metrics,
            **{f"popularity_{name}": value for name, value in popularity.items()},
            "n_eval_users": int(len(val_users)),
            "metrics": dg.MetadataValue.md(markdown_table(table)),
            "path": dg.MetadataValue.path(str(paths.metrics)),
        },
        data_version=content_version(paths.metrics),
    )


@dg.asset_check(
    asset=eval_metrics,
    name=MODEL_BEATS_POPULARITY,
    description="The model's Recall@VAL_K is above the popularity baseline's (WARN otherwise).",
)
def model_beats_popularity(paths: PathsResource) -> dg.AssetCheckResult:
    report = json.loads(paths.metrics.read_text(encoding="utf-8"))
    key = f"recall@{report['k']}"
    model, popularity = report[key], report["baselines"]["popularity"][key]
    return dg.AssetCheckResult(
        passed=model > popularity,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if model > popularity
        else f"{key} {model:.4f} <= popularity {popularity:.4f}",
        metadata={
            key: model,
            f"popularity_{key}": popularity,
            "ratio": model / max(popularity, 1e-12),
        },
    )
