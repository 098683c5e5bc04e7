"""Data-parallel training on torch's own engine: DistributedDataParallel under `torchrun`.

Every process holds the whole training table and draws the same seeded batch order, so all of
them know the global batch; each encodes its contiguous share of the rows (`shard_rows`). The
item vectors of all shares are all-gathered with `torch.distributed.nn.functional.all_gather`,
whose backward returns to each process the gradient of *every* process's loss with respect to
its own vectors, so each user is scored against the whole global batch (the number of in-batch
negatives grows with the world size) and the gradients are those of the single-process loss
over that batch. The logQ correction and accidental-hit masking use the global batch's item ids
and frequencies over the whole table, exactly as in one process. DDP then averages parameter
gradients, which is why each process's loss is scaled by the world size (`batch_loss`).
Backends: gloo on CPU (sparse gradients supported), NCCL on GPU (dense only: NCCL cannot
all-reduce sparse tensors). Only rank 0 writes files and reports; see `train_worker`.
"""

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_gather

from gamerec_assets.core.metrics import TrainItems, heldout_ranks, ranking_metrics
from gamerec_assets.core.model import TwoTower, UserHistory


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel job."""

    rank: int
    size: int
    device: torch.device = torch.device("cpu")
    """Where collective tensors live: NCCL reduces CUDA tensors only."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        """The mean of a float over every process."""
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total.item()) / self.size

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every process (e.g. the epoch state only rank 0 could read:
        without a shared folder the others would resume differently and the job would hang)."""
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Join the job `torchrun` started (RANK, WORLD_SIZE, MASTER_ADDR in the environment)."""
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend_for(device))
    try:
        yield World(dist.get_rank(), dist.get_world_size(), device)
    finally:
        dist.destroy_process_group()


class PairTowers(nn.Module):
    """The two towers of a batch of pairs, as the module DDP wraps (its forward is what DDP
    synchronises); the wrapped `TwoTower` is what gets saved."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        history: UserHistory | None,
        pair_weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_pairs(users, items, history, pair_weights)


def data_parallel(model: TwoTower, device: torch.device) -> nn.Module:
    if device.type == "cuda" and model.sparse_gradients:
        raise ValueError(
            "sparse gradients cannot be all-reduced by NCCL: set GAMEREC_SPARSE_GRADIENTS=false "
            "to train on several GPUs"
        )
    device_ids = (
        [device.index if device.index is not None else 0] if device.type == "cuda" else None
    )
    return nn.parallel.DistributedDataParallel(PairTowers(model), device_ids=device_ids)


def shard_rows(rows: torch.Tensor, world: World) -> tuple[torch.Tensor, list[int]]:
    """This process's contiguous share of a global batch, and every share's size."""
    shares = torch.tensor_split(rows, world.size)
    return shares[world.rank], [len(share) for share in shares]


def gather_item_vectors(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every process's item vectors in global batch order; differentiable (see module doc)."""
    width = max(sizes)
    padded = F.pad(local, (0, 0, 0, width - local.shape[0]))  # all_gather needs equal shapes
    with warnings.catch_warnings():
        # Deprecated in favour of the private `_functional_collectives`; this public one is
        # the one tested here (gloo), and its backward is the reduce-scatter described above.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*all_gather.*")
        gathered = all_gather(padded)
    return torch.cat([vectors[:n] for vectors, n in zip(gathered, sizes, strict=True)])


def batch_loss(
    towers: nn.Module,
    world: World,
    rows: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    history: UserHistory | None,
    temperature: float,
    log_q: torch.Tensor | None,
    mask_accidental_hits: bool,
    accidental_hit_logit: float,
    history_weights: torch.Tensor | None,
    loss_weights: torch.Tensor | None,
) -> torch.Tensor:
    """This process's share of the in-batch softmax loss of a global batch `rows`.

    Scaled so that DDP's average over processes is the single-process loss of the batch: the
    (weighted) mean over all its rows.
    """
    local, sizes = shard_rows(rows, world)
    offset = sum(sizes[: world.rank])
    user_vectors, item_vectors = towers(
        users[local],
        items[local],
        history,
        None if history_weights is None else history_weights[local],
    )
    batch_items = items[rows]
    logits = user_vectors @ gather_item_vectors(item_vectors, sizes).T / temperature
    if log_q is not None:
        logits = logits - log_q[batch_items][None, :]
    positives = torch.arange(len(local), device=logits.device) + offset
    if mask_accidental_hits:
        same_item = items[local][:, None] == batch_items[None, :]
        same_item[torch.arange(len(local)), positives] = False
        logits = logits.masked_fill(same_item, accidental_hit_logit)
    row_losses = F.cross_entropy(logits, positives, reduction="none")
    if loss_weights is None:
        return row_losses.sum() * world.size / len(rows)
    return (row_losses * loss_weights[local]).sum() * world.size / loss_weights[rows].sum()


@torch.no_grad()
def sharded_tuning_ndcg(
    model: TwoTower,
    history: UserHistory,
    users: np.ndarray,
    items: np.ndarray,
    k: int,
    world: World,
) -> float:
    """NDCG@k of the tuning users, each process ranking its share of them."""
    share = slice(world.rank, None, world.size)
    train_items = TrainItems(
        indptr=history.indptr.cpu().numpy(), indices=history.items.cpu().numpy()
    )
    ranks = heldout_ranks(
        model.user_vectors(history), model.item_vectors(), train_items, users[share], items[share]
    )
    gathered: list[np.ndarray | None] = [None] * world.size
    dist.all_gather_object(gathered, np.asarray(ranks))
    return ranking_metrics(np.concatenate(gathered), (k,))[f"ndcg@{k}"]
