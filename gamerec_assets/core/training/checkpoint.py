"""The self-describing checkpoint of a trained model (the nanoGPT pattern).

It holds the weights, the model's constructor arguments, every hyperparameter and the seed,
the losses and tuning scores per epoch, and what it was trained on (the hashes of the input
files), so it loads anywhere without the code that trained it knowing more. It is written
atomically and read with `torch.load(weights_only=True)`: no object is ever unpickled.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from gamerec_assets.core.io import atomic_path
from gamerec_assets.core.model import TwoTower
from gamerec_assets.core.settings import TrainConfig, group_from_values

CHECKPOINT_FORMAT = 2


def save_checkpoint(
    path: str | Path,
    model: TwoTower,
    config: TrainConfig,
    history: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the checkpoint atomically. `history`: epochs_run, best_epoch, epoch_losses,
    tuning_ndcg; `extra`: the inputs' hashes, the world size, the tuning run's losses."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_args": model.model_args(),
        "config": config.model_dict(),
        **history,
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


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


def checkpoint_config(payload: dict[str, Any]) -> TrainConfig:
    """The training configuration a checkpoint was trained with."""
    return group_from_values(TrainConfig, payload["config"])


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
