"""The training state after each completed period, from which a killed run resumes exactly.

The state holds the weights, the optimizer's moments, the two random streams (batch order and
history sampling) with the order stream's state where the current epoch began, the losses and
tuning scores so far, and the best period's weights. It is saved under a run key (a hash of
the training data, the configuration, the schedule and the training code), so only the very
same run resumes; any other run ignores the file and overwrites it. Files are written
atomically and read with `weights_only=True`.
"""

import copy
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gamerec_assets.core.codehash import modules_fingerprint
from gamerec_assets.core.io import atomic_path

STATE_FORMAT = 2
TRAINING_CODE = ("gamerec_assets.core.training.loop",)
"""The training code whose changes make a saved state useless (its imports count too)."""


@dataclass
class TrainingState:
    """Where a training run stands: periods done, their losses and scores, the best so far."""

    order: torch.Generator
    """Draws each epoch's batch order."""
    sampling: torch.Generator
    """Draws the history samples."""
    epoch_order_state: torch.Tensor | None = None
    """`order`'s state when the current epoch's permutation was drawn (to draw it again)."""
    periods: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    tuning_scores: list[tuple[float, float]] = field(default_factory=list)
    """(NDCG, its standard error) after each period, when tuning."""
    best_period: int = 0
    best_score: float = -math.inf
    best_weights: dict[str, torch.Tensor] | None = None

    @classmethod
    def seeded(cls, seed: int) -> "TrainingState":
        return cls(
            order=torch.Generator().manual_seed(seed),
            sampling=torch.Generator().manual_seed(seed + 1),
        )

    def record_period(
        self, loss: float, score: tuple[float, float] | None, model: torch.nn.Module
    ) -> None:
        """Close a period; with a tuning score, remember the best period's weights."""
        self.periods += 1
        self.epoch_losses.append(loss)
        if score is None:
            self.best_period = self.periods
            return
        self.tuning_scores.append(score)
        if score[0] > self.best_score:
            self.best_score, self.best_period = score[0], self.periods
            self.best_weights = copy.deepcopy(model.state_dict())

    def finished(self, periods: int, patience: int | None) -> bool:
        """All periods run, or (when tuning) `patience` periods without a better score."""
        stalled = patience is not None and self.periods - self.best_period >= patience
        return self.periods >= periods or stalled

    def save(
        self, path: Path, run_key: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        payload = {
            "format": STATE_FORMAT,
            "run_key": run_key,
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "order_state": self.order.get_state(),
            "sampling_state": self.sampling.get_state(),
            "epoch_order_state": self.epoch_order_state,
            "periods": self.periods,
            "epoch_losses": self.epoch_losses,
            "tuning_scores": self.tuning_scores,
            "best_period": self.best_period,
            "best_score": float(self.best_score),
            "best_weights": self.best_weights,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def restore(
        self, saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        """Continue from a saved state (see `read_saved_state`)."""
        model.load_state_dict(saved["model_state"])
        optimizer.load_state_dict(saved["optimizer_state"])
        self.order.set_state(saved["order_state"])
        self.sampling.set_state(saved["sampling_state"])
        self.epoch_order_state = saved["epoch_order_state"]
        self.periods, self.best_period = saved["periods"], saved["best_period"]
        self.epoch_losses = list(saved["epoch_losses"])
        self.tuning_scores = [tuple(score) for score in saved["tuning_scores"]]
        self.best_score, self.best_weights = saved["best_score"], saved["best_weights"]


def read_saved_state(
    path: Path | None, run_key: str, log: Callable[[str], None]
) -> dict[str, Any] | None:
    """The state saved at `path` when it belongs to this run; None (and a log line) otherwise."""
    if path is None or not Path(path).exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable: a damaged disk, or not a torch file at all
        log(f"ignoring unreadable epoch checkpoint {path}: {error}")
        return None
    if not isinstance(saved, dict) or saved.get("run_key") != run_key:
        log(
            f"not resuming: the epoch checkpoint {path} is from other data or another "
            "configuration; training from the start"
        )
        return None
    return saved


def run_key(arrays: list[np.ndarray | None], settings: dict[str, Any]) -> str:
    """Hash of everything that decides a run's weights: its data, settings and code."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    described = {
        "format": STATE_FORMAT,
        "code": modules_fingerprint(TRAINING_CODE),
        "dtypes": [None if a is None else str(np.asarray(a).dtype) for a in arrays],
        **settings,
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return digest.hexdigest()
