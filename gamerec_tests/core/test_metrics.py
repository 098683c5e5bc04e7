"""Evaluation metrics as the leaderboards define them, against a slow reference."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gamerec_assets.core.baselines import popularity_scores
from gamerec_assets.core.metrics import (
    CACHE_CHUNK_SCORES,
    TrainItems,
    UserMetrics,
    dot_product_scorer,
    evaluate_scorer,
    exact_top_k,
    score_chunk_users,
)

KS = (1, 3, 5)


def reference_metrics(scores_all, train_pairs, val_users, val_items, ks=KS):
    """Per user, in sorted user order, by the book: rank every game the user did not train on
    (score descending, then item index ascending, NaN last), then Recall@K = held-out games in
    the top K / held-out games; NDCG@K = DCG of binary gains / ideal DCG over min(held-out
    games, K); MRR = 1 / (position of the first held-out game + 1)."""
    train_users, train_items = train_pairs
    values = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg")} | {"mrr": []}
    users = sorted(set(int(u) for u in val_users))
    for user in users:
        held = {int(i) for u, i in zip(val_users, val_items) if u == user}
        owned = set(train_items[train_users == user].tolist())
        candidates = [i for i in range(scores_all.shape[1]) if i not in owned]
        keyed = [(-np.nan_to_num(scores_all[user, i], nan=-np.inf), i) for i in candidates]
        ranking = [i for _, i in sorted(keyed)]
        positions = [p for p, item in enumerate(ranking) if item in held]
        for k in ks:
            inside = [p for p in positions if p < k]
            values[f"recall@{k}"].append(len(inside) / len(held))
            ideal = sum(1 / math.log2(p + 2) for p in range(min(len(held), k)))
            values[f"ndcg@{k}"].append(sum(1 / math.log2(p + 2) for p in inside) / ideal)
        values["mrr"].append(1 / (positions[0] + 1))
    return np.array(users), {name: np.array(v) for name, v in values.items()}


def random_case(seed=0, n_users=9, n_items=13, dim=3, most_held=3):
    rng = np.random.default_rng(seed)
    # small integer vectors: many exact score ties
    user_vectors = torch.from_numpy(rng.integers(-2, 3, size=(n_users, dim)).astype(np.float32))
    item_vectors = torch.from_numpy(rng.integers(-2, 3, size=(n_items, dim)).astype(np.float32))
    train_users, train_items, val_users, val_items = [], [], [], []
    for user in range(n_users):
        held = int(rng.integers(1, most_held + 1))
        chosen = rng.choice(n_items, size=held + int(rng.integers(1, 5)), replace=False)
        val_users += [user] * held
        val_items += [int(i) for i in chosen[:held]]
        train_users += [user] * (len(chosen) - held)
        train_items += [int(i) for i in chosen[held:]]
    train = TrainItems.from_pairs(np.array(train_users), np.array(train_items), n_users)
    order = rng.permutation(len(val_users))  # evaluation order need not be sorted
    return (
        user_vectors,
        item_vectors,
        train,
        np.array(val_users)[order],
        np.array(val_items)[order],
        (np.array(train_users), np.array(train_items)),
    )


def assert_matches_reference(case, chunk_users=None):
    user_vectors, item_vectors, train, val_users, val_items, pairs = case
    got = evaluate_scorer(
        dot_product_scorer(user_vectors, item_vectors),
        item_vectors.shape[0],
        train,
        val_users,
        val_items,
        KS,
        chunk_users,
    )
    scores = user_vectors.numpy().astype(np.float64) @ item_vectors.numpy().astype(np.float64).T
    users, expected = reference_metrics(scores, pairs, val_users, val_items)
    np.testing.assert_array_equal(got.users, users)
    for name, values in expected.items():
        np.testing.assert_allclose(got.values[name], values, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk", [1, 4, None])
def test_metrics_match_the_slow_reference_with_several_held_out_games(seed, chunk):
    assert_matches_reference(random_case(seed), chunk)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_users=st.integers(1, 12),
    n_items=st.integers(8, 20),
    most_held=st.integers(1, 4),
    chunk=st.sampled_from([1, 3, None]),
)
def test_metrics_match_the_reference_on_random_cases(seed, n_users, n_items, most_held, chunk):
    assert_matches_reference(random_case(seed, n_users, n_items, 3, most_held), chunk)


def test_one_held_out_game_is_leave_one_out():
    """With one game per user: Recall@K is the hit rate, NDCG@K = 1/log2(rank + 2) on a hit,
    MRR = 1/(rank + 1); ranks 0, 1, 4 and 30 below."""
    item_vectors = torch.arange(40, 0, -1, dtype=torch.float32)[:, None]  # item i ranks i-th
    no_training = TrainItems.from_pairs(np.array([], dtype=np.int64), np.array([], np.int64), 4)
    metrics = evaluate_scorer(
        dot_product_scorer(torch.ones(4, 1), item_vectors),
        40,
        no_training,
        np.arange(4),
        np.array([0, 1, 4, 30]),
        (1, 5, 10),
    ).mean()
    assert metrics["recall@1"] == pytest.approx(1 / 4)
    assert metrics["recall@5"] == pytest.approx(3 / 4)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 31) / 4)


def test_several_held_out_games_count_each_other_and_the_ideal_is_capped_at_k():
    # one user, items scored 5 > 4 > ... > 0; held out: items 0, 1, 4 (ranks 0, 1, 4)
    item_vectors = torch.arange(6, 0, -1, dtype=torch.float32)[:, None]
    none = TrainItems.from_pairs(np.array([], dtype=np.int64), np.array([], np.int64), 1)
    metrics = evaluate_scorer(
        dot_product_scorer(torch.ones(1, 1), item_vectors),
        6,
        none,
        np.zeros(3, dtype=np.int64),
        np.array([4, 0, 1]),
        (2, 5),
    ).mean()
    assert metrics["recall@2"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx(1.0)  # both top places are hits: ideal at K=2
    ideal5 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / ideal5)
    assert metrics["mrr"] == 1.0


def test_masking_is_per_user_and_removes_training_games_from_the_ranking():
    item_vectors = torch.tensor([[4.0], [3.0], [2.0], [1.0]])
    # user 0 trained on item 0, user 1 on item 3: only user 0's rank of item 2 benefits.
    train = TrainItems.from_pairs(np.array([0, 1]), np.array([0, 3]), n_users=2)
    metrics = evaluate_scorer(
        dot_product_scorer(torch.ones(2, 1), item_vectors),
        4,
        train,
        np.array([0, 1]),
        np.array([2, 2]),
        (1,),
    )
    assert metrics.values["mrr"].tolist() == [1 / 2, 1 / 3]


def test_popularity_ties_break_towards_smaller_item_idx():
    train_items = np.array([3, 1, 3, 0, 2, 1])
    counts = popularity_scores(train_items, n_items=4)  # 1, 2, 1, 2
    train = TrainItems.from_pairs(np.array([0, 0, 1, 1, 1, 2]), train_items, n_users=3)
    metrics = evaluate_scorer(
        lambda users: counts.expand(len(users), -1).clone(),
        4,
        train,
        np.array([0, 1, 2]),
        np.array([2, 1, 0]),
        (1,),
    )
    # user 0: items 1, 3 masked -> 0 (1), 2 (1): tie, 0 first -> rank 1
    # user 1: items 0, 2, 3 masked -> only item 1 left -> rank 0
    # user 2: item 1 masked -> 3 (2) ahead of 0 (1) -> rank 1
    assert metrics.values["mrr"].tolist() == [1 / 2, 1.0, 1 / 2]


@pytest.mark.parametrize(
    "row, expected_rank",
    [([0.1, 0.2, float("nan"), 0.3, 0.0], 3), ([float("nan"), 0.2, float("nan"), 0.3, 0.0], 3)],
    ids=["nan-held-out", "nan-elsewhere-too"],
)
def test_a_nan_score_ranks_behind_every_finite_score(row, expected_rank):
    train = TrainItems.from_pairs(np.array([0]), np.array([4]), n_users=1)
    metrics = evaluate_scorer(
        lambda users: torch.tensor([row]).repeat(len(users), 1),
        5,
        train,
        np.array([0]),
        np.array([2]),
        (1,),
    )
    assert metrics.values["mrr"].tolist() == [1 / (expected_rank + 1)]


def test_exact_top_k_breaks_ties_at_the_threshold_by_index():
    scores = torch.tensor([[1.0, 3.0, 2.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    assert exact_top_k(scores, 3).tolist() == [[1, 2, 3], [0, 1, 2]]


def test_user_metrics_average_and_standard_error():
    metrics = UserMetrics(np.arange(4), {"ndcg@20": np.array([1.0, 0.5, 0.0, 0.5])})
    assert metrics.mean() == {"ndcg@20": 0.5}
    mean, error = metrics.with_error("ndcg@20")
    assert error == pytest.approx(np.std([1.0, 0.5, 0.0, 0.5], ddof=1) / 2)
    assert np.isnan(UserMetrics(np.arange(1), {"x": np.array([1.0])}).with_error("x")[1])


def test_train_items_from_pairs_and_pairs_for():
    users = np.array([2, 0, 2, 0, 2])
    items = np.array([5, 1, 3, 4, 0])
    train = TrainItems.from_pairs(users, items, n_users=4)
    assert train.indptr.tolist() == [0, 2, 2, 5, 5]
    assert train.indices[0:2].tolist() == [1, 4]  # stable: input order within a user
    rows, got = train.pairs_for(np.array([2, 1, 0, 3]))
    assert rows.tolist() == [0, 0, 0, 2, 2] and got.tolist() == [5, 3, 0, 1, 4]


def test_no_held_out_game_is_an_error():
    none = TrainItems.from_pairs(np.array([0]), np.array([0]), 1)
    with pytest.raises(ValueError, match="no game was held out"):
        evaluate_scorer(lambda u: torch.zeros(len(u), 2), 2, none, np.array([]), np.array([]))


def test_chunk_size_is_cache_sized_and_shrinks_when_memory_is_short():
    mib = 1 << 20
    plenty = 1 << 40
    assert score_chunk_users(1_000, available_bytes=plenty) == CACHE_CHUNK_SCORES // 1_000
    assert score_chunk_users(1_000, available_bytes=40 * mib) == (5 * mib // 5) // 1_000
    assert score_chunk_users(1_000, available_bytes=0) == (mib // 5) // 1_000
    assert score_chunk_users(10**9, available_bytes=plenty) == 1
