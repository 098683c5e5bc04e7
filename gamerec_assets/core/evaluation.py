"""Leave-one-out evaluation of the two-tower model and the baselines on one protocol.

Every scorer goes through `metrics.rank_heldout`: the full catalog is ranked for each
evaluated user, the user's training games masked, ties to the smaller item_idx.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import torch

from gamerec_assets.core.baselines import EASE_MAX_ITEMS, fit_ease, popularity_scores
from gamerec_assets.core.metrics import (
    DEFAULT_KS,
    TrainItems,
    dot_product_scorer,
    rank_heldout,
    ranking_metrics,
)
from gamerec_assets.core.model import TwoTower, UserHistory
from gamerec_assets.core.settings import TrainConfig, Tuning
from gamerec_assets.core.splits import leave_one_out_split
from gamerec_assets.core.training.loss import playtime_weights

EASE_L2_GRID = (50.0, 200.0, 500.0, 1000.0)
DEFAULT_EASE_L2 = 200.0  # used when the training data leaves nothing to tune on


def require_cutoff_below_catalog(k: int, n_items: int) -> None:
    """Raise unless Recall@k can tell scorers apart on a catalog of `n_items` games.

    A held-out game competes only with the games its user has no training interaction with:
    at most n_items - 1 candidates (every evaluated user has a training game), so its 0-based
    rank is at most n_items - 2, and once k >= n_items - 1 Recall@k is 1 for every scorer.
    This is deliberately an error, raised by the split asset before any training, rather than
    a k quietly capped at the catalog: a capped k still gives Recall 1 for every model, and the
    run would end in a tie with popularity that says nothing about why.
    """
    largest = n_items - 2
    if largest < 1:
        raise ValueError(
            f"a catalog of {n_items} game(s) is too small to evaluate: leave-one-out needs at "
            "least 3 games, so that a held-out game can rank below another candidate"
        )
    if k > largest:
        raise ValueError(
            f"VAL_K={k} is too large for a catalog of {n_items} games: a held-out game ranks "
            f"among at most {n_items - 1} candidates (the user's training games are masked), "
            f"so Recall@{k} would be 1 for any model; set VAL_K to at most {largest} or use a "
            "larger catalog"
        )


@dataclass(frozen=True)
class EvaluationData:
    """A training split (for histories and masking) and its held-out games."""

    train: pl.DataFrame
    val: pl.DataFrame
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        if self.val.height == 0:
            raise ValueError(
                "nothing to evaluate: no user has two or more games, so no game was held out"
            )

    def sample_users(self, n_users: int, seed: int = 0) -> "EvaluationData":
        """The same data with a seeded sample of `n_users` held-out rows (all when fewer).

        Training rows stay whole: masking and histories need only the sampled users' rows, and
        the popularity baseline needs every row's counts.
        """
        if n_users <= 0 or n_users >= self.val.height:
            return self
        sample = self.val.sample(n=n_users, seed=seed, shuffle=False).sort("user_idx")
        return EvaluationData(self.train, sample, self.n_users, self.n_items)

    @cached_property
    def train_items(self) -> TrainItems:
        return TrainItems.from_pairs(
            self.train["user_idx"].to_numpy(), self.train["item_idx"].to_numpy(), self.n_users
        )

    def ranks(self, scorer) -> np.ndarray:
        return rank_heldout(
            scorer,
            self.n_items,
            self.train_items,
            self.val["user_idx"].to_numpy(),
            self.val["item_idx"].to_numpy(),
        )


def history_from_frame(frame: pl.DataFrame, n_users: int, config: TrainConfig) -> UserHistory:
    """Users' training histories as the model pools them (weighted if it was trained so)."""
    weights = (
        playtime_weights(frame["play_time_hours"].to_numpy()) if config.history_weighting else None
    )
    return UserHistory.from_pairs(
        frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy(), n_users, weights
    )


def evaluate_two_tower(
    model: TwoTower, config: TrainConfig, data: EvaluationData, ks=DEFAULT_KS
) -> dict[str, float]:
    """Metrics of the model, users encoded from their full training history.

    Only the evaluated users are encoded (a sample of 100k of 1M users needs 100k vectors).
    """
    users = np.unique(data.val["user_idx"].to_numpy())
    history = history_from_frame(data.train, data.n_users, config)
    user_vectors = model.user_vectors(history, torch.from_numpy(users))
    scores = dot_product_scorer(user_vectors, model.item_vectors())
    return ranking_metrics(data.ranks(lambda chunk: scores(np.searchsorted(users, chunk))), ks)


def evaluate_popularity(data: EvaluationData, ks=DEFAULT_KS) -> dict[str, float]:
    counts = popularity_scores(data.train["item_idx"].to_numpy(), data.n_items)
    return ranking_metrics(data.ranks(lambda users: counts.expand(len(users), -1).clone()), ks)


def tune_ease_l2(
    data: EvaluationData, split_strategy: str, seed: int = 0, k: int = Tuning().k
) -> float:
    """EASE's L2 weight with the best NDCG@k on a tuning split carved from the training data."""
    carved = leave_one_out_split(data.train, split_strategy, seed)
    if carved.val.height == 0:
        return DEFAULT_EASE_L2
    tuning = EvaluationData(carved.train, carved.val, data.n_users, data.n_items)
    train_items = tuning.train_items
    scores = {
        l2: ranking_metrics(tuning.ranks(fit_ease(train_items, data.n_items, l2).scores), (k,))[
            f"ndcg@{k}"
        ]
        for l2 in EASE_L2_GRID
    }
    return max(scores, key=scores.get)


def evaluate_ease(data: EvaluationData, l2: float, ks=DEFAULT_KS) -> dict[str, float] | None:
    """EASE metrics, or None above EASE_MAX_ITEMS games (the dense matrix would not fit)."""
    if data.n_items > EASE_MAX_ITEMS:
        return None
    model = fit_ease(data.train_items, data.n_items, l2)
    return ranking_metrics(data.ranks(model.scores), ks)
