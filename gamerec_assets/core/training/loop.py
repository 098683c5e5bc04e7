"""The training loop: epochs of in-batch softmax over seeded batches, one process or N.

Batches are slices of a seeded permutation of the training pairs held as index tensors: no
per-sample Dataset or DataLoader, which is most of the cost of the usual approach. Every
process of a job runs this same loop (a single process is a world of size 1): it encodes its
share of each global batch, gathers the batch's item vectors, and takes its share of the loss
(`world`, `loss`). With a tuning set, each epoch is scored on it and the best epoch's weights
are kept; training stops after `patience` epochs without improvement. With a state path, the
state is saved after every epoch, and a rerun of the same run resumes from it.
"""

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm.auto import tqdm

from gamerec_assets.core.metrics import TrainItems, UserMetrics, dot_product_scorer, evaluate_scorer
from gamerec_assets.core.model import HistoryBags, TwoTower, UserHistory
from gamerec_assets.core.settings import TrainConfig, Tuning
from gamerec_assets.core.training.loss import (
    RetrievalLoss,
    item_log_frequencies,
    playtime_weights,
)
from gamerec_assets.core.training.optim import RowAdam
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

    @classmethod
    def of(cls, heldout: pl.DataFrame, k: int) -> "TuningSet":
        """The held-out (`user_idx`, `item_idx`) rows of a tuning split."""
        return cls(heldout["user_idx"].to_numpy(), heldout["item_idx"].to_numpy(), k)

    @torch.no_grad()
    def score(
        self, model: TwoTower, history: UserHistory, world: World = SINGLE_PROCESS
    ) -> tuple[float, float]:
        """NDCG@k and its standard error, the users' other games masked. Only the tuning
        users are encoded, and each process scores its share of them."""
        mine = np.unique(self.users)[world.rank :: world.size]
        share = np.isin(self.users, mine)
        vectors = model.user_vectors(history, torch.from_numpy(mine))
        train_items = TrainItems(history.indptr.cpu().numpy(), history.items.cpu().numpy())
        scores = dot_product_scorer(vectors, model.item_vectors())
        metrics = evaluate_scorer(
            lambda chunk: scores(np.searchsorted(mine, chunk)),
            model.n_items,
            train_items,
            self.users[share],
            self.items[share],
            (self.k,),
        )
        name = f"ndcg@{self.k}"
        shares = world.gather_objects((metrics.users, metrics.values[name]))
        everyone = UserMetrics(
            np.concatenate([users for users, _ in shares]),
            {name: np.concatenate([values for _, values in shares])},
        )
        return everyone.with_error(name)


@dataclass(frozen=True)
class Schedule:
    """How training is cut into periods, each ending with the tuning score and a saved state:
    an epoch, or, when an epoch is longer than `period_pairs` pairs, the fewest equal parts of
    it no longer than that (so that on large data the tuning split is scored, and a killed run
    resumes, more often than once an epoch; equal, so that each period counts alike for
    patience and "epoch 1.5" means half of the second epoch)."""

    steps_per_epoch: int
    period_steps: int

    @classmethod
    def of(cls, n_pairs: int, batch_size: int, period_pairs: int = 0) -> "Schedule":
        steps_per_epoch = math.ceil(n_pairs / batch_size)
        period_steps = steps_per_epoch
        if period_pairs:
            longest = max(1, math.ceil(period_pairs / batch_size))
            period_steps = math.ceil(steps_per_epoch / math.ceil(steps_per_epoch / longest))
        return cls(steps_per_epoch, period_steps)

    @property
    def periods_per_epoch(self) -> int:
        return math.ceil(self.steps_per_epoch / self.period_steps)

    def epochs(self, periods: int) -> float:
        """Periods as epochs, e.g. 3 or 1.25."""
        return round(periods / self.periods_per_epoch, 3)


@dataclass
class TrainResult:
    model: TwoTower
    config: TrainConfig
    epoch_losses: list[float] = field(default_factory=list)
    """The mean loss of each period (an epoch, unless epochs are longer than a period)."""
    tuning_ndcg: list[float] = field(default_factory=list)
    tuning_ndcg_error: list[float] = field(default_factory=list)
    best_epoch: float = 0
    """The best period, in epochs (3, or 1.25 when a period is a quarter of an epoch)."""
    best_period: int = 0
    seconds: float = 0.0


class PairTowers(nn.Module):
    """Both towers' vectors for a batch of pairs: the module DDP wraps (its forward is what
    DDP synchronises); the wrapped `TwoTower` is what gets saved."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model

    def forward(self, users, items, bags, uniform_items=None):
        user_vectors, item_vectors = self.model.encode_pairs(users, items, bags)
        if uniform_items is None:
            return user_vectors, item_vectors, None
        return user_vectors, item_vectors, self.model.encode_items(uniform_items)


@dataclass(frozen=True)
class BatchSource:
    """The training pairs as tensors on the device, with what each batch needs beside them."""

    users: torch.Tensor
    items: torch.Tensor
    history: UserHistory | None
    """The pairs' histories: what the history tower pools and tuning masks."""
    loss_weights: torch.Tensor | None
    history_sample: int
    """Games a bag holds at most (0: all)."""
    history_dropout: float
    pools_history: bool
    n_items: int
    negatives: int
    """Uniform negatives drawn for each batch."""

    @classmethod
    def build(
        cls,
        pairs: TrainingPairs,
        n_users: int,
        n_items: int,
        config: TrainConfig,
        device: torch.device,
        pools_history: bool,
        needs_history: bool,
    ) -> "BatchSource":
        weights = None
        if config.playtime_weighting or config.history_weighting:
            if pairs.hours is None:
                raise ValueError("playtime or history weighting needs the play hours of the pairs")
            weights = playtime_weights(pairs.hours)
        history = None
        if pools_history or needs_history:
            history_weights = weights if config.history_weighting else None
            history = UserHistory.from_pairs(pairs.users, pairs.items, n_users, history_weights)
            history = history.to(device)
        return cls(
            users=torch.tensor(np.asarray(pairs.users), dtype=torch.long, device=device),
            items=torch.tensor(np.asarray(pairs.items), dtype=torch.long, device=device),
            history=history,
            loss_weights=None if not config.playtime_weighting else weights.to(device),
            history_sample=config.history_sample,
            history_dropout=config.history_dropout,
            pools_history=pools_history,
            n_items=n_items,
            negatives=config.negatives,
        )

    def bags(
        self, rows: torch.Tensor, local: slice, generator: torch.Generator
    ) -> HistoryBags | None:
        """The history bags of this process's `local` share of the global batch `rows`. The
        draws are made for the whole global batch, so every process's generator stays in
        step with the others'."""
        if not self.pools_history:
            return None
        randoms = drop_randoms = None
        if self.history_sample:
            randoms = torch.rand(len(rows), self.history_sample, generator=generator)
            randoms = randoms[local].to(rows.device)
        if self.history_dropout:
            width = self.history_sample or self.longest_history
            drop_randoms = torch.rand(len(rows), width, generator=generator)
            drop_randoms = drop_randoms[local].to(rows.device)
        return self.history.sample_bags(
            rows[local], self.history_sample, randoms, self.history_dropout, drop_randoms
        )

    @cached_property
    def longest_history(self) -> int:
        return int((self.history.indptr[1:] - self.history.indptr[:-1]).max())

    def uniform_items(self, generator: torch.Generator) -> torch.Tensor | None:
        """This batch's uniform negatives, the same in every process (drawn from the shared
        generator), or None without them."""
        if not self.negatives:
            return None
        drawn = torch.randint(self.n_items, (self.negatives,), generator=generator)
        return drawn.to(self.users.device)


def shuffled_batches(
    n_rows: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Row indices of one epoch: a seeded permutation cut into consecutive batches.

    The last batch may be short, so a batch size above the number of pairs still trains.
    """
    order = torch.randperm(n_rows, generator=generator)
    yield from torch.split(order, batch_size)


def make_optimizer(model: TwoTower, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW on the rows a batch touched when gradients are sparse (`RowAdam`: SparseAdam's
    arithmetic, faster, with lazy decay), so a step costs the batch rather than the tables.
    Otherwise AdamW over every row, with the fused kernel (one pass over each table instead
    of one per arithmetic step: 2x on CPU)."""
    if config.sparse_gradients:
        return RowAdam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
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
    generator: torch.Generator,
    world: World,
    progress: bool,
) -> float:
    """One pass over the batches; the mean batch loss over every process."""
    total = 0.0
    for rows in tqdm(batches, desc="batches", disable=not progress, leave=False):
        rows = rows.to(data.users.device)
        local, offset, sizes = world.shard(rows)
        share = slice(offset, offset + len(local))
        bags, uniform_items = data.bags(rows, share, generator), data.uniform_items(generator)
        user_vectors, item_vectors, uniform_vectors = towers(
            data.users[local], data.items[local], bags, uniform_items
        )
        batch_loss = loss(
            user_vectors,
            world.gather_rows(item_vectors, sizes),
            data.items[rows],
            positives=torch.arange(len(local), device=rows.device) + offset,
            weights=None if data.loss_weights is None else data.loss_weights[rows],
            world_size=world.size,
            uniform=None if uniform_items is None else (uniform_vectors, uniform_items),
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
    period_pairs: int = 0,
    periods: int | None = None,
    on_score: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train for `config.epochs` epochs (or exactly `periods` periods, see `Schedule`), and
    with `tuning` stop once `patience` periods pass without a better tuning NDCG, keeping the
    best period's weights. Deterministic for a seed on CPU. With `state_path`, saves the
    state after each period and resumes from a matching saved state. Every process of a job
    returns the same model; rank 0 alone saves and logs. `on_score(period, ndcg)` hears each
    tuning score (a search prunes a bad trial by raising from it)."""
    with deterministic_on_cpu(world.device):
        run = TrainingRun.start(pairs, n_users, n_items, config, world, tuning)
        schedule = Schedule.of(len(pairs.users), config.batch_size, period_pairs)
        limit = periods if periods is not None else config.epochs * schedule.periods_per_epoch
        key = _run_key(pairs, n_users, n_items, config, tuning, schedule, limit, world.device.type)
        run.resume(state_path if state_path else None, key, log, limit, schedule)
        show_progress = (sys.stderr.isatty() if progress is None else progress) and world.is_main
        state, started, batches = run.state, time.perf_counter(), None
        while not state.finished(limit, config.patience if tuning else None):
            chunk = state.periods % schedule.periods_per_epoch
            if batches is None or chunk == 0:
                batches = run.epoch_batches(chunk, config.batch_size)
            period = batches[chunk * schedule.period_steps : (chunk + 1) * schedule.period_steps]
            loss = run.train_period(period, show_progress)
            score = None if tuning is None else tuning.score(run.model, run.data.history, world)
            state.record_period(loss, score, run.model)
            if state_path is not None and world.is_main:
                state.save(state_path, key, run.model, run.optimizer)
            shown = "" if score is None else f", tuning NDCG@{tuning.k} {score[0]:.4f}"
            shown += "" if score is None else f" ± {score[1]:.4f}"
            log(f"{phase} epoch {schedule.epochs(state.periods):g}: loss {loss:.4f}{shown}")
            if on_score is not None and score is not None:
                on_score(state.periods, score[0])
        return run.result(schedule, time.perf_counter() - started)


@dataclass
class TrainingRun:
    """A model being trained, with everything its periods need."""

    model: TwoTower
    optimizer: torch.optim.Optimizer
    data: BatchSource
    loss: RetrievalLoss
    towers: nn.Module
    world: World
    config: TrainConfig
    state: TrainingState

    @classmethod
    def start(
        cls,
        pairs: TrainingPairs,
        n_users: int,
        n_items: int,
        config: TrainConfig,
        world: World,
        tuning: TuningSet | None,
    ) -> "TrainingRun":
        device = world.device
        torch.manual_seed(config.seed)
        model = TwoTower.for_config(n_users, n_items, config)
        model = model.to(device).use_sparse_gradients(config.sparse_gradients)
        data = BatchSource.build(
            pairs, n_users, n_items, config, device, model.uses_history, tuning is not None
        )
        log_q = item_log_frequencies(pairs.items, n_items).to(device)
        loss = RetrievalLoss(
            config.temperature,
            log_q if config.logq_correction else None,
            config.mask_accidental_hits,
        )
        towers = world.wrap(PairTowers(model), config.sparse_gradients)
        state = TrainingState.seeded(config.seed)
        return cls(model, make_optimizer(model, config), data, loss, towers, world, config, state)

    def resume(
        self,
        path: Path | None,
        key: str,
        log: Callable[[str], None],
        limit: int,
        schedule: Schedule,
    ) -> None:
        """Continue from the state saved at `path` when it belongs to this run."""
        saved = read_saved_state(path, key, log) if self.world.is_main else None
        saved = self.world.from_main(saved)
        if saved is not None:
            self.state.restore(saved, self.model, self.optimizer)
            done, most = schedule.epochs(self.state.periods), schedule.epochs(limit)
            log(
                f"resuming from the epoch checkpoint {path}: epoch {done:g} of at most "
                f"{most:g} was complete"
            )

    def epoch_batches(self, chunk: int, batch_size: int) -> list[torch.Tensor]:
        """This epoch's batches: a new permutation, or (resuming mid-epoch) the current one
        drawn again from the state the epoch started with."""
        if chunk == 0:
            self.state.epoch_order_state = self.state.order.get_state()
        else:
            self.state.order.set_state(self.state.epoch_order_state)
        return list(shuffled_batches(len(self.data.users), batch_size, self.state.order))

    def train_period(self, batches: list[torch.Tensor], progress: bool) -> float:
        self.model.train()
        loss = run_epoch(
            self.towers,
            self.loss,
            self.data,
            self.optimizer,
            batches,
            self.state.sampling,
            self.world,
            progress,
        )
        self.model.eval()
        return loss

    def result(self, schedule: Schedule, seconds: float) -> TrainResult:
        state = self.state
        if state.best_weights is not None:
            self.model.load_state_dict(state.best_weights)
        self.model.eval()
        return TrainResult(
            model=self.model,
            config=self.config,
            epoch_losses=state.epoch_losses,
            tuning_ndcg=[score for score, _ in state.tuning_scores],
            tuning_ndcg_error=[error for _, error in state.tuning_scores],
            best_epoch=schedule.epochs(state.best_period),
            best_period=state.best_period,
            seconds=seconds,
        )


def _run_key(
    pairs: TrainingPairs,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    tuning: TuningSet | None,
    schedule: Schedule,
    limit: int,
    device_type: str,
) -> str:
    arrays = [pairs.users, pairs.items, pairs.hours]
    arrays += [tuning.users, tuning.items] if tuning is not None else [None, None]
    settings = {
        "config": config.model_dict(),
        "n_users": n_users,
        "n_items": n_items,
        "tuning_k": None if tuning is None else tuning.k,
        "schedule": [schedule.steps_per_epoch, schedule.period_steps, limit],
        "device": device_type,
    }
    return run_key(arrays, settings)
