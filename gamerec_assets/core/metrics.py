"""Leave-one-out evaluation over the full catalog, with the user's training games masked.

For each evaluated user, every game is scored, the games the user already has in train are
removed, and the rank of the held-out game is taken (0 = top). Ties are broken towards the
smaller `item_idx`, the same rule as the split, so a constant scorer gives a defined answer.
Users are processed in chunks of score rows, with no Python loop per user; memory is the
embedding tables plus one chunk of `chunk_users x n_items` scores and masks: about 2M scores
(10 MiB, sized to stay in cache), and never more than an eighth of the memory available when
evaluation starts (`score_chunk_users`).

With one held-out game per user: Recall@K = share of users whose game ranks < K (hit rate),
NDCG@K = mean of 1/log2(rank + 2) over those hits, MRR = mean of 1/(rank + 1) (untruncated).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_KS = (10, 20, 50)
CACHE_CHUNK_SCORES = 1 << 21  # 2M float32 scores = 8 MiB per chunk
BYTES_PER_SCORE = 5  # float32 score + one-byte comparison mask
MIN_CHUNK_BYTES = 1 << 20


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
"""Maps a chunk of user indices to their scores for every game, [len(users), n_items]. The
caller may modify the result in place; a scorer may reuse it for its next call."""


def score_chunk_users(n_items: int, available_bytes: int | None = None) -> int:
    """Users per chunk: about CACHE_CHUNK_SCORES scores, fewer when memory is short.

    A chunk that stays in the CPU caches is ranked several times faster than one that does
    not (measured: 512 users x 5k games in 0.11 s per 10k users, 10k x 5k at once in 0.21 s).
    A chunk also never takes more than an eighth of the memory available now (MemAvailable),
    counting BYTES_PER_SCORE per score, so a machine under pressure gets smaller ones.
    """
    available = available_memory_bytes() if available_bytes is None else available_bytes
    budget_scores = max(available // 8, MIN_CHUNK_BYTES) // BYTES_PER_SCORE
    return max(1, min(CACHE_CHUNK_SCORES, budget_scores) // max(n_items, 1))


def available_memory_bytes() -> int:
    """Memory the kernel says can be allocated without swapping (Linux), else a fixed guess."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 30


def rank_heldout(
    scorer: Scorer,
    n_items: int,
    train_items: TrainItems,
    val_users: np.ndarray,
    val_items: np.ndarray,
    chunk_users: int | None = None,
) -> np.ndarray:
    """0-based rank of each held-out game among all games the user does not already have.

    Two passes over each chunk of scores: games scored above the held-out one, and games
    scored equal to it. The rare rows with a tie (or a NaN held-out score) are re-ranked with
    the tie-break (smaller `item_idx` first) and NaN scores placed last.
    """
    if chunk_users is None:
        chunk_users = score_chunk_users(n_items)
    ranks = np.empty(len(val_users), dtype=np.int64)
    for start in range(0, len(val_users), chunk_users):
        users = np.asarray(val_users[start : start + chunk_users])
        scores = scorer(users)  # ours to modify: masked in place below
        device = scores.device
        targets = torch.tensor(
            np.asarray(val_items[start : start + chunk_users], dtype=np.int64), device=device
        )
        rows, items = train_items.pairs_for(users)
        scores[
            torch.as_tensor(rows, device=device), torch.as_tensor(items, device=device)
        ] = -torch.inf
        target_scores = scores.gather(1, targets[:, None])
        ahead = _count_per_row(scores > target_scores)  # NaN > x is False: NaN never ahead
        equal = _count_per_row(scores == target_scores)  # the held-out game, unless NaN
        tied = torch.nonzero(equal != 1).flatten()
        if len(tied):
            ahead[tied] = _ranks_with_ties(scores[tied], target_scores[tied], targets[tied])
        ranks[start : start + len(users)] = ahead.cpu().numpy()
    return ranks


def _count_per_row(mask: torch.Tensor) -> torch.Tensor:
    """True entries per row. On CPU numpy's count_nonzero is ~7x faster than torch's sum of a
    bool tensor (measured: 8 ms vs 59 ms for 10k x 5k)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(mask.numpy(), axis=1))
    return mask.sum(dim=1)


def _ranks_with_ties(
    scores: torch.Tensor, target_scores: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Exact ranks of rows with ties: equal scores rank by item_idx, NaN scores rank last."""
    scores = torch.where(scores.isnan(), -torch.inf, scores)
    target_scores = torch.where(target_scores.isnan(), -torch.inf, target_scores)
    item_ids = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > target_scores) | (
        (scores == target_scores) & (item_ids[None, :] < targets[:, None])
    )
    return ahead.sum(dim=1)


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
    """Scores into one buffer reused across calls (a fresh 8 MiB allocation per chunk costs
    a quarter of the time): each call's result is valid until the next call."""
    buffer = torch.empty(0, device=item_vectors.device, dtype=item_vectors.dtype)

    def scorer(users: np.ndarray) -> torch.Tensor:
        nonlocal buffer
        chosen = user_vectors[torch.tensor(users, device=user_vectors.device)]
        if buffer.numel() < len(users) * item_vectors.shape[0]:
            buffer = torch.empty(
                len(users) * item_vectors.shape[0],
                device=item_vectors.device,
                dtype=item_vectors.dtype,
            )
        out = buffer[: len(users) * item_vectors.shape[0]].view(len(users), -1)
        return torch.mm(chosen, item_vectors.T, out=out)

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
