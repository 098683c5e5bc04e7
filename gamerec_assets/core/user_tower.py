"""The user tower as plain arrays, so serving scores players with numpy alone (no torch).

`save_user_tower` writes what encoding a player needs (`user_tower.npz`, beside
`item_emb.npy`); `UserTower.vector` computes a player's vector the way
`TwoTower.encode_users` does, from every game the player owns.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from gamerec_assets.core.io import atomic_path

MLP_ARRAYS = ("mlp_in_weight", "mlp_in_bias", "mlp_out_weight", "mlp_out_bias")


def save_user_tower(
    path: str | Path, model: Any, history_weighting: bool, checkpoint_fingerprint: str | None = None
) -> None:
    """Write what encoding a user needs as arrays: the tables, the history MLP's layers if
    any, the tower kind, normalisation, and the fingerprint of the checkpoint they came from
    (checked when the set is published)."""
    arrays: dict[str, np.ndarray] = {}
    if model.uses_history:
        arrays["history_embedding"] = model.history_embedding.weight.detach().cpu().numpy()
    if model.uses_user_id:
        arrays["user_embedding"] = model.user_embedding.weight.detach().cpu().numpy()
    if model.history_mlp:
        first, _, second = model.history_layers
        for name, layer in (("mlp_in", first), ("mlp_out", second)):
            arrays[f"{name}_weight"] = layer.weight.detach().cpu().numpy()
            arrays[f"{name}_bias"] = layer.bias.detach().cpu().numpy()
    settings = {
        "user_tower": model.user_tower,
        "normalize": model.normalize,
        "history_mlp": model.history_mlp,  # a reader that knows no MLP refuses the file
        "history_weighting": history_weighting,
        "checkpoint_fingerprint": checkpoint_fingerprint,
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, settings=np.array(json.dumps(settings)), **arrays)


@dataclass(frozen=True)
class UserTower:
    """The user tower as numpy: `vector` mirrors `TwoTower.encode_users` for one player."""

    user_tower: str
    normalize: bool
    history_weighting: bool
    history_embedding: np.ndarray | None
    user_embedding: np.ndarray | None
    history_mlp: int = 0
    mlp: tuple[np.ndarray, ...] | None = None
    """The history MLP's (in weight, in bias, out weight, out bias), or None."""

    @classmethod
    def load(cls, path: str | Path | IO[bytes]) -> "UserTower":
        with np.load(path, allow_pickle=False) as arrays:
            settings = json.loads(str(arrays["settings"]))
            settings.pop("checkpoint_fingerprint", None)
            return cls(
                **settings,
                history_embedding=arrays.get("history_embedding"),
                user_embedding=arrays.get("user_embedding"),
                mlp=tuple(arrays[name] for name in MLP_ARRAYS)
                if settings.get("history_mlp")
                else None,
            )

    def vector(
        self, item_idx: np.ndarray, hours: np.ndarray | None, user_idx: int | None
    ) -> np.ndarray:
        """A player's vector from the games they own (and their ID row, if known and used)."""
        dim = (
            self.history_embedding if self.history_embedding is not None else self.user_embedding
        ).shape[1]
        vector = np.zeros(dim, dtype=np.float32)
        if self.history_embedding is not None and len(item_idx):
            weights = np.ones(len(item_idx), dtype=np.float32)
            if self.history_weighting and hours is not None:
                weights = 1.0 + np.log1p(np.maximum(np.nan_to_num(hours), 0.0)).astype(np.float32)
            rows = self.history_embedding[item_idx]
            vector += self._through_mlp((weights[:, None] * rows).sum(axis=0) / weights.sum())
        if self.user_embedding is not None and user_idx is not None:
            vector += self.user_embedding[user_idx]
        if self.normalize:
            norm = float(np.linalg.norm(vector))
            vector = vector / max(norm, 1e-12)  # F.normalize's epsilon: zero stays zero
        return vector

    def _through_mlp(self, mean: np.ndarray) -> np.ndarray:
        """`TwoTower.history_vectors`: the mean plus the residual MLP of it, if any."""
        if self.mlp is None:
            return mean
        in_weight, in_bias, out_weight, out_bias = self.mlp
        hidden = np.maximum(in_weight @ mean + in_bias, 0.0)
        return mean + out_weight @ hidden + out_bias
