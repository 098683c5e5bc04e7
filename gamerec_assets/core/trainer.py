"""Training loop for the two-tower model: InfoNCE over in-batch negatives, Adam.

Batches are slices of a seeded permutation of the training pairs held as two index tensors:
no per-sample Dataset or DataLoader, which is most of the cost of the usual approach. The
checkpoint describes itself (weights, model dimensions, every hyperparameter, seed, epochs
run, loss history) and is written atomically and read with `weights_only=True`.
"""

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gamerec_assets.core.io import atomic_path
from gamerec_assets.core.model import TwoTower

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 1024
    embed_dim: int = 64
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")


@dataclass
class TrainResult:
    model: TwoTower
    config: TrainConfig
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def shuffled_batches(
    n_rows: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Row indices of one epoch: a seeded permutation cut into consecutive batches.

    The last batch may be short, so a batch size above the number of pairs still trains.
    """
    order = torch.randperm(n_rows, generator=generator)
    yield from torch.split(order, batch_size)


def in_batch_softmax_loss(logits: torch.Tensor) -> torch.Tensor:
    """InfoNCE: each user's own item (the diagonal) against the batch's other items."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def train_two_tower(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    device: torch.device = torch.device("cpu"),
    on_epoch_end: Callable[[int, float], None] | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train on (user_idx, item_idx) positive pairs; deterministic for a seed on CPU."""
    if len(user_idx) != len(item_idx):
        raise ValueError(f"user_idx has {len(user_idx)} rows but item_idx has {len(item_idx)}")
    if len(user_idx) == 0:
        raise ValueError("no training pairs: the training split is empty")
    torch.manual_seed(config.seed)
    model = TwoTower(n_users, n_items, config.embed_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    users = torch.tensor(np.asarray(user_idx), dtype=torch.long, device=device)
    items = torch.tensor(np.asarray(item_idx), dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(config.seed)
    show_progress = sys.stderr.isatty() if progress is None else progress

    result = TrainResult(model=model, config=config)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, batches = 0.0, 0
        batch_rows = list(shuffled_batches(len(users), config.batch_size, generator))
        for rows in tqdm(batch_rows, desc=f"epoch {epoch}", disable=not show_progress, leave=False):
            rows = rows.to(device)
            loss = in_batch_softmax_loss(model(users[rows], items[rows]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        result.epoch_losses.append(total / batches)
        if on_epoch_end is not None:
            on_epoch_end(epoch, result.epoch_losses[-1])
    result.seconds = time.perf_counter() - started
    model.eval()
    return result


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
        "epoch_losses": list(result.epoch_losses),
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def checkpoint_fingerprint(path: str | Path) -> str:
    """Hash of what a checkpoint holds (weights, dimensions, config, history).

    `torch.save` writes a random serialization id into every file, so two saves of the same
    weights differ byte for byte; this hash does not.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for name in sorted(payload["model_state"]):
        digest.update(name.encode())
        digest.update(payload["model_state"][name].contiguous().numpy().tobytes())
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
