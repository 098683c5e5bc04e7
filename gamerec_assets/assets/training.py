"""Stage 3, training: the two-tower checkpoint and the item embeddings FAISS serves."""

import base64
import os
import shutil
from dataclasses import replace

import dagster as dg
import numpy as np
import polars as pl
import torch

from gamerec_assets.assets.common import content_version
from gamerec_assets.assets.tuning import TRAINING_POOL, catalog_size, tuned_config
from gamerec_assets.core.io import atomic_path
from gamerec_assets.core.plots import training_curve_png
from gamerec_assets.core.processes import children_die_with_me
from gamerec_assets.core.settings import Paths, TrainConfig, Tuning
from gamerec_assets.core.training.checkpoint import (
    checkpoint_config,
    checkpoint_fingerprint,
    load_checkpoint,
)
from gamerec_assets.core.training.job import TrainingJob, run_training
from gamerec_assets.core.training.world import World
from gamerec_assets.core.user_tower import save_user_tower
from gamerec_assets.resources import (
    ComputeResource,
    PathsResource,
    SplitResource,
    TrainingResource,
    TuningResource,
)
from gamerec_assets.train_worker import torchrun_command
from gamerec_assets.versioning import effective_version

CHECKPOINT_WEIGHTS_FINITE = "checkpoint_weights_finite"
ITEM_EMBEDDINGS_MATCH_CATALOG = "item_embeddings_match_catalog"


@dg.asset(
    deps=["train_interactions", "interactions", "tuned_settings"],
    group_name="training",
    pool=TRAINING_POOL,
    kinds={"pytorch"},
    description=(
        "Two-tower model: a history user tower (pooled game embeddings of the user's training "
        "games) and a game ID tower, cosine scores over a temperature, InfoNCE over in-batch "
        "negatives with logQ correction and accidental-hit masking, positives weighted by play "
        "time. The settings the search chose (tuned_settings) for every one not given "
        "explicitly; epochs chosen on a tuning split carved from train (or the search's best "
        "trial's, when it trained this very configuration), then refit on all of train. "
        "A self-describing checkpoint: weights, model arguments, every hyperparameter, seed, "
        "losses and tuning scores per epoch. The training state is saved after every epoch, "
        "so a killed run resumes from its last completed epoch."
    ),
)
def two_tower_checkpoint(
    context: dg.AssetExecutionContext,
    training: TrainingResource,
    tuning: TuningResource,
    split: SplitResource,
    compute: ComputeResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    files, device = paths.settings(), compute.setup()
    config, known_length = tuned_config(training.settings(), files)
    job = training_job(files, config, split.strategy, tuning.settings(), compute.device)
    job = replace(job, known_length=known_length)
    context.log.info(
        f"training {job.n_users} users x {job.n_items} games, device {device}, "
        f"{config.nproc} process(es), config {config}"
    )
    if config.nproc > 1:
        run_metadata = train_with_torchrun(context, job, files, config.nproc, compute.num_threads)
    else:
        fit = run_training(job, World(device=device), context.log.info)
        run_metadata = {"fit_seconds": round(fit.seconds, 3)}
    shutil.rmtree(files.training_state, ignore_errors=True)

    checkpoint = torch.load(files.checkpoint, map_location="cpu", weights_only=True)
    losses, tuning_scores = checkpoint["epoch_losses"], checkpoint["tuning_ndcg"]
    tuning_losses = checkpoint["extra"]["tuning_epoch_losses"]
    phases = {"refit" if tuning_losses else "train": losses}
    if tuning_losses:
        phases = {"tune": tuning_losses, **phases}
    curve = training_curve_png(phases, tuning_scores or None, tuning.k)
    version = effective_version(
        context, "two_tower_checkpoint", {"training": training, "tuning": tuning}
    )
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
            "config": dg.MetadataValue.json(config.model_dict()),
            "length_from_search": known_length is not None,
            "model_from_search": bool(checkpoint["extra"].get("model_from_search")),
            "path": dg.MetadataValue.path(str(files.checkpoint)),
        },
        data_version=dg.DataVersion(checkpoint_fingerprint(checkpoint)[:16]),
    )


def training_job(
    files: Paths, config: TrainConfig, split_strategy: str, tuning: Tuning, device: str
) -> TrainingJob:
    """The run to train: the split's training file, the catalog's size, and the files whose
    hashes the checkpoint records (publishing checks the staged catalog and players' games
    against them: the id mapping must match)."""
    n_users, n_items = catalog_size(files)
    return TrainingJob(
        train_path=str(files.train_interactions),
        n_users=n_users,
        n_items=n_items,
        checkpoint_path=str(files.checkpoint),
        config=config,
        split_strategy=split_strategy,
        heldout_path=str(files.val_interactions),
        tuning=tuning,
        input_paths=tuple(map(str, (files.catalog, files.user_games, files.train_interactions))),
        state_dir=str(files.training_state) if config.epoch_checkpoints else None,
        device=device,
    )


def train_with_torchrun(
    context: dg.AssetExecutionContext, job: TrainingJob, files: Paths, nproc: int, threads: int
) -> dict[str, object]:
    """Train as a `torchrun` job of `nproc` processes through Dagster Pipes: rank 0's logs and
    metadata stream into this run, and it writes the checkpoint (see `train_worker`)."""
    per_process = max(1, (threads or os.cpu_count() or 1) // nproc)
    job_file = files.training_job
    with atomic_path(job_file) as tmp:
        tmp.write_text(replace(job, num_threads=per_process).to_json(), "utf-8")
    invocation = dg.PipesSubprocessClient().run(
        command=torchrun_command(nproc, job_file), context=context, env=children_die_with_me()
    )
    reported = invocation.get_materialize_result().metadata or {}
    return {key: reported[key] for key in ("fit_seconds", "backend") if key in reported}


@dg.asset_check(
    asset=two_tower_checkpoint,
    name=CHECKPOINT_WEIGHTS_FINITE,
    blocking=True,
    description="Every weight in the checkpoint is finite (no NaN or inf from a diverged run).",
)
def checkpoint_weights_finite(paths: PathsResource) -> dg.AssetCheckResult:
    model, _ = load_checkpoint(paths.settings().checkpoint)
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
    files = paths.settings()
    model, checkpoint = load_checkpoint(files.checkpoint)
    vectors = model.item_vectors().cpu().numpy().astype(np.float32)
    with atomic_path(files.item_embeddings) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vectors)
    save_user_tower(
        files.user_tower,
        model,
        checkpoint_config(checkpoint).history_weighting,
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
            "path": dg.MetadataValue.path(str(files.item_embeddings)),
        },
        data_version=content_version(files.item_embeddings, files.user_tower),
    )


@dg.asset_check(
    asset=item_embeddings,
    name=ITEM_EMBEDDINGS_MATCH_CATALOG,
    blocking=True,
    description="One finite vector per catalog game, in catalog order.",
)
def item_embeddings_match_catalog(paths: PathsResource) -> dg.AssetCheckResult:
    files = paths.settings()
    vectors = np.load(files.item_embeddings, mmap_mode="r")
    n_games = pl.scan_parquet(files.catalog).select(pl.len()).collect().item()
    finite = bool(np.isfinite(vectors).all())
    return dg.AssetCheckResult(
        passed=vectors.shape[0] == n_games and finite,
        metadata={"rows": vectors.shape[0], "catalog_games": n_games, "all_finite": finite},
    )
