"""Leave-one-out evaluation over the full catalog, with the user's training games masked.

For each evaluated user, every game is scored, the games the user already has in train are
removed, and the rank of the held-out game is taken (0 = top). Ties are broken towards the
smaller `item_idx`, the same rule as the split, so a constant scorer gives a defined answer.
Users are processed in chunks of score rows, with no Python loop per user; memory is one
chunk of `chunk_users x n_items` float32 scores plus the embedding tables.

With one held-out game per user: Recall@K = share of users whose game ranks < K (hit rate),
NDCG@K = mean of 1/log2(rank + 2) over those hits, MRR = mean of 1/(rank + 1) (untruncated).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_KS = (10, 20, 50)
SCORE_CHUNK_ELEMENTS = 1 << 25  # 32M float32 scores = 128 MiB per chunk


@dataclass(frozen=True)
class TrainItems:
    """Each user's training games as CSR arrays: user u has indices[indptr[u]:indptr[u+1]]."""

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_pairs(cls, user_idx: np.ndarray, item_idx: np.ndarray, n_users: int) -> "TrainItems":
        order = np.argsort(user_idx, kind="stable")
        counts = np.bincount(user_idx, minlength=n_users)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr=indptr, indices=np.asarray(item_idx, dtype=np.int64)[order])

    def pairs_for(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in `users`, item) for every training game of the given users, vectorised."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        rows = np.repeat(np.arange(len(users)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return rows, self.indices[np.repeat(starts, lengths) + offsets]


Scorer = Callable[[np.ndarray], torch.Tensor]
"""Maps a chunk of user indices to their scores for every game, [len(users), n_items]."""


def rank_heldout(
    scorer: Scorer,
    n_items: int,
    train_items: TrainItems,
    val_users: np.ndarray,
    val_items: np.ndarray,
    chunk_users: int | None = None,
) -> np.ndarray:
    """0-based rank of each held-out game among all games the user does not already have."""
    if chunk_users is None:
        chunk_users = max(1, SCORE_CHUNK_ELEMENTS // max(n_items, 1))
    ranks = np.empty(len(val_users), dtype=np.int64)
    for start in range(0, len(val_users), chunk_users):
        users = np.asarray(val_users[start : start + chunk_users])
        scores = torch.nan_to_num(scorer(users), nan=-torch.inf)  # a NaN never ranks first
        device = scores.device
        targets = torch.tensor(val_items[start : start + chunk_users], device=device)
        rows, items = train_items.pairs_for(users)
        scores[
            torch.as_tensor(rows, device=device), torch.as_tensor(items, device=device)
        ] = -torch.inf
        target_scores = scores.gather(1, targets[:, None])
        item_ids = torch.arange(n_items, device=device)
        ahead = (scores > target_scores) | (
            (scores == target_scores) & (item_ids[None, :] < targets[:, None])
        )
        ranks[start : start + len(users)] = ahead.sum(dim=1).cpu().numpy()
    return ranks


def heldout_ranks(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    train_items: TrainItems,
    val_users: np.ndarray,
    val_items: np.ndarray,
    chunk_users: int | None = None,
) -> np.ndarray:
    """`rank_heldout` for a dot-product model: scores = user_vectors[u] @ item_vectors.T."""
    return rank_heldout(
        dot_product_scorer(user_vectors, item_vectors),
        item_vectors.shape[0],
        train_items,
        val_users,
        val_items,
        chunk_users,
    )


def dot_product_scorer(user_vectors: torch.Tensor, item_vectors: torch.Tensor) -> Scorer:
    def scorer(users: np.ndarray) -> torch.Tensor:
        return user_vectors[torch.tensor(users, device=user_vectors.device)] @ item_vectors.T

    return scorer


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Recall@K, NDCG@K for each K and MRR from 0-based ranks of single held-out items."""
    if len(ranks) == 0:
        raise ValueError("no evaluated users: every user has a single interaction")
    ranks = np.asarray(ranks, dtype=np.float64)
    metrics: dict[str, float] = {}
    for k in ks:
        hits = ranks < k
        metrics[f"recall@{k}"] = float(hits.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    metrics["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return metrics
