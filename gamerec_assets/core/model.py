"""The two-tower retrieval model: a user tower and an item tower scored by dot product.

The item tower is an ID embedding over contiguous `item_idx`; its vectors are what FAISS
serves. The user tower is one of:
- `id`: a user-ID embedding (the seed's model; cannot score users unseen in training);
- `history`: the mean of a second item embedding table over the user's training games, so a
  new player is scored from the games they own alone (fold-in);
- `history+id`: both, summed.
With `normalize`, both towers are L2-normalised, so the score is a cosine similarity.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gamerec_assets.core.settings import USER_TOWERS


@dataclass(frozen=True)
class UserHistory:
    """Each user's training games as CSR tensors: user u owns items[indptr[u]:indptr[u+1]]."""

    indptr: torch.Tensor
    items: torch.Tensor
    weights: torch.Tensor | None = None
    """Optional weight of each (user, game) in the pooled mean, e.g. from play hours."""

    @classmethod
    def from_pairs(
        cls,
        user_idx: np.ndarray,
        item_idx: np.ndarray,
        n_users: int,
        weights: np.ndarray | torch.Tensor | None = None,
    ) -> "UserHistory":
        users = np.asarray(user_idx, dtype=np.int64)
        order = np.argsort(users, kind="stable")
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
        items = np.asarray(item_idx, dtype=np.int64)[order]
        sorted_weights = None
        if weights is not None:
            sorted_weights = torch.as_tensor(np.asarray(weights, dtype=np.float32)[order])
        return cls(torch.from_numpy(indptr), torch.from_numpy(items), sorted_weights)

    @classmethod
    def from_item_lists(cls, item_lists: list[list[int]]) -> "UserHistory":
        """Histories of users given as lists of item_idx (e.g. new players)."""
        lengths = np.array([len(items) for items in item_lists], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.concatenate([np.asarray(i, dtype=np.int64) for i in item_lists] or [[]])
        return cls(indptr=torch.from_numpy(indptr), items=torch.from_numpy(flat.astype(np.int64)))

    @property
    def n_users(self) -> int:
        return self.indptr.shape[0] - 1

    def to(self, device: torch.device) -> "UserHistory":
        weights = None if self.weights is None else self.weights.to(device)
        return UserHistory(self.indptr.to(device), self.items.to(device), weights)

    def bags(
        self, users: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(flat items, bag offsets, flat weights or None, bag total weight) for `users`."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(int(lengths.sum()), device=users.device)
        flat_positions = torch.repeat_interleave(starts - offsets, lengths) + positions
        if self.weights is None:
            return self.items[flat_positions], offsets, None, lengths.float()
        flat_weights = self.weights[flat_positions]
        totals = torch.zeros(len(users), device=users.device).index_add_(
            0,
            torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths),
            flat_weights,
        )
        return self.items[flat_positions], offsets, flat_weights, totals


class TwoTower(nn.Module):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        embed_dim: int,
        user_tower: str = "id",
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if user_tower not in USER_TOWERS:
            raise ValueError(
                f"user_tower must be one of {', '.join(USER_TOWERS)}, got {user_tower!r}"
            )
        self.n_users, self.n_items, self.embed_dim = n_users, n_items, embed_dim
        self.user_tower, self.normalize = user_tower, normalize
        self.sparse_gradients = False
        self.item_embedding = nn.Embedding(n_items, embed_dim)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        if self.uses_history:
            self.history_embedding = nn.Embedding(n_items, embed_dim)
            nn.init.normal_(self.history_embedding.weight, std=0.02)
        if self.uses_user_id:
            self.user_embedding = nn.Embedding(n_users, embed_dim)
            nn.init.normal_(self.user_embedding.weight, std=0.02)

    def use_sparse_gradients(self, enabled: bool = True) -> "TwoTower":
        """Make every table's gradient sparse (only the rows a batch touched), for SparseAdam.

        A dense gradient, and a dense optimizer step, costs the whole table per batch; with a
        million-row table that is far more work than the batch itself.
        """
        self.sparse_gradients = enabled
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                module.sparse = enabled
        return self

    @property
    def uses_history(self) -> bool:
        return self.user_tower in ("history", "history+id")

    @property
    def uses_user_id(self) -> bool:
        return self.user_tower in ("id", "history+id")

    def model_args(self) -> dict[str, object]:
        """The constructor arguments, stored in the checkpoint so it describes itself."""
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "embed_dim": self.embed_dim,
            "user_tower": self.user_tower,
            "normalize": self.normalize,
        }

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        vectors = self.item_embedding(items)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def encode_users(
        self,
        users: torch.Tensor,
        history: UserHistory | None = None,
        exclude_items: torch.Tensor | None = None,
        include_user_id: bool = True,
        exclude_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """User vectors; `exclude_items[b]` (of weight `exclude_weights[b]`) is left out of
        user b's history.

        Training excludes each pair's own positive game, so the tower learns to predict a
        game from the *other* games, the situation it faces for a held-out game.
        """
        vectors = torch.zeros(len(users), self.embed_dim, device=users.device)
        if self.uses_history:
            if history is None:
                raise ValueError(f"the {self.user_tower!r} user tower needs the users' histories")
            unique_users, inverse = torch.unique(users, return_inverse=True)
            flat, offsets, flat_weights, totals = history.bags(unique_users)
            # Pool over a gathered table of the distinct games in these histories: the
            # table's gradient then has one row per distinct game, not one per history entry
            # (which, as a sparse gradient, would cost more than the dense table).
            games, flat_rows = torch.unique(flat, return_inverse=True)
            sums = F.embedding_bag(
                flat_rows,
                self.history_embedding(games),
                offsets,
                mode="sum",
                per_sample_weights=flat_weights,
            )
            sums, totals = sums[inverse], totals[inverse]
            if exclude_items is not None:
                excluded = self.history_embedding(exclude_items)
                if exclude_weights is not None:
                    excluded = excluded * exclude_weights[:, None]
                sums = sums - excluded
                totals = totals - (1.0 if exclude_weights is None else exclude_weights)
            # A user with nothing left in the history gets a zero vector (no NaN, no gradient
            # blown up by a tiny denominator); the division only happens where totals > 0.
            has_history = totals > 1e-6
            safe_totals = torch.where(has_history, totals, torch.ones_like(totals))
            pooled = torch.where(has_history[:, None], sums / safe_totals[:, None], 0.0)
            vectors = vectors + pooled
        if self.uses_user_id and include_user_id:
            vectors = vectors + self.user_embedding(users)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def forward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        history: UserHistory | None = None,
        pair_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """In-batch scores [B, B]: row b scores user b against every positive item in the batch.

        `pair_weights[b]` is the history weight of (users[b], items[b]) when the history is
        weighted, so that pair is removed from its own user's pooled history exactly.
        """
        user_vectors, item_vectors = self.encode_pairs(users, items, history, pair_weights)
        return user_vectors @ item_vectors.T

    def encode_pairs(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        history: UserHistory | None = None,
        pair_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both towers' vectors of a batch of positive pairs, before they are scored (data-
        parallel training gathers the item vectors of every process first)."""
        user_vectors = self.encode_users(
            users, history, exclude_items=items, exclude_weights=pair_weights
        )
        return user_vectors, self.encode_items(items)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """Every item's vector, row i = item_idx i (what `item_emb.npy` and FAISS hold)."""
        return self.encode_items(
            torch.arange(self.n_items, device=self.item_embedding.weight.device)
        )

    @torch.no_grad()
    def user_vectors(
        self, history: UserHistory | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Vectors of `users` (default: all) from their full training history."""
        device = self.item_embedding.weight.device
        if users is None:
            users = torch.arange(
                self.n_users if history is None else history.n_users, device=device
            )
        return self.encode_users(users.to(device), None if history is None else history.to(device))

    @torch.no_grad()
    def fold_in(self, history: UserHistory) -> torch.Tensor:
        """Vectors for players unseen in training, from the games they own alone."""
        if not self.uses_history:
            raise ValueError(
                "this model's user tower is 'id', which cannot score new players; "
                "train with user_tower='history' or 'history+id'"
            )
        device = self.item_embedding.weight.device
        users = torch.arange(history.n_users, device=device)
        return self.encode_users(users, history.to(device), include_user_id=False)
