"""Popularity and EASE, checked against a direct numpy computation; ALS on small clusters."""

import numpy as np
import pytest
import torch

from gamerec_assets.core import baselines
from gamerec_assets.core.baselines import EaseModel, fit_ease, popularity_scores
from gamerec_assets.core.metrics import TrainItems

# 5 users x 4 items, binary; user 4 owns nothing, item 3 is owned by one user only.
X = np.array(
    [
        [1, 1, 0, 0],
        [1, 0, 1, 0],
        [0, 1, 1, 1],
        [1, 1, 1, 0],
        [0, 0, 0, 0],
    ],
    dtype=np.float64,
)


def _train_items(matrix: np.ndarray) -> TrainItems:
    users, items = np.nonzero(matrix)
    # shuffle the pairs: TrainItems.from_pairs must not rely on sorted input
    order = np.random.default_rng(0).permutation(len(users))
    return TrainItems.from_pairs(users[order], items[order], matrix.shape[0])


def _ease_by_hand(matrix: np.ndarray, l2: float) -> np.ndarray:
    gram = matrix.T @ matrix + l2 * np.eye(matrix.shape[1])
    precision = np.linalg.inv(gram)
    weights = np.empty_like(precision)
    for i in range(precision.shape[0]):
        for j in range(precision.shape[1]):
            weights[i, j] = -precision[i, j] / precision[j, j]
    np.fill_diagonal(weights, 0.0)
    return weights


def test_popularity_scores_are_training_counts():
    items = np.array([3, 0, 3, 3, 1, 0])
    scores = popularity_scores(items, n_items=6)
    assert scores.dtype == torch.float32
    assert scores.tolist() == [2.0, 1.0, 0.0, 3.0, 0.0, 0.0]
    assert np.array_equal(scores.numpy(), np.bincount(items, minlength=6))


@pytest.mark.parametrize("l2", [0.5, 3.0, 200.0])
def test_fit_ease_matches_the_closed_form(l2):
    model = fit_ease(_train_items(X), n_items=4, l2=l2)
    assert isinstance(model, EaseModel)
    weights = model.item_weights
    assert weights.shape == (4, 4) and weights.dtype == torch.float32
    expected = _ease_by_hand(X, l2)
    assert np.allclose(weights.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert np.array_equal(np.diag(weights.numpy()), np.zeros(4))
    assert np.abs(expected).max() > 1e-3  # not a trivial answer


def test_fit_ease_divides_by_the_columns_diagonal():
    # B[i, j] = -P[i, j] / P[j, j]: with a small l2 the diagonal of P varies a lot, so B is far
    # from symmetric and dividing by the row's diagonal would give other numbers
    weights = fit_ease(_train_items(X), n_items=4, l2=0.5).item_weights.numpy()
    precision = np.linalg.inv(X.T @ X + 0.5 * np.eye(4))
    assert weights[0, 3] == pytest.approx(-precision[0, 3] / precision[3, 3], rel=1e-4)
    assert weights[3, 0] == pytest.approx(-precision[3, 0] / precision[0, 0], rel=1e-4)
    assert not np.allclose(weights, weights.T, atol=1e-2)


def test_fit_ease_weights_depend_on_l2():
    small = fit_ease(_train_items(X), 4, 0.5).item_weights
    large = fit_ease(_train_items(X), 4, 50.0).item_weights
    assert small.abs().sum() > large.abs().sum()


def test_ease_scores_are_training_rows_times_weights():
    model = fit_ease(_train_items(X), n_items=4, l2=1.0)
    users = np.array([3, 0, 4, 2])
    scores = model.scores(users)
    assert scores.shape == (4, 4)
    expected = X[users] @ model.item_weights.numpy().astype(np.float64)
    assert np.allclose(scores.numpy(), expected, atol=1e-5)
    assert np.array_equal(scores[2].numpy(), np.zeros(4))  # no training games, no score
    assert np.allclose(scores.numpy(), X[users] @ _ease_by_hand(X, 1.0), atol=1e-5)


def test_fit_ease_with_items_nobody_owns():
    matrix = np.hstack([X, np.zeros((5, 2))])  # items 4 and 5 never seen
    model = fit_ease(_train_items(matrix), n_items=6, l2=2.0)
    weights = model.item_weights.numpy()
    assert np.isfinite(weights).all()
    assert np.allclose(weights, _ease_by_hand(matrix, 2.0), atol=1e-5)
    assert np.allclose(weights[4:], 0.0) and np.allclose(weights[:, 4:], 0.0)


def test_fit_ease_refuses_more_items_than_the_limit(monkeypatch):
    monkeypatch.setattr(baselines, "EASE_MAX_ITEMS", 3)
    with pytest.raises(ValueError, match="EASE needs a dense 4 x 4 matrix; skipped above 3"):
        fit_ease(_train_items(X), n_items=4, l2=1.0)
    three = X[:, :3]
    model = fit_ease(_train_items(three), n_items=3, l2=1.0)  # at the limit: still fitted
    assert np.allclose(model.item_weights.numpy(), _ease_by_hand(three, 1.0), atol=1e-5)


# --- ALS (the implicit library) ------------------------------------------------------------------


def clustered(n_users=40, n_items=12, per_user=4, seed=0) -> tuple[TrainItems, np.ndarray]:
    """Users of two clusters own games of their cluster only."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        cluster = np.arange(n_items // 2) + (n_items // 2) * (user % 2)
        for item in rng.choice(cluster, size=per_user, replace=False):
            users.append(user)
            items.append(int(item))
    train = TrainItems.from_pairs(np.array(users), np.array(items), n_users)
    return train, np.repeat(np.arange(n_users), np.diff(train.indptr))


def test_als_learns_the_clusters_and_is_seeded():
    train, _ = clustered()
    model = baselines.fit_als(train, 12, factors=4, regularization=0.1, seed=3)
    scores = model.scores(np.arange(40))
    assert scores.shape == (40, 12)
    own = torch.cat([scores[0::2, :6], scores[1::2, 6:]])
    other = torch.cat([scores[0::2, 6:], scores[1::2, :6]])
    assert own.mean() > other.mean() + 0.3
    again = baselines.fit_als(train, 12, factors=4, regularization=0.1, seed=3)
    assert torch.equal(again.scores(np.arange(40)), scores)


def test_als_tuning_and_evaluation_through_the_protocol():
    import polars as pl

    from gamerec_assets.core.evaluation import (
        ALS_FACTORS,
        EvaluationData,
        evaluate_als,
        evaluate_popularity,
        tune_als,
    )
    from gamerec_assets.core.splits import leave_one_out_split

    train, users = clustered(n_users=60, per_user=5, seed=1)
    frame = pl.DataFrame(
        {"user_idx": users, "item_idx": train.indices, "play_time_hours": np.ones(len(users))}
    )
    split = leave_one_out_split(frame, "random", seed=0)
    data = EvaluationData(split.train, split.val, 60, 12)
    chosen = tune_als(data, "random", seed=0)
    assert chosen["factors"] in ALS_FACTORS and chosen["regularization"] > 0
    metrics = evaluate_als(data, seed=0, ks=(3,), **chosen)
    assert metrics["recall@3"] > evaluate_popularity(data, (3,))["recall@3"]
