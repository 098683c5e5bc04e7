"""Evaluation of the two-tower model and the baselines on one protocol, and the tuning of
the baselines' weights on the tuning split (as fairly as the model's own epochs).

Every scorer goes through `metrics.evaluate_scorer`: the full catalog is ranked for each
evaluated user, the user's training games masked, ties to the smaller item_idx.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import torch

from gamerec_assets.core.baselines import EASE_MAX_ITEMS, fit_als, fit_ease, popularity_scores
from gamerec_assets.core.metrics import (
    DEFAULT_KS,
    Scorer,
    TrainItems,
    UserMetrics,
    dot_product_scorer,
    evaluate_scorer,
)
from gamerec_assets.core.model import TwoTower, UserHistory
from gamerec_assets.core.settings import TrainConfig, Tuning
from gamerec_assets.core.splits import tuning_split
from gamerec_assets.core.training.loss import playtime_weights

EASE_L2_GRID = (50.0, 200.0, 500.0, 1000.0)
CHANCE_RECALL_WARNING = 0.5
DEFAULT_EASE_L2 = 200.0  # used when the training data leaves nothing to tune on
ALS_FACTORS = (64, 128, 256)
ALS_REGULARIZATION_GRID = (0.01, 0.1, 1.0, 10.0)
DEFAULT_ALS = {"factors": 128, "regularization": 0.1}
GRID_WIDENING = 4.0
GRID_MAX_WIDENINGS = 4


def cutoff_warning(k: int, n_items: int) -> str | None:
    """A warning when VAL_K is near the catalog size: a held-out game ranks among at most
    n_items - 1 candidates, so a random ranking already scores Recall@k of about
    k / (n_items - 1), and Recall@k tells little between models."""
    chance = k / max(n_items - 1, 1)
    if chance < CHANCE_RECALL_WARNING:
        return None
    largest = math.ceil((n_items - 1) * CHANCE_RECALL_WARNING) - 1
    return (
        f"VAL_K={k} is {chance:.0%} of the {n_items - 1} games a held-out game ranks among: a "
        f"random ranking scores Recall@{k} of about {chance:.2f}, so the metric tells little "
        f"between models; set VAL_K to at most {largest}"
    )


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
            raise ValueError("nothing to evaluate: no game was held out for any user")

    @cached_property
    def eval_users(self) -> np.ndarray:
        """The users with held-out games, sorted."""
        return np.unique(self.val["user_idx"].to_numpy())

    def sample_users(self, n_users: int, seed: int = 0) -> "EvaluationData":
        """The same data for a seeded sample of `n_users` evaluated users, with all their
        held-out games (every user when there are fewer).

        Training rows stay whole: masking and histories need only the sampled users' rows, and
        the popularity baseline needs every row's counts.
        """
        if n_users <= 0 or n_users >= len(self.eval_users):
            return self
        chosen = pl.Series("user_idx", self.eval_users).sample(n=n_users, seed=seed)
        sample = self.val.filter(pl.col("user_idx").is_in(chosen.implode())).sort("user_idx")
        return EvaluationData(self.train, sample, self.n_users, self.n_items)

    @cached_property
    def train_items(self) -> TrainItems:
        return TrainItems.from_pairs(
            self.train["user_idx"].to_numpy(), self.train["item_idx"].to_numpy(), self.n_users
        )

    def user_metrics(self, scorer: Scorer, ks: tuple[int, ...] = DEFAULT_KS) -> UserMetrics:
        """Each evaluated user's Recall@K, NDCG@K and MRR under a scorer."""
        return evaluate_scorer(
            scorer,
            self.n_items,
            self.train_items,
            self.val["user_idx"].to_numpy(),
            self.val["item_idx"].to_numpy(),
            ks,
        )

    def metrics(self, scorer: Scorer, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
        """Recall@K, NDCG@K and MRR of a scorer, averaged over the evaluated users."""
        return self.user_metrics(scorer, ks).mean()


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
    users = data.eval_users
    history = history_from_frame(data.train, data.n_users, config)
    user_vectors = model.user_vectors(history, torch.from_numpy(users))
    scores = dot_product_scorer(user_vectors, model.item_vectors())
    return data.metrics(lambda chunk: scores(np.searchsorted(users, chunk)), ks)


def evaluate_popularity(data: EvaluationData, ks=DEFAULT_KS) -> dict[str, float]:
    counts = popularity_scores(data.train["item_idx"].to_numpy(), data.n_items)
    return data.metrics(lambda users: counts.expand(len(users), -1).clone(), ks)


def search_grid(
    score: Callable[[float], float], grid: tuple[float, ...]
) -> tuple[float, dict[float, float]]:
    """The best value of a grid, widened while the best is at an edge (by x or / 4, a few
    times), so a baseline is not held back by a grid that stops short of its optimum."""
    scores = {value: score(value) for value in grid}
    for _ in range(GRID_MAX_WIDENINGS):
        best, ordered = max(scores, key=scores.get), sorted(scores)
        if ordered[0] < best < ordered[-1]:
            break
        beyond = best / GRID_WIDENING if best == ordered[0] else best * GRID_WIDENING
        scores[beyond] = score(beyond)
    return max(scores, key=scores.get), scores


def tuning_data(
    data: EvaluationData, split_strategy: str, seed: int, tuning: Tuning
) -> EvaluationData | None:
    """The tuning split of the evaluation's training data (None when it holds nothing)."""
    carved = tuning_split(data.train, split_strategy, seed, tuning.sample_users, data.val)
    if carved.val.height == 0:
        return None
    return EvaluationData(carved.train, carved.val, data.n_users, data.n_items)


def tune_ease_l2(
    data: EvaluationData, split_strategy: str, seed: int = 0, tuning: Tuning = Tuning()
) -> float:
    """EASE's L2 weight with the best NDCG@k on the tuning split (the one epochs are chosen
    on), searched on a grid widened until the best is inside it."""
    held = tuning_data(data, split_strategy, seed, tuning)
    if held is None:
        return DEFAULT_EASE_L2
    ndcg = f"ndcg@{tuning.k}"

    def score(l2: float) -> float:
        return held.metrics(fit_ease(held.train_items, data.n_items, l2).scores, (tuning.k,))[ndcg]

    return search_grid(score, EASE_L2_GRID)[0]


def tune_als(
    data: EvaluationData, split_strategy: str, seed: int = 0, tuning: Tuning = Tuning()
) -> dict[str, float]:
    """ALS's regularization and factors with the best NDCG@k on the tuning split: the
    regularization at the middle number of factors, on a grid widened until the best is
    inside it, then the number of factors at that regularization."""
    held = tuning_data(data, split_strategy, seed, tuning)
    if held is None:
        return dict(DEFAULT_ALS)
    ndcg = f"ndcg@{tuning.k}"

    def score(factors: int, regularization: float) -> float:
        model = fit_als(held.train_items, data.n_items, factors, regularization, seed=seed)
        return held.metrics(model.scores, (tuning.k,))[ndcg]

    middle = ALS_FACTORS[len(ALS_FACTORS) // 2]
    regularization, scores = search_grid(lambda r: score(middle, r), ALS_REGULARIZATION_GRID)
    by_factors = {middle: scores[regularization]}
    for factors in ALS_FACTORS:
        if factors not in by_factors:
            by_factors[factors] = score(factors, regularization)
    return {"factors": max(by_factors, key=by_factors.get), "regularization": regularization}


def evaluate_als(
    data: EvaluationData, factors: int, regularization: float, seed: int = 0, ks=DEFAULT_KS
) -> dict[str, float]:
    model = fit_als(data.train_items, data.n_items, factors, regularization, seed=seed)
    return data.metrics(model.scores, ks)


def evaluate_ease(data: EvaluationData, l2: float, ks=DEFAULT_KS) -> dict[str, float] | None:
    """EASE metrics, or None above EASE_MAX_ITEMS games (the dense matrix would not fit)."""
    if data.n_items > EASE_MAX_ITEMS:
        return None
    model = fit_ease(data.train_items, data.n_items, l2)
    return data.metrics(model.scores, ks)
