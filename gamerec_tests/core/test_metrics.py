import math

import numpy as np
import pytest
import torch

from gamerec_assets.core.baselines import popularity_scores
from gamerec_assets.core.metrics import (
    CACHE_CHUNK_SCORES,
    TrainItems,
    heldout_ranks,
    rank_heldout,
    ranking_metrics,
    score_chunk_users,
)


def test_ranking_metrics_hand_computed():
    metrics = ranking_metrics(np.array([0, 1, 4, 30]), ks=(1, 5, 10))
    expected = {
        "recall@1": 0.25,
        "ndcg@1": 0.25,
        "recall@5": 0.75,
        "ndcg@5": (1.0 + 1 / math.log2(3) + 1 / math.log2(6)) / 4,
        "recall@10": 0.75,
        "ndcg@10": (1.0 + 1 / math.log2(3) + 1 / math.log2(6)) / 4,
        "mrr": (1.0 + 1 / 2 + 1 / 5 + 1 / 31) / 4,
    }
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, rel=1e-12), name
    # (1 + 0.6309298 + 0.3868528) / 4
    assert metrics["ndcg@5"] == pytest.approx(0.5044456, abs=1e-6)
    assert metrics["mrr"] == pytest.approx(0.4330645, abs=1e-6)


def test_ranking_metrics_perfect_and_default_ks():
    metrics = ranking_metrics(np.zeros(3, dtype=np.int64))
    assert metrics == {
        "recall@10": 1.0,
        "ndcg@10": 1.0,
        "recall@20": 1.0,
        "ndcg@20": 1.0,
        "recall@50": 1.0,
        "ndcg@50": 1.0,
        "mrr": 1.0,
    }


def test_ranking_metrics_empty_raises():
    with pytest.raises(ValueError, match="no evaluated users"):
        ranking_metrics(np.array([], dtype=np.int64))


def test_train_items_from_pairs_and_pairs_for():
    users = np.array([2, 0, 2, 0, 2])
    items = np.array([5, 1, 3, 4, 0])
    train = TrainItems.from_pairs(users, items, n_users=4)
    assert train.indptr.tolist() == [0, 2, 2, 5, 5]
    assert train.indices[0:2].tolist() == [1, 4]  # stable: input order within a user
    assert train.indices[2:5].tolist() == [5, 3, 0]

    rows, got = train.pairs_for(np.array([2, 1, 0, 3]))
    assert rows.tolist() == [0, 0, 0, 2, 2]
    assert got.tolist() == [5, 3, 0, 1, 4]

    rows, got = train.pairs_for(np.array([1, 3]))
    assert rows.tolist() == [] and got.tolist() == []


def test_masking_ignores_training_items_that_would_outrank_the_heldout():
    # One user, 4 items; item scores 4, 3, 2, 1. Training items 0 and 1 outrank the held-out 2.
    user_vectors = torch.ones(1, 1)
    item_vectors = torch.tensor([[4.0], [3.0], [2.0], [1.0]])
    train = TrainItems.from_pairs(np.array([0, 0]), np.array([0, 1]), n_users=1)
    ranks = heldout_ranks(user_vectors, item_vectors, train, np.array([0]), np.array([2]))
    assert ranks.tolist() == [0]
    unmasked = TrainItems.from_pairs(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 1)
    unmasked_ranks = heldout_ranks(
        user_vectors, item_vectors, unmasked, np.array([0]), np.array([2])
    )
    assert unmasked_ranks.tolist() == [2]


def test_masking_is_per_user():
    user_vectors = torch.ones(2, 1)
    item_vectors = torch.tensor([[4.0], [3.0], [2.0], [1.0]])
    # user 0 trained on item 0, user 1 on item 3: only user 0's rank of item 2 benefits.
    train = TrainItems.from_pairs(np.array([0, 1]), np.array([0, 3]), n_users=2)
    ranks = heldout_ranks(user_vectors, item_vectors, train, np.array([0, 1]), np.array([2, 2]))
    assert ranks.tolist() == [1, 2]


def test_ties_break_towards_smaller_item_idx():
    n_items = 6
    user_vectors = torch.ones(3, 2)
    item_vectors = torch.ones(n_items, 2)  # constant scorer
    train = TrainItems.from_pairs(np.array([2]), np.array([1]), n_users=3)
    ranks = heldout_ranks(
        user_vectors, item_vectors, train, np.array([0, 1, 2]), np.array([0, 5, 4])
    )
    # user 2 has item 1 masked, so only items 0, 2, 3 are ahead of item 4
    assert ranks.tolist() == [0, 5, 3]


def _random_case(seed=0, n_users=9, n_items=13, dim=3):
    rng = np.random.default_rng(seed)
    # small integer vectors: many exact score ties
    user_vectors = torch.from_numpy(rng.integers(-2, 3, size=(n_users, dim)).astype(np.float32))
    item_vectors = torch.from_numpy(rng.integers(-2, 3, size=(n_items, dim)).astype(np.float32))
    train_users, train_items, val_users, val_items = [], [], [], []
    for user in range(n_users):
        chosen = rng.choice(n_items, size=int(rng.integers(2, 6)), replace=False)
        val_users.append(user)
        val_items.append(int(chosen[0]))
        train_users += [user] * (len(chosen) - 1)
        train_items += [int(i) for i in chosen[1:]]
    train = TrainItems.from_pairs(np.array(train_users), np.array(train_items), n_users)
    order = rng.permutation(n_users)  # evaluation order need not be sorted
    return (
        user_vectors,
        item_vectors,
        train,
        np.array(val_users)[order],
        np.array(val_items)[order],
        (np.array(train_users), np.array(train_items)),
    )


def _reference_ranks(user_vectors, item_vectors, train_pairs, val_users, val_items):
    scores_all = user_vectors.numpy().astype(np.float64) @ item_vectors.numpy().astype(np.float64).T
    train_users, train_items = train_pairs
    ranks = []
    for user, target in zip(val_users, val_items):
        owned = set(train_items[train_users == user].tolist())
        candidates = [i for i in range(scores_all.shape[1]) if i not in owned]
        scores = scores_all[user, candidates]
        # descending score, then ascending item index
        order = np.lexsort((np.array(candidates), -scores))
        ranked = [candidates[i] for i in order]
        ranks.append(ranked.index(target))
    return np.array(ranks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heldout_ranks_match_slow_reference(seed):
    user_vectors, item_vectors, train, val_users, val_items, pairs = _random_case(seed)
    expected = _reference_ranks(user_vectors, item_vectors, pairs, val_users, val_items)
    got = heldout_ranks(user_vectors, item_vectors, train, val_users, val_items)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_chunked_ranks_equal_unchunked():
    user_vectors, item_vectors, train, val_users, val_items, _ = _random_case(seed=5, n_users=11)
    full = heldout_ranks(user_vectors, item_vectors, train, val_users, val_items, chunk_users=None)
    assert len(set(full.tolist())) > 1
    for chunk in (1, 2, 3, 100):
        np.testing.assert_array_equal(
            heldout_ranks(
                user_vectors, item_vectors, train, val_users, val_items, chunk_users=chunk
            ),
            full,
        )


def test_reused_score_buffer_gives_each_chunk_its_own_scores():
    """dot_product_scorer reuses one buffer; a short last chunk must not see stale rows."""
    user_vectors, item_vectors, train, val_users, val_items, pairs = _random_case(
        seed=8, n_users=10, n_items=7
    )
    expected = _reference_ranks(user_vectors, item_vectors, pairs, val_users, val_items)
    for chunk in (3, 4, 6):  # 10 users: last chunk of 1, 2 and 4
        got = heldout_ranks(user_vectors, item_vectors, train, val_users, val_items, chunk)
        np.testing.assert_array_equal(got, expected)


def test_heldout_ranks_does_not_modify_inputs():
    user_vectors, item_vectors, train, val_users, val_items, _ = _random_case(seed=3)
    before = (user_vectors.clone(), item_vectors.clone(), train.indices.copy())
    heldout_ranks(user_vectors, item_vectors, train, val_users, val_items, chunk_users=2)
    assert torch.equal(user_vectors, before[0]) and torch.equal(item_vectors, before[1])
    np.testing.assert_array_equal(train.indices, before[2])


def test_popularity_ranks_follow_counts_with_masking():
    train_users = np.array([0, 0, 1, 1, 1, 2])
    train_items = np.array([3, 1, 3, 0, 2, 1])
    counts = popularity_scores(train_items, n_items=4)
    train = TrainItems.from_pairs(train_users, train_items, n_users=3)
    # counts: item0=1, item1=2, item2=1, item3=2
    ranks = rank_heldout(
        lambda users: counts.expand(len(users), -1).clone(),
        4,
        train,
        np.array([0, 1, 2]),
        np.array([2, 1, 0]),
    )
    # user 0: items 1, 3 masked -> 0 (1), 2 (1): tie, 0 first -> rank 1
    # user 1: items 0, 2, 3 masked -> only item 1 left -> rank 0
    # user 2: item 1 masked -> 3 (2) ahead of 0 (1) -> rank 1
    assert ranks.tolist() == [1, 0, 1]


def test_a_nan_score_never_ranks_a_held_out_game_first():
    train_items = TrainItems.from_pairs(np.array([0]), np.array([4]), n_users=1)

    def scorer(users):
        scores = torch.tensor([[0.1, 0.2, float("nan"), 0.3, 0.0]])
        return scores.repeat(len(users), 1)

    ranks = rank_heldout(scorer, 5, train_items, np.array([0]), np.array([2]))
    assert ranks.tolist() == [3]  # behind the three finite scores; game 4 is masked


def test_a_nan_held_out_score_ranks_behind_every_finite_score():
    train_items = TrainItems.from_pairs(np.array([0]), np.array([4]), n_users=1)

    def scorer(users):
        return torch.tensor([[float("nan"), 0.2, float("nan"), 0.3, 0.0]]).repeat(len(users), 1)

    ranks = rank_heldout(scorer, 5, train_items, np.array([0]), np.array([2]))
    assert ranks.tolist() == [3]  # games 1 and 3 (finite), then game 0 (NaN, smaller index)


def test_chunk_size_is_cache_sized_and_shrinks_when_memory_is_short():
    mib = 1 << 20
    plenty = 1 << 40
    assert score_chunk_users(1_000, available_bytes=plenty) == CACHE_CHUNK_SCORES // 1_000
    # an eighth of 40 MiB is 5 MiB: 1M five-byte scores, fewer than the cache-sized chunk
    assert score_chunk_users(1_000, available_bytes=40 * mib) == (5 * mib // 5) // 1_000
    # never below 1 MiB of scores, and never below one user
    assert score_chunk_users(1_000, available_bytes=0) == (mib // 5) // 1_000
    assert score_chunk_users(10**9, available_bytes=plenty) == 1
    assert 1 <= score_chunk_users(1_000) <= CACHE_CHUNK_SCORES // 1_000


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_ranks_with_and_without_ties_match_reference_at_any_chunk_size(chunk):
    """Rows with ties take the exact path, the others the two-pass one: same answer."""
    user_vectors, item_vectors, train, val_users, val_items, pairs = _random_case(
        seed=11, n_users=40, n_items=30, dim=4
    )
    user_vectors = user_vectors.clone()
    noise = torch.randn(20, 4, generator=torch.Generator().manual_seed(0)) * 1e-3
    user_vectors[::2] += noise  # half the users get tie-free scores
    expected = _reference_ranks(user_vectors, item_vectors, pairs, val_users, val_items)
    got = heldout_ranks(user_vectors, item_vectors, train, val_users, val_items, chunk_users=chunk)
    np.testing.assert_array_equal(got, expected)
