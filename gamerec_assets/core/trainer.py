"""Training loop for the two-tower model: InfoNCE over in-batch negatives, Adam.

Batches are slices of a seeded permutation of the training pairs held as index tensors: no
per-sample Dataset or DataLoader, which is most of the cost of the usual approach. Options,
each off in the seed's model and chosen on a tuning split for the project's defaults:
- `normalize` + `temperature`: cosine scores divided by a temperature;
- `logq_correction`: subtract log(sampling probability) of each in-batch item, so popular
  games are not over-penalised for appearing as negatives more often;
- `mask_accidental_hits`: the same game twice in a batch is not its own negative;
- `sparse_gradients`: each table's gradient holds only the rows the batch touched and
  SparseAdam updates only those, so a step costs the batch, not the tables (otherwise fused
  AdamW over every row);
- `weight_decay` (AdamW, dense only); `playtime_weighting`: positives weighted by log hours;
  `history_weighting`: the history user tower pools games with the same weights;
- `user_tower`: `id`, `history` or `history+id` (see `model`).
With `select_epochs`, `fit_two_tower` carves a tuning split out of the training data (a second
leave-one-out, same strategy), trains on the rest while scoring each epoch's NDCG on it, stops
after `patience` epochs without improvement, and keeps the best epoch; with `refit`, it then
retrains on all the training data for that many epochs. The evaluation hold-out is never seen.
The checkpoint describes itself (weights, model arguments, every hyperparameter, seed, epochs,
losses) and is written atomically, read with `weights_only=True`. With `EpochCheckpoints`, the
full training state (weights, optimizer, batch-order generator, losses, best epoch so far) is
saved after every completed epoch under a key of the data and configuration, so a killed run
resumes where it stopped and finishes with the same weights as one that never stopped.
"""

import copy
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gamerec_assets.core import distributed as distributed_module
from gamerec_assets.core import model as model_module
from gamerec_assets.core.distributed import (
    World,
    batch_loss,
    data_parallel,
    sharded_tuning_ndcg,
)
from gamerec_assets.core.io import atomic_path
from gamerec_assets.core.metrics import TrainItems, heldout_ranks, ranking_metrics
from gamerec_assets.core.model import USER_TOWERS, TwoTower, UserHistory
from gamerec_assets.core.splits import leave_one_out_split

CHECKPOINT_FORMAT = 2
ACCIDENTAL_HIT_LOGIT = -1e9  # finite: -inf in a row with every entry masked would give NaN


@dataclass(frozen=True)
class TrainConfig:
    """Every training hyperparameter. The defaults here reproduce the seed's plain model;
    the project's tuned defaults live on `resources.TrainingResource`."""

    epochs: int = 5
    batch_size: int = 1024
    embed_dim: int = 64
    lr: float = 1e-3
    seed: int = 0
    user_tower: str = "id"
    normalize: bool = False
    temperature: float = 1.0
    logq_correction: bool = False
    mask_accidental_hits: bool = False
    weight_decay: float = 0.0
    playtime_weighting: bool = False
    history_weighting: bool = False
    select_epochs: bool = False
    patience: int = 3
    refit: bool = False
    sparse_gradients: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "embed_dim", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("lr", "temperature"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and np.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if not (self.weight_decay >= 0 and np.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if self.sparse_gradients and self.weight_decay > 0:
            raise ValueError(
                "weight_decay needs dense gradients (SparseAdam has no weight decay): "
                "set weight_decay to 0 or turn sparse_gradients off"
            )
        if self.user_tower not in USER_TOWERS:
            raise ValueError(
                f"user_tower must be one of {', '.join(USER_TOWERS)}, got {self.user_tower!r}"
            )


@dataclass(frozen=True)
class TrainingPairs:
    """Positive (user, item) pairs, with play hours when playtime weighting is used."""

    users: np.ndarray
    items: np.ndarray
    hours: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.users) != len(self.items):
            raise ValueError(f"users has {len(self.users)} rows but items has {len(self.items)}")
        if len(self.users) == 0:
            raise ValueError("no training pairs: the training split is empty")


@dataclass(frozen=True)
class TuningSet:
    """Held-out games of a tuning split carved from the training data, to select epochs."""

    users: np.ndarray
    items: np.ndarray
    k: int = 20


@dataclass(frozen=True)
class EpochCheckpoints:
    """Where to save the training state after each completed epoch, and how to say so.

    `path` is one file per training phase; a run whose data and configuration match the saved
    key resumes after the saved epoch, any other run ignores the file and overwrites it.
    """

    path: Path
    log: Callable[[str], None] = print


@dataclass
class TrainResult:
    model: TwoTower
    config: TrainConfig
    epoch_losses: list[float] = field(default_factory=list)
    tuning_ndcg: list[float] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def shuffled_batches(
    n_rows: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Row indices of one epoch: a seeded permutation cut into consecutive batches.

    The last batch may be short, so a batch size above the number of pairs still trains.
    """
    order = torch.randperm(n_rows, generator=generator)
    yield from torch.split(order, batch_size)


def mask_accidental_hits(logits: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Remove off-diagonal copies of a row's own positive item from its negatives."""
    same_item = items[:, None] == items[None, :]
    same_item.fill_diagonal_(False)
    return logits.masked_fill(same_item, ACCIDENTAL_HIT_LOGIT)


def in_batch_softmax_loss(
    logits: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """InfoNCE: each user's own item (the diagonal) against the batch's other items."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    if weights is None:
        return F.cross_entropy(logits, targets)
    losses = F.cross_entropy(logits, targets, reduction="none")
    return (losses * weights).sum() / weights.sum()


def item_log_frequencies(items: np.ndarray, n_items: int) -> torch.Tensor:
    """log(share of training pairs) per item: the in-batch sampling probability for logQ."""
    counts = np.bincount(items, minlength=n_items).astype(np.float64)
    return torch.from_numpy(np.log(np.maximum(counts, 1.0) / len(items))).float()


def playtime_weights(hours: np.ndarray) -> torch.Tensor:
    """1 + log1p(hours), scaled to mean 1: games played longer count more, none count zero."""
    weights = 1.0 + np.log1p(np.maximum(np.nan_to_num(hours), 0.0))
    return torch.from_numpy(weights / weights.mean()).float()


def make_optimizer(model: TwoTower, config: TrainConfig) -> torch.optim.Optimizer:
    """SparseAdam when gradients are sparse: its step touches only the rows in the batch, so
    its cost follows the batch rather than the tables. Otherwise AdamW over every row, with the
    fused kernel (one pass over each table instead of one per arithmetic step: 2x on CPU)."""
    if config.sparse_gradients:
        return torch.optim.SparseAdam(list(model.parameters()), lr=config.lr)
    return torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
    )


def batch_logits(
    model: TwoTower,
    users: torch.Tensor,
    items: torch.Tensor,
    history: UserHistory | None,
    config: TrainConfig,
    log_q: torch.Tensor | None,
    pair_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    logits = model(users, items, history, pair_weights) / config.temperature
    if log_q is not None:
        logits = logits - log_q[items][None, :]
    if config.mask_accidental_hits:
        logits = mask_accidental_hits(logits, items)
    return logits


@torch.no_grad()
def tuning_ndcg(model: TwoTower, history: UserHistory | None, tuning: TuningSet) -> float:
    """NDCG@k of the tuning split's held-out games, the user's other games masked."""
    train_items = TrainItems(
        indptr=history.indptr.cpu().numpy(), indices=history.items.cpu().numpy()
    )
    ranks = heldout_ranks(
        model.user_vectors(history), model.item_vectors(), train_items, tuning.users, tuning.items
    )
    return ranking_metrics(ranks, (tuning.k,))[f"ndcg@{tuning.k}"]


def train_two_tower(
    pairs: TrainingPairs,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    device: torch.device = torch.device("cpu"),
    tuning: TuningSet | None = None,
    on_epoch_end: Callable[[int, float, float | None], None] | None = None,
    progress: bool | None = None,
    checkpoints: EpochCheckpoints | None = None,
    world: World | None = None,
) -> TrainResult:
    """Train on positive pairs; deterministic for a seed on CPU.

    With `tuning`, stops after `patience` epochs without a better tuning NDCG and returns the
    best epoch's weights (`best_epoch`); without it, trains `epochs` epochs. With
    `checkpoints`, saves the state after each epoch and resumes from a matching saved state.
    With `world` (a `torchrun` job of several processes), trains data-parallel: see
    `distributed`; every process returns the same model, only rank 0 saves epoch states.
    """
    # Multi-threaded embedding backward passes on CPU are otherwise racy; restore the
    # process-wide setting afterwards so other code (and CUDA runs) is not affected.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(device.type == "cpu" or was_deterministic)
    try:
        return _train(
            pairs,
            n_users,
            n_items,
            config,
            device,
            tuning,
            on_epoch_end,
            progress,
            checkpoints,
            world if world is not None and world.size > 1 else None,
        )
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(
    pairs: TrainingPairs,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    device: torch.device,
    tuning: TuningSet | None,
    on_epoch_end: Callable[[int, float, float | None], None] | None,
    progress: bool | None,
    checkpoints: EpochCheckpoints | None,
    world: World | None,
) -> TrainResult:
    torch.manual_seed(config.seed)
    model = TwoTower(n_users, n_items, config.embed_dim, config.user_tower, config.normalize)
    model = model.to(device).use_sparse_gradients(config.sparse_gradients)
    optimizer = make_optimizer(model, config)
    towers = None if world is None else data_parallel(model, device)
    users = torch.tensor(np.asarray(pairs.users), dtype=torch.long, device=device)
    items = torch.tensor(np.asarray(pairs.items), dtype=torch.long, device=device)
    weights = None
    if config.playtime_weighting or config.history_weighting:
        if pairs.hours is None:
            raise ValueError("playtime or history weighting needs the play hours of the pairs")
        weights = playtime_weights(pairs.hours)
    history_weights = weights if config.history_weighting else None
    history = (
        UserHistory.from_pairs(pairs.users, pairs.items, n_users, history_weights).to(device)
        if model.uses_history or tuning is not None
        else None
    )
    if weights is not None:
        weights = weights.to(device)
        history_weights = weights if config.history_weighting else None
    log_q = (
        item_log_frequencies(pairs.items, n_items).to(device) if config.logq_correction else None
    )
    loss_weights = weights if config.playtime_weighting else None
    generator = torch.Generator().manual_seed(config.seed)
    show_progress = sys.stderr.isatty() if progress is None else progress
    show_progress = show_progress and (world is None or world.is_main)

    result = TrainResult(model=model, config=config)
    best_state, best_score, epoch = None, -np.inf, 0
    run_key = (  # hashing every pair costs a pass over the data: only when states are kept
        _training_run_key(pairs, n_users, n_items, config, tuning, device) if checkpoints else ""
    )
    saved = _load_epoch_state(checkpoints, run_key) if world is None or world.is_main else None
    if world is not None:
        saved = world.from_main(saved)
    if saved is not None:
        model.load_state_dict(saved["model_state"])
        optimizer.load_state_dict(saved["optimizer_state"])
        generator.set_state(saved["generator_state"])
        epoch, best_score = saved["epoch"], saved["best_score"]
        best_state = saved["best_state"]
        result.epoch_losses = list(saved["epoch_losses"])
        result.tuning_ndcg = list(saved["tuning_ndcg"])
        result.best_epoch = saved["best_epoch"]
        checkpoints.log(
            f"resuming from the epoch checkpoint {checkpoints.path}: epoch {epoch} of at most "
            f"{config.epochs} was complete"
        )
    started = time.perf_counter()
    while not _finished(epoch, result.best_epoch, config, tuning):
        epoch += 1
        model.train()
        total, batches = 0.0, 0
        batch_rows = list(shuffled_batches(len(users), config.batch_size, generator))
        for rows in tqdm(batch_rows, desc=f"epoch {epoch}", disable=not show_progress, leave=False):
            rows = rows.to(device)
            if towers is None:
                logits = batch_logits(
                    model,
                    users[rows],
                    items[rows],
                    history,
                    config,
                    log_q,
                    None if history_weights is None else history_weights[rows],
                )
                loss = in_batch_softmax_loss(
                    logits, None if loss_weights is None else loss_weights[rows]
                )
            else:
                loss = batch_loss(
                    towers,
                    world,
                    rows,
                    users,
                    items,
                    history,
                    config.temperature,
                    log_q,
                    config.mask_accidental_hits,
                    ACCIDENTAL_HIT_LOGIT,
                    history_weights,
                    loss_weights,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        result.epoch_losses.append(
            total / batches if world is None else world.mean(total / batches)
        )
        model.eval()
        score = None
        if tuning is not None:
            score = (
                tuning_ndcg(model, history, tuning)
                if world is None
                else sharded_tuning_ndcg(
                    model, history, tuning.users, tuning.items, tuning.k, world
                )
            )
            result.tuning_ndcg.append(score)
            if score > best_score:
                best_score, result.best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
        else:
            result.best_epoch = epoch
        if checkpoints is not None and (world is None or world.is_main):
            _save_epoch_state(
                checkpoints.path,
                {
                    "run_key": run_key,
                    "epoch": epoch,
                    "model_state": model.state_dict(),
                    "optimizer_state": optimizer.state_dict(),
                    "generator_state": generator.get_state(),
                    "epoch_losses": result.epoch_losses,
                    "tuning_ndcg": result.tuning_ndcg,
                    "best_epoch": result.best_epoch,
                    "best_score": float(best_score),
                    "best_state": best_state,
                },
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, result.epoch_losses[-1], score)
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - started
    model.eval()
    return result


def _finished(epoch: int, best_epoch: int, config: TrainConfig, tuning: TuningSet | None) -> bool:
    """All epochs run, or (when tuning) `patience` epochs without a better score."""
    return epoch >= config.epochs or (tuning is not None and epoch - best_epoch >= config.patience)


def _training_run_key(
    pairs: TrainingPairs,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    tuning: TuningSet | None,
    device: torch.device,
) -> str:
    """Hash of everything that decides a training run's weights, so only the same run resumes."""
    digest = hashlib.sha256()
    arrays = [pairs.users, pairs.items, pairs.hours]
    arrays += [tuning.users, tuning.items] if tuning is not None else [None, None]
    for array in arrays:
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    settings = {
        "format": CHECKPOINT_FORMAT,
        "code": _training_code_hash(),
        "config": asdict(config),
        "n_users": n_users,
        "n_items": n_items,
        "tuning_k": None if tuning is None else tuning.k,
        "device": device.type,
        "dtypes": [None if a is None else str(np.asarray(a).dtype) for a in arrays],
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


@cache
def _training_code_hash() -> str:
    """Hash of the code that computes the weights: state saved by other code is not resumed."""
    digest = hashlib.sha256()
    for module in (sys.modules[__name__], model_module, distributed_module):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def _save_epoch_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_epoch_state(checkpoints: EpochCheckpoints | None, run_key: str) -> dict[str, Any] | None:
    """The saved state when it belongs to this run; None (and a log line) otherwise."""
    if checkpoints is None or not Path(checkpoints.path).exists():
        return None
    try:
        state = torch.load(checkpoints.path, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable: a damaged disk, or not a torch file at all
        checkpoints.log(f"ignoring unreadable epoch checkpoint {checkpoints.path}: {error}")
        return None
    if not isinstance(state, dict) or state.get("run_key") != run_key:
        checkpoints.log(
            f"not resuming: the epoch checkpoint {checkpoints.path} is from other data or "
            "another configuration; training from the start"
        )
        return None
    return state


@dataclass
class FitResult:
    """The final model and, when epochs were selected, the run on the tuning split."""

    final: TrainResult
    tuning: TrainResult | None = None

    @property
    def seconds(self) -> float:
        return self.final.seconds + (self.tuning.seconds if self.tuning else 0.0)


def pairs_from_frame(frame: pl.DataFrame) -> TrainingPairs:
    hours = frame["play_time_hours"].to_numpy() if "play_time_hours" in frame.columns else None
    return TrainingPairs(frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy(), hours)


def history_from_frame(frame: pl.DataFrame, n_users: int, config: TrainConfig) -> UserHistory:
    """Users' training histories as the model pools them (weighted if it was trained so)."""
    weights = (
        playtime_weights(frame["play_time_hours"].to_numpy()) if config.history_weighting else None
    )
    return UserHistory.from_pairs(
        frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy(), n_users, weights
    )


def fit_two_tower(
    train: pl.DataFrame,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    split_strategy: str = "max_playtime",
    device: torch.device = torch.device("cpu"),
    on_epoch_end: Callable[[str, int, float, float | None], None] | None = None,
    progress: bool | None = None,
    state_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    world: World | None = None,
) -> FitResult:
    """Train on an indexed training split, selecting epochs on a tuning split carved from it.

    With `state_dir`, each phase (tune, refit or train) saves its state there after every
    epoch (`<phase>.pt`), and a rerun on the same data and configuration resumes from it.
    """

    def checkpoints(phase: str) -> EpochCheckpoints | None:
        return None if state_dir is None else EpochCheckpoints(Path(state_dir) / f"{phase}.pt", log)

    def report(phase: str) -> Callable[[int, float, float | None], None] | None:
        if on_epoch_end is None:
            return None
        return lambda epoch, loss, score: on_epoch_end(phase, epoch, loss, score)

    tuning_split = (
        leave_one_out_split(train, split_strategy, config.seed) if config.select_epochs else None
    )
    if tuning_split is None or tuning_split.val.height == 0:
        final = train_two_tower(
            pairs_from_frame(train),
            n_users,
            n_items,
            config,
            device,
            on_epoch_end=report("train"),
            progress=progress,
            checkpoints=checkpoints("train"),
            world=world,
        )
        return FitResult(final=final)
    tuning_set = TuningSet(
        tuning_split.val["user_idx"].to_numpy(), tuning_split.val["item_idx"].to_numpy()
    )
    tuned = train_two_tower(
        pairs_from_frame(tuning_split.train),
        n_users,
        n_items,
        config,
        device,
        tuning=tuning_set,
        on_epoch_end=report("tune"),
        progress=progress,
        checkpoints=checkpoints("tune"),
        world=world,
    )
    if not config.refit:
        return FitResult(final=tuned, tuning=tuned)
    final = train_two_tower(
        pairs_from_frame(train),
        n_users,
        n_items,
        replace(config, epochs=tuned.best_epoch, select_epochs=False),
        device,
        on_epoch_end=report("refit"),
        progress=progress,
        checkpoints=checkpoints("refit"),
        world=world,
    )
    final.tuning_ndcg = list(tuned.tuning_ndcg)
    final.best_epoch = tuned.best_epoch
    final.config = config  # as configured; best_epoch says how many epochs the refit ran
    return FitResult(final=final, tuning=tuned)


def checkpoint_extra(fit: FitResult, inputs: dict[str, str], world_size: int) -> dict[str, Any]:
    """What a checkpoint records beside the final model: the hashes of the files it was
    trained on, the tuning run's losses (for the training curve), the number of processes."""
    return {
        "inputs": dict(inputs),
        "world_size": world_size,
        "tuning_epoch_losses": list(fit.tuning.epoch_losses) if fit.tuning else [],
    }


def save_checkpoint(
    path: str | Path, result: TrainResult, extra: dict[str, Any] | None = None
) -> None:
    """Write a self-describing checkpoint atomically (weights, dimensions, config, history)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_state": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "model_args": result.model.model_args(),
        "config": asdict(result.config),
        "epochs_run": len(result.epoch_losses),
        "best_epoch": result.best_epoch,
        "epoch_losses": list(result.epoch_losses),
        "tuning_ndcg": list(result.tuning_ndcg),
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def checkpoint_fingerprint(checkpoint: str | Path | dict[str, Any]) -> str:
    """Hash of what a checkpoint holds (weights, dimensions, config, history), from its path
    or from the payload `load_checkpoint` already returned.

    `torch.save` writes a random serialization id into every file, so two saves of the same
    weights differ byte for byte; this hash does not.
    """
    payload = (
        checkpoint
        if isinstance(checkpoint, dict)
        else torch.load(checkpoint, map_location="cpu", weights_only=True)
    )
    digest = hashlib.sha256()
    for name in sorted(payload["model_state"]):
        digest.update(name.encode())
        digest.update(payload["model_state"][name].detach().cpu().contiguous().numpy().tobytes())
    rest = {key: value for key, value in payload.items() if key != "model_state"}
    digest.update(json.dumps(rest, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def load_checkpoint(
    path: str | Path, device: torch.device = torch.device("cpu")
) -> tuple[TwoTower, dict[str, Any]]:
    """Rebuild the model from a checkpoint without unpickling arbitrary objects."""
    payload = torch.load(path, map_location=device, weights_only=True)
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: not a gamerec checkpoint of format {CHECKPOINT_FORMAT} (found {found!r}); "
            "re-materialize two_tower_checkpoint"
        )
    model = TwoTower(**payload["model_args"]).to(device)
    model.load_state_dict(payload["model_state"])
    model.eval()
    return model, payload
