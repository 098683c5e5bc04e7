"""The processes of a training job, and the few collectives the loop needs.

A single process is a world of size 1, whose collectives return their input: the training
loop is written once for both. With `torchrun` (N processes), every process holds the whole
training table and draws the same seeded batch order, so all of them know the global batch;
each encodes its contiguous share (`shard`). The item vectors of all shares are all-gathered
with `torch.distributed.nn.functional.all_gather`, whose backward returns to each process the
gradient of *every* process's loss with respect to its own vectors: each user is scored
against the whole global batch, as in one process. DDP (`wrap`) averages parameter gradients.
Backends: gloo on CPU (sparse gradients supported), NCCL on GPU (dense only: NCCL cannot
all-reduce sparse tensors).
"""

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_gather


@dataclass(frozen=True)
class World:
    """This process's place in a training job: rank 0 of 1 unless `torchrun` started it."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")
    """Where collective tensors live: NCCL reduces CUDA tensors only."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: torch.Tensor) -> tuple[torch.Tensor, int, list[int]]:
        """This process's contiguous share of a global batch, its offset, every share's size."""
        if self.size == 1:
            return rows, 0, [len(rows)]
        shares = torch.tensor_split(rows, self.size)
        sizes = [len(share) for share in shares]
        return shares[self.rank], sum(sizes[: self.rank]), sizes

    def gather_rows(self, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Every process's rows in global batch order; differentiable (see the module doc)."""
        if self.size == 1:
            return local
        width = max(sizes)
        padded = F.pad(local, (0, 0, 0, width - local.shape[0]))  # all_gather: equal shapes
        with warnings.catch_warnings():
            # Deprecated in favour of the private `_functional_collectives`; this public one is
            # the one tested here (gloo), and its backward is the reduce-scatter described above.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*all_gather.*")
            gathered = all_gather(padded)
        return torch.cat([vectors[:n] for vectors, n in zip(gathered, sizes, strict=True)])

    def gather_objects(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order."""
        if self.size == 1:
            return [value]
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, value)
        return gathered

    def mean(self, value: float) -> float:
        """The mean of a float over every process."""
        if self.size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total.item()) / self.size

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every process (e.g. the epoch state only rank 0 could read:
        without a shared folder the others would resume differently and the job would hang)."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def wrap(self, module: nn.Module, sparse_gradients: bool) -> nn.Module:
        """The module as the loop calls it: itself, or under DDP in a world of several."""
        if self.size == 1:
            return module
        if self.device.type == "cuda" and sparse_gradients:
            raise ValueError(
                "sparse gradients cannot be all-reduced by NCCL: set "
                "GAMEREC_SPARSE_GRADIENTS=false to train on several GPUs"
            )
        device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


SINGLE_PROCESS = World()


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
