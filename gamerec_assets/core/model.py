"""The two-tower retrieval model: a user tower and an item tower scored by dot product.

The item tower is an ID embedding over contiguous `item_idx`; its vectors are what FAISS
serves. The user tower is one of:
- `id`: a user-ID embedding (the seed's model; cannot score users unseen in training);
- `history`: the mean of a second item embedding table over the user's training games, so a
  new player is scored from the games they own alone (fold-in);
- `history+id`: both, summed.
With `history_mlp` (a hidden width), the pooled history goes through a residual two-layer MLP:
a mean of game vectors is a linear item-item model of rank `embed_dim`, and the MLP lets a
player's games interact (their mean alone cannot say "these two together").
With `normalize`, both towers are L2-normalised, so the score is a cosine similarity.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gamerec_assets.core.settings import USER_TOWERS, TrainConfig


@dataclass(frozen=True)
class HistoryBags:
    """The games each row's user tower pools: bag b is items[offsets[b]:offsets[b + 1]]."""

    items: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor | None = None
    """Weight of each pooled game (the history mean is then weighted), or None."""

    @property
    def n_bags(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class UserHistory:
    """Each user's training games as CSR tensors: user u owns items[indptr[u]:indptr[u+1]]."""

    indptr: torch.Tensor
    items: torch.Tensor
    weights: torch.Tensor | None = None
    """Optional weight of each (user, game) in the pooled mean, e.g. from play hours."""
    pair_positions: torch.Tensor | None = None
    """For a history built from training pairs: where each pair sits in `items`."""

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
        positions = np.empty(len(order), dtype=np.int64)
        positions[order] = np.arange(len(order))
        sorted_weights = None
        if weights is not None:
            sorted_weights = torch.as_tensor(np.asarray(weights, dtype=np.float32)[order])
        return cls(
            torch.from_numpy(indptr),
            torch.from_numpy(items),
            sorted_weights,
            torch.from_numpy(positions),
        )

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
        def moved(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return UserHistory(
            self.indptr.to(device),
            self.items.to(device),
            moved(self.weights),
            moved(self.pair_positions),
        )

    def bags(self, users: torch.Tensor) -> HistoryBags:
        """Every game of each user: what serving and evaluation pool."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(int(lengths.sum()), device=users.device)
        flat_positions = torch.repeat_interleave(starts - offsets, lengths) + positions
        return self._bags_at(flat_positions, offsets)

    def sample_bags(
        self,
        pairs: torch.Tensor,
        max_items: int,
        randoms: torch.Tensor | None,
        dropout: float = 0.0,
        drop_randoms: torch.Tensor | None = None,
    ) -> HistoryBags:
        """For each training pair (a row of the pairs the history was built from), the other
        games of its user: all of them when there are at most `max_items` (0: no limit),
        else `max_items` of them drawn by stratified sampling, one uniformly from each of
        `max_items` equal strata of the user's history, with `randoms` (uniform in [0, 1),
        one row of `max_items` per pair) as the draws. The pair's own game is never in its
        bag, so the tower learns to predict a game from the *other* games, as it must for a
        held-out game. A step then pools at most len(pairs) x max_items games, however long
        the histories are. With `dropout`, each game of a bag but its first is then dropped
        when its draw in `drop_randoms` (one per pair and slot) is below it.
        """
        own = self.pair_positions[pairs]
        users = torch.searchsorted(self.indptr, own, right=True) - 1
        starts = self.indptr[users]
        others = self.indptr[users + 1] - starts - 1
        counts = others if max_items == 0 else torch.clamp(others, max=max_items)
        offsets = torch.cumsum(counts, 0) - counts
        row = torch.repeat_interleave(torch.arange(len(pairs), device=pairs.device), counts)
        slot = torch.arange(int(counts.sum()), device=pairs.device) - offsets[row]
        local = slot
        if max_items and randoms is not None:
            sampled = others[row] > max_items
            stratum = (slot + randoms[row, slot]) * others[row]
            local = torch.where(sampled, (stratum / max_items).long(), slot)
        local = local + (local >= (own - starts)[row]).long()  # step over the pair's own game
        if dropout and drop_randoms is not None:
            kept = (slot == 0) | (drop_randoms[row, slot] >= dropout)
            row, local = row[kept], local[kept]
            counts = torch.bincount(row, minlength=len(pairs))
            offsets = torch.cumsum(counts, 0) - counts
        return self._bags_at(starts[row] + local, offsets)

    def _bags_at(self, flat_positions: torch.Tensor, offsets: torch.Tensor) -> HistoryBags:
        weights = None if self.weights is None else self.weights[flat_positions]
        return HistoryBags(self.items[flat_positions], offsets, weights)


class TwoTower(nn.Module):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        embed_dim: int,
        user_tower: str = "id",
        normalize: bool = False,
        history_mlp: int = 0,
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
        self.history_mlp = history_mlp if self.uses_history else 0
        if self.history_mlp:
            # Zero-initialised output: training starts from the plain mean and learns the rest.
            self.history_layers = nn.Sequential(
                nn.Linear(embed_dim, self.history_mlp),
                nn.ReLU(),
                nn.Linear(self.history_mlp, embed_dim),
            )
            nn.init.zeros_(self.history_layers[2].weight)
            nn.init.zeros_(self.history_layers[2].bias)

    @classmethod
    def for_config(cls, n_users: int, n_items: int, config: TrainConfig) -> "TwoTower":
        """The model a training configuration describes."""
        return cls(
            n_users,
            n_items,
            config.embed_dim,
            config.user_tower,
            config.normalize,
            config.history_mlp,
        )

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
            "history_mlp": self.history_mlp,
        }

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        # Look up each distinct game once: with sparse gradients the table's gradient then
        # has one row per distinct game, so the optimizer never has to merge duplicates.
        games, rows = torch.unique(items, return_inverse=True)
        vectors = self.item_embedding(games)[rows]
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def encode_users(
        self,
        users: torch.Tensor,
        bags: HistoryBags | None = None,
        include_user_id: bool = True,
    ) -> torch.Tensor:
        """User vectors: the (weighted) mean of the history table over each row's bag of
        games (`UserHistory.bags` for a user's whole history, `sample_bags` in training),
        through the residual MLP if there is one, plus the user's ID row for the towers that
        have one."""
        vectors = torch.zeros(len(users), self.embed_dim, device=users.device)
        if self.uses_history:
            if bags is None:
                raise ValueError(f"the {self.user_tower!r} user tower needs the users' histories")
            vectors = vectors + self.history_vectors(bags)
        if self.uses_user_id and include_user_id:
            vectors = vectors + self.user_embedding(users)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def history_vectors(self, bags: HistoryBags) -> torch.Tensor:
        """Each bag's mean, plus the MLP of it where there is one; an empty bag gives zero."""
        means, has_history = self.pool_history(bags)
        if not self.history_mlp:
            return means
        return means + torch.where(has_history[:, None], self.history_layers(means), 0.0)

    def pool_history(self, bags: HistoryBags) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean of the history table over each bag (an empty bag gives a zero vector),
        and which bags have any weight."""
        # Pool over a gathered table of the distinct games in these bags: the table's
        # gradient then has one row per distinct game, not one per bag entry.
        games, flat_rows = torch.unique(bags.items, return_inverse=True)
        sums = F.embedding_bag(
            flat_rows,
            self.history_embedding(games),
            bags.offsets,
            mode="sum",
            per_sample_weights=bags.weights,
        )
        ends = torch.cat([bags.offsets[1:], bags.offsets.new_tensor([len(bags.items)])])
        counts = ends - bags.offsets
        if bags.weights is None:
            totals = counts.float()
        else:
            bag_of = torch.repeat_interleave(
                torch.arange(bags.n_bags, device=counts.device), counts
            )
            totals = torch.zeros(bags.n_bags, device=sums.device).index_add_(
                0, bag_of, bags.weights
            )
        # No NaN and no gradient blown up by a tiny denominator: divide only where totals > 0.
        has_history = totals > 1e-6
        safe_totals = torch.where(has_history, totals, torch.ones_like(totals))
        return torch.where(has_history[:, None], sums / safe_totals[:, None], 0.0), has_history

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, bags: HistoryBags | None = None
    ) -> torch.Tensor:
        """In-batch scores [B, B]: row b scores user b against every positive item in the batch."""
        user_vectors, item_vectors = self.encode_pairs(users, items, bags)
        return user_vectors @ item_vectors.T

    def encode_pairs(
        self, users: torch.Tensor, items: torch.Tensor, bags: HistoryBags | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both towers' vectors of a batch of positive pairs, before they are scored (data-
        parallel training gathers the item vectors of every process first)."""
        return self.encode_users(users, bags), self.encode_items(items)

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
        users = users.to(device)
        bags = None if history is None else history.to(device).bags(users)
        return self.encode_users(users, bags)

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
        return self.encode_users(users, history.to(device).bags(users), include_user_id=False)
