"""The training loop: epochs of in-batch softmax over seeded batches, one process or N.

Batches are slices of a seeded permutation of the training pairs held as index tensors: no
per-sample Dataset or DataLoader, which is most of the cost of the usual approach. Every
process of a job runs this same loop (a single process is a world of size 1): it encodes its
share of each global batch, gathers the batch's item vectors, and takes its share of the loss
(`world`, `loss`). With a tuning set, each epoch is scored on it and the best epoch's weights
are kept; training stops after `patience` epochs without improvement. With a state path, the
state is saved after every epoch, and a rerun of the same run resumes from it.
"""

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from gamerec_assets.core.metrics import TrainItems, heldout_ranks, ranking_metrics
from gamerec_assets.core.model import TwoTower, UserHistory
from gamerec_assets.core.settings import TrainConfig, Tuning
from gamerec_assets.core.training.loss import (
    RetrievalLoss,
    item_log_frequencies,
    playtime_weights,
)
from gamerec_assets.core.training.state import TrainingState, read_saved_state, run_key
from gamerec_assets.core.training.world import SINGLE_PROCESS, World


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
    """Held-out games of a tuning split carved from the training data, scored by NDCG@k."""

    users: np.ndarray
    items: np.ndarray
    k: int = Tuning().k

    @torch.no_grad()
    def score(self, model: TwoTower, history: UserHistory, world: World = SINGLE_PROCESS) -> float:
        """NDCG@k, the users' other games masked; each process ranks its share of the users."""
        share = slice(world.rank, None, world.size)
        train_items = TrainItems(history.indptr.cpu().numpy(), history.items.cpu().numpy())
        ranks = heldout_ranks(
            model.user_vectors(history),
            model.item_vectors(),
            train_items,
            self.users[share],
            self.items[share],
        )
        everyone = np.concatenate(world.gather_objects(np.asarray(ranks)))
        return ranking_metrics(everyone, (self.k,))[f"ndcg@{self.k}"]


@dataclass
class TrainResult:
    model: TwoTower
    config: TrainConfig
    epoch_losses: list[float] = field(default_factory=list)
    tuning_ndcg: list[float] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


class PairTowers(nn.Module):
    """Both towers' vectors for a batch of pairs: the module DDP wraps (its forward is what
    DDP synchronises); the wrapped `TwoTower` is what gets saved."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model

    def forward(self, users, items, history, pair_weights):
        return self.model.encode_pairs(users, items, history, pair_weights)


@dataclass(frozen=True)
class BatchSource:
    """The training pairs as tensors on the device, with what each batch needs beside them."""

    users: torch.Tensor
    items: torch.Tensor
    history: UserHistory | None
    history_weights: torch.Tensor | None
    loss_weights: torch.Tensor | None

    @classmethod
    def build(
        cls, pairs: TrainingPairs, n_users: int, config: TrainConfig, device: torch.device
    ) -> "BatchSource":
        weights = None
        if config.playtime_weighting or config.history_weighting:
            if pairs.hours is None:
                raise ValueError("playtime or history weighting needs the play hours of the pairs")
            weights = playtime_weights(pairs.hours)
        history_weights = weights if config.history_weighting else None
        history = UserHistory.from_pairs(pairs.users, pairs.items, n_users, history_weights)
        weights = None if weights is None else weights.to(device)
        return cls(
            users=torch.tensor(np.asarray(pairs.users), dtype=torch.long, device=device),
            items=torch.tensor(np.asarray(pairs.items), dtype=torch.long, device=device),
            history=history.to(device),
            history_weights=weights if config.history_weighting else None,
            loss_weights=weights if config.playtime_weighting else None,
        )


def shuffled_batches(
    n_rows: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Row indices of one epoch: a seeded permutation cut into consecutive batches.

    The last batch may be short, so a batch size above the number of pairs still trains.
    """
    order = torch.randperm(n_rows, generator=generator)
    yield from torch.split(order, batch_size)


def make_optimizer(model: TwoTower, config: TrainConfig) -> torch.optim.Optimizer:
    """SparseAdam when gradients are sparse: its step touches only the rows in the batch, so
    its cost follows the batch rather than the tables. Otherwise AdamW over every row, with the
    fused kernel (one pass over each table instead of one per arithmetic step: 2x on CPU)."""
    if config.sparse_gradients:
        return torch.optim.SparseAdam(list(model.parameters()), lr=config.lr)
    return torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
    )


@contextmanager
def deterministic_on_cpu(device: torch.device) -> Iterator[None]:
    """Multi-threaded embedding backward passes on CPU are otherwise racy; the process-wide
    setting is restored afterwards, so other code (and CUDA runs) is not affected."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(device.type == "cpu" or was_deterministic)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def run_epoch(
    towers: nn.Module,
    loss: RetrievalLoss,
    data: BatchSource,
    optimizer: torch.optim.Optimizer,
    batches: list[torch.Tensor],
    world: World,
    progress: bool,
) -> float:
    """One pass over the batches; the mean batch loss over every process."""
    total = 0.0
    for rows in tqdm(batches, desc="batches", disable=not progress, leave=False):
        rows = rows.to(data.users.device)
        local, offset, sizes = world.shard(rows)
        history_weights = None if data.history_weights is None else data.history_weights[local]
        user_vectors, item_vectors = towers(
            data.users[local], data.items[local], data.history, history_weights
        )
        batch_loss = loss(
            user_vectors,
            world.gather_rows(item_vectors, sizes),
            data.items[rows],
            positives=torch.arange(len(local), device=rows.device) + offset,
            weights=None if data.loss_weights is None else data.loss_weights[rows],
            world_size=world.size,
        )
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        optimizer.step()
        total += batch_loss.item()
    return world.mean(total / len(batches))


def train_model(
    pairs: TrainingPairs,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    world: World = SINGLE_PROCESS,
    tuning: TuningSet | None = None,
    state_path: Path | None = None,
    log: Callable[[str], None] = print,
    phase: str = "train",
    progress: bool | None = None,
) -> TrainResult:
    """Train for `config.epochs` epochs, or (with `tuning`) until `patience` epochs pass
    without a better tuning NDCG, then keep the best epoch's weights. Deterministic for a seed
    on CPU. With `state_path`, saves the state after each epoch and resumes from a matching
    saved state. Every process of a job returns the same model; rank 0 alone saves and logs."""
    device = world.device
    with deterministic_on_cpu(device):
        torch.manual_seed(config.seed)
        model = TwoTower(n_users, n_items, config.embed_dim, config.user_tower, config.normalize)
        model = model.to(device).use_sparse_gradients(config.sparse_gradients)
        optimizer = make_optimizer(model, config)
        data = BatchSource.build(pairs, n_users, config, device)
        log_q = item_log_frequencies(pairs.items, n_items).to(device)
        loss = RetrievalLoss(
            config.temperature,
            log_q if config.logq_correction else None,
            config.mask_accidental_hits,
        )
        towers = world.wrap(PairTowers(model), config.sparse_gradients)
        state = TrainingState(generator=torch.Generator().manual_seed(config.seed))
        key = _run_key(pairs, n_users, n_items, config, tuning, device) if state_path else ""
        saved = read_saved_state(state_path, key, log) if world.is_main else None
        saved = world.from_main(saved)
        if saved is not None:
            state.restore(saved, model, optimizer)
            log(
                f"resuming from the epoch checkpoint {state_path}: epoch {state.epoch} of at "
                f"most {config.epochs} was complete"
            )
        show_progress = (sys.stderr.isatty() if progress is None else progress) and world.is_main
        started = time.perf_counter()
        while not state.finished(config.epochs, config.patience if tuning else None):
            model.train()
            batches = list(shuffled_batches(len(data.users), config.batch_size, state.generator))
            epoch_loss = run_epoch(towers, loss, data, optimizer, batches, world, show_progress)
            model.eval()
            score = None if tuning is None else tuning.score(model, data.history, world)
            state.record_epoch(epoch_loss, score, model)
            if state_path is not None and world.is_main:
                state.save(state_path, key, model, optimizer)
            shown = "" if score is None else f", tuning NDCG@{tuning.k} {score:.4f}"
            log(f"{phase} epoch {state.epoch}: loss {epoch_loss:.4f}{shown}")
        if state.best_weights is not None:
            model.load_state_dict(state.best_weights)
        model.eval()
        return TrainResult(
            model=model,
            config=config,
            epoch_losses=state.epoch_losses,
            tuning_ndcg=state.tuning_scores,
            best_epoch=state.best_epoch,
            seconds=time.perf_counter() - started,
        )


def _run_key(
    pairs: TrainingPairs,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    tuning: TuningSet | None,
    device: torch.device,
) -> str:
    arrays = [pairs.users, pairs.items, pairs.hours]
    arrays += [tuning.users, tuning.items] if tuning is not None else [None, None]
    settings = {
        "config": config.model_dict(),
        "n_users": n_users,
        "n_items": n_items,
        "tuning_k": None if tuning is None else tuning.k,
        "device": device.type,
    }
    return run_key(arrays, settings)
