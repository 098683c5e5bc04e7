"""Stage 3, training: the two-tower checkpoint and the item embeddings FAISS serves."""

import dagster as dg
import numpy as np
import polars as pl
import torch

from gamerec_assets.assets.common import content_version
from gamerec_assets.core.io import atomic_path
from gamerec_assets.core.trainer import (
    checkpoint_fingerprint,
    load_checkpoint,
    save_checkpoint,
    train_two_tower,
)
from gamerec_assets.resources import ComputeResource, PathsResource, TrainingResource
from gamerec_assets.versioning import effective_version

CHECKPOINT_WEIGHTS_FINITE = "checkpoint_weights_finite"
ITEM_EMBEDDINGS_MATCH_CATALOG = "item_embeddings_match_catalog"


@dg.asset(
    deps=["train_interactions", "interactions"],
    group_name="training",
    kinds={"pytorch"},
    description=(
        "Two-tower model (user and game ID embeddings, dot product) trained with InfoNCE over "
        "in-batch negatives and Adam. A self-describing checkpoint: weights, dimensions, "
        "hyperparameters, seed, loss per epoch."
    ),
)
def two_tower_checkpoint(
    context: dg.AssetExecutionContext,
    training: TrainingResource,
    compute: ComputeResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    config = training.train_config()
    device = compute.setup()
    train = pl.read_parquet(paths.train_interactions, columns=["user_idx", "item_idx"])
    n_users = (
        int(pl.scan_parquet(paths.interactions).select(pl.col("user_idx").max()).collect().item())
        + 1
    )
    n_items = pl.scan_parquet(paths.catalog).select(pl.len()).collect().item()
    context.log.info(
        f"training on {train.height} pairs, {n_users} users x {n_items} games, device {device}, "
        f"config {config}"
    )
    result = train_two_tower(
        train["user_idx"].to_numpy(),
        train["item_idx"].to_numpy(),
        n_users=n_users,
        n_items=n_items,
        config=config,
        device=device,
        on_epoch_end=lambda epoch, loss: context.log.info(f"epoch {epoch}: loss {loss:.4f}"),
    )
    save_checkpoint(paths.checkpoint, result)
    version = effective_version(context, "two_tower_checkpoint", {"training": training})
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            "final_loss": result.epoch_losses[-1],
            "epoch_losses": dg.MetadataValue.json(result.epoch_losses),
            "fit_seconds": round(result.seconds, 3),
            "pairs_per_second": round(train.height * config.epochs / max(result.seconds, 1e-9)),
            "device": str(device),
            "config": dg.MetadataValue.json(training.model_dump()),
            "path": dg.MetadataValue.path(str(paths.checkpoint)),
        },
        data_version=dg.DataVersion(checkpoint_fingerprint(paths.checkpoint)[:16]),
    )


@dg.asset_check(
    asset=two_tower_checkpoint,
    name=CHECKPOINT_WEIGHTS_FINITE,
    blocking=True,
    description="Every weight in the checkpoint is finite (no NaN or inf from a diverged run).",
)
def checkpoint_weights_finite(paths: PathsResource) -> dg.AssetCheckResult:
    model, _ = load_checkpoint(paths.checkpoint)
    bad = {
        name: int((~torch.isfinite(tensor)).sum())
        for name, tensor in model.state_dict().items()
        if not torch.isfinite(tensor).all()
    }
    return dg.AssetCheckResult(
        passed=not bad,
        description=f"non-finite weights: {bad}" if bad else None,
        metadata={"tensors_with_non_finite_values": len(bad)},
    )


@dg.asset(
    deps=[two_tower_checkpoint],
    group_name="training",
    kinds={"numpy"},
    description="item_emb.npy: float32 [n_games, EMBED_DIM]; row i is the vector of item_idx i.",
)
def item_embeddings(
    context: dg.AssetExecutionContext, paths: PathsResource
) -> dg.MaterializeResult:
    model, _ = load_checkpoint(paths.checkpoint)
    vectors = model.item_vectors().cpu().numpy().astype(np.float32)
    with atomic_path(paths.item_embeddings) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vectors)
    norms = np.linalg.norm(vectors, axis=1)
    version = effective_version(context, "item_embeddings", {})
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            "n_games": vectors.shape[0],
            "dim": vectors.shape[1],
            "mean_norm": float(norms.mean()),
            "path": dg.MetadataValue.path(str(paths.item_embeddings)),
        },
        data_version=content_version(paths.item_embeddings),
    )


@dg.asset_check(
    asset=item_embeddings,
    name=ITEM_EMBEDDINGS_MATCH_CATALOG,
    blocking=True,
    description="One finite vector per catalog game, in catalog order.",
)
def item_embeddings_match_catalog(paths: PathsResource) -> dg.AssetCheckResult:
    vectors = np.load(paths.item_embeddings, mmap_mode="r")
    n_games = pl.scan_parquet(paths.catalog).select(pl.len()).collect().item()
    finite = bool(np.isfinite(vectors).all())
    return dg.AssetCheckResult(
        passed=vectors.shape[0] == n_games and finite,
        metadata={"rows": vectors.shape[0], "catalog_games": n_games, "all_finite": finite},
    )
