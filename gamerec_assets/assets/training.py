"""Stage 3, training: the two-tower checkpoint and the item embeddings FAISS serves."""

import base64
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import torch

from gamerec_assets.assets.common import content_version
from gamerec_assets.core.io import atomic_path, file_sha256
from gamerec_assets.core.plots import training_curve_png
from gamerec_assets.core.recommend import save_user_tower
from gamerec_assets.core.trainer import (
    TrainConfig,
    checkpoint_extra,
    checkpoint_fingerprint,
    fit_two_tower,
    load_checkpoint,
    save_checkpoint,
)
from gamerec_assets.resources import (
    ComputeResource,
    PathsResource,
    SplitResource,
    TrainingResource,
)
from gamerec_assets.train_worker import torchrun_command
from gamerec_assets.versioning import effective_version

CHECKPOINT_WEIGHTS_FINITE = "checkpoint_weights_finite"
ITEM_EMBEDDINGS_MATCH_CATALOG = "item_embeddings_match_catalog"


@dg.asset(
    deps=["train_interactions", "interactions"],
    group_name="training",
    kinds={"pytorch"},
    description=(
        "Two-tower model: a history user tower (pooled game embeddings of the user's training "
        "games) and a game ID tower, cosine scores over a temperature, InfoNCE over in-batch "
        "negatives with logQ correction and accidental-hit masking, positives weighted by play "
        "time. Epochs chosen on a tuning split carved from train, then refit on all of train. "
        "A self-describing checkpoint: weights, model arguments, every hyperparameter, seed, "
        "losses and tuning scores per epoch. The training state is saved after every epoch, "
        "so a killed run resumes from its last completed epoch."
    ),
)
def two_tower_checkpoint(
    context: dg.AssetExecutionContext,
    training: TrainingResource,
    split: SplitResource,
    compute: ComputeResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    config = training.train_config()
    device = compute.setup()
    n_users = (
        pl.scan_parquet(paths.interactions).select(pl.col("user_idx").max()).collect().item() + 1
    )
    n_items = pl.scan_parquet(paths.catalog).select(pl.len()).collect().item()
    context.log.info(
        f"training {n_users} users x {n_items} games, device {device}, "
        f"{training.nproc} process(es), config {config}"
    )
    state_dir = paths.training_state if training.epoch_checkpoints else None
    if training.nproc > 1:
        run_metadata = train_with_torchrun(
            context, training, split, compute, paths, n_users, n_items, state_dir
        )
    else:
        run_metadata = train_in_process(
            context, config, split, device, paths, n_users, n_items, state_dir
        )
    shutil.rmtree(paths.training_state, ignore_errors=True)

    checkpoint = torch.load(paths.checkpoint, map_location="cpu", weights_only=True)
    losses, tuning_scores = checkpoint["epoch_losses"], checkpoint["tuning_ndcg"]
    tuning_losses = checkpoint["extra"]["tuning_epoch_losses"]
    phases = {"refit" if tuning_losses else "train": losses}
    if tuning_losses:
        phases = {"tune": tuning_losses, **phases}
    curve = training_curve_png(phases, tuning_scores or None)
    version = effective_version(context, "two_tower_checkpoint", {"training": training})
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            "final_loss": losses[-1],
            "epoch_losses": dg.MetadataValue.json(losses),
            "training_curve": dg.MetadataValue.md(
                f"![training curve](data:image/png;base64,{base64.b64encode(curve).decode()})"
            ),
            "epochs_trained": len(losses),
            "best_epoch": checkpoint["best_epoch"],
            "tuning_ndcg": dg.MetadataValue.json(tuning_scores),
            "device": str(device),
            "world_size": checkpoint["extra"]["world_size"],
            **run_metadata,
            "config": dg.MetadataValue.json(training.model_dump()),
            "path": dg.MetadataValue.path(str(paths.checkpoint)),
        },
        data_version=dg.DataVersion(checkpoint_fingerprint(checkpoint)[:16]),
    )


def training_inputs(paths: PathsResource) -> list[Path]:
    """The files a model depends on; their hashes go into the checkpoint, and publishing
    checks the staged catalog and players' games against them (the id mapping must match)."""
    return [paths.catalog, paths.user_games, paths.train_interactions]


def train_in_process(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    split: SplitResource,
    device: torch.device,
    paths: PathsResource,
    n_users: int,
    n_items: int,
    state_dir: Path | None,
) -> dict[str, object]:
    """Train in the run's own process and write the checkpoint (TRAIN_NPROC=1)."""
    train = pl.read_parquet(
        paths.train_interactions, columns=["user_idx", "item_idx", "play_time_hours"]
    )

    def log_epoch(phase: str, epoch: int, loss: float, tuning_ndcg: float | None) -> None:
        score = "" if tuning_ndcg is None else f", tuning NDCG@20 {tuning_ndcg:.4f}"
        context.log.info(f"{phase} epoch {epoch}: loss {loss:.4f}{score}")

    fit = fit_two_tower(
        train,
        n_users,
        n_items,
        config,
        split.strategy,
        device,
        on_epoch_end=log_epoch,
        state_dir=state_dir,
        log=context.log.info,
    )
    trained_on = {path.name: file_sha256(path) for path in training_inputs(paths)}
    save_checkpoint(paths.checkpoint, fit.final, extra=checkpoint_extra(fit, trained_on, 1))
    return {"fit_seconds": round(fit.seconds, 3)}


def train_with_torchrun(
    context: dg.AssetExecutionContext,
    training: TrainingResource,
    split: SplitResource,
    compute: ComputeResource,
    paths: PathsResource,
    n_users: int,
    n_items: int,
    state_dir: Path | None,
) -> dict[str, object]:
    """Train as a `torchrun` job of TRAIN_NPROC processes through Dagster Pipes: rank 0's logs
    and metadata stream into this run, and it writes the checkpoint (see `train_worker`)."""
    threads = max(1, (compute.num_threads or os.cpu_count() or 1) // training.nproc)
    command = [
        *torchrun_command(training.nproc),
        "--train",
        str(paths.train_interactions),
        "--n-users",
        str(n_users),
        "--n-items",
        str(n_items),
        "--config",
        json.dumps(asdict(training.train_config())),
        "--split-strategy",
        split.strategy,
        "--checkpoint",
        str(paths.checkpoint),
        "--inputs",
        *map(str, training_inputs(paths)),
        "--device",
        compute.device,
        "--num-threads",
        str(threads),
        *(["--state-dir", str(state_dir)] if state_dir is not None else []),
    ]
    invocation = dg.PipesSubprocessClient().run(command=command, context=context)
    reported = invocation.get_materialize_result().metadata or {}
    return {key: reported[key] for key in ("fit_seconds", "backend") if key in reported}


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
    description=(
        "item_emb.npy: float32 [n_games, EMBED_DIM]; row i is the vector of item_idx i. Beside "
        "it, user_tower.npz: the user tower as arrays, so serving needs neither torch nor a run."
    ),
)
def item_embeddings(
    context: dg.AssetExecutionContext, paths: PathsResource
) -> dg.MaterializeResult:
    model, checkpoint = load_checkpoint(paths.checkpoint)
    vectors = model.item_vectors().cpu().numpy().astype(np.float32)
    with atomic_path(paths.item_embeddings) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vectors)
    save_user_tower(
        paths.user_tower,
        model,
        checkpoint["config"]["history_weighting"],
        checkpoint_fingerprint=checkpoint_fingerprint(checkpoint),
    )
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
        data_version=content_version(paths.item_embeddings, paths.user_tower),
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
