"""Leave-one-out evaluation of the two-tower model and the baselines, on hand-checked cases."""

import math

import numpy as np
import polars as pl
import pytest
import torch

from gamerec_assets.core import evaluation
from gamerec_assets.core.baselines import fit_ease
from gamerec_assets.core.evaluation import (
    DEFAULT_EASE_L2,
    EASE_L2_GRID,
    EvaluationData,
    evaluate_ease,
    evaluate_popularity,
    evaluate_two_tower,
    history_from_frame,
    tune_ease_l2,
)
from gamerec_assets.core.model import TwoTower
from gamerec_assets.core.settings import TrainConfig
from gamerec_assets.core.splits import leave_one_out_split

SCHEMA = {"user_idx": pl.Int64, "item_idx": pl.Int64, "play_time_hours": pl.Float64}


def _frame(users, items, hours=None) -> pl.DataFrame:
    hours = [1.0] * len(users) if hours is None else hours
    return pl.DataFrame(
        {"user_idx": users, "item_idx": items, "play_time_hours": hours}, schema=SCHEMA
    )


def test_empty_val_raises():
    with pytest.raises(ValueError, match="nothing to evaluate: no game was held out for any user"):
        EvaluationData(_frame([0, 1], [0, 1]), _frame([], []), n_users=2, n_items=2)


# --- popularity ----------------------------------------------------------------------------------

# Train counts per item: [3, 2, 1, 1, 0]. Held out: user 0 -> 2, 1 -> 4, 2 -> 1, 3 -> 3.
POP_TRAIN = _frame([0, 0, 1, 1, 2, 2, 3], [0, 1, 0, 2, 0, 3, 1])
POP_VAL = _frame([0, 1, 2, 3], [2, 4, 1, 3])


def test_evaluate_popularity_by_hand():
    data = EvaluationData(POP_TRAIN, POP_VAL, n_users=4, n_items=5)
    # user 0: 0, 1 masked; 2 (1) ties 3 (1), wins on the smaller idx       -> rank 0
    # user 1: 0, 2 masked; 1 (2) and 3 (1) above 4 (0)                     -> rank 2
    # user 2: 0, 3 masked; 1 (2) is the most popular left                  -> rank 0
    # user 3: 1 masked; 0 (3) above, 2 (1) ties 3 (1) with a smaller idx   -> rank 2
    metrics = evaluate_popularity(data, ks=(1, 3))
    assert metrics["recall@1"] == pytest.approx(0.5)
    assert metrics["recall@3"] == pytest.approx(1.0)
    assert metrics["ndcg@1"] == pytest.approx(0.5)
    assert metrics["ndcg@3"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 + 1 / 3) / 4)
    assert set(metrics) == {"recall@1", "ndcg@1", "recall@3", "ndcg@3", "mrr"}


def test_evaluate_popularity_ignores_val_counts():
    # many held-out copies of item 4 must not make it popular: only train counts score
    val = _frame([0, 1, 2, 3], [4, 4, 4, 4])
    metrics = evaluate_popularity(EvaluationData(POP_TRAIN, val, 4, 5), ks=(1,))
    assert metrics["recall@1"] == 0.0
    # item 4 has count 0: it ranks after every unmasked game (ranks 2, 2, 2, 3)
    assert metrics["mrr"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 3 + 1 / 4) / 4)


# --- two-tower -----------------------------------------------------------------------------------


def _id_model(user_table, item_table) -> TwoTower:
    model = TwoTower(len(user_table), len(item_table), len(user_table[0]))
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.tensor(user_table))
        model.item_embedding.weight.copy_(torch.tensor(item_table))
    return model


def test_evaluate_two_tower_ranks_hand_set_vectors():
    # user 0 scores items [3, 2, 1, 0], user 1 scores [0, 0, 1, 2]
    model = _id_model([[1.0, 0.0], [0.0, 1.0]], [[3.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    data = EvaluationData(_frame([0, 1], [0, 3]), _frame([0, 1], [2, 1]), n_users=2, n_items=4)
    # user 0: item 0 masked; item 1 (2) above item 2 (1)                       -> rank 1
    # user 1: item 3 masked; item 2 (1) above, item 0 ties item 1 at 0, smaller -> rank 2
    metrics = evaluate_two_tower(model, TrainConfig(), data, ks=(1, 2, 3))
    assert metrics["recall@1"] == 0.0
    assert metrics["recall@2"] == pytest.approx(0.5)
    assert metrics["recall@3"] == pytest.approx(1.0)
    assert metrics["ndcg@2"] == pytest.approx(0.5 / math.log2(3))
    assert metrics["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_evaluate_two_tower_masks_training_games():
    # user 0 scores item 0 highest, but owns it: the held-out item 1 is then first
    model = _id_model([[1.0, 0.0]], [[5.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    data = EvaluationData(_frame([0], [0]), _frame([0], [1]), n_users=1, n_items=3)
    assert evaluate_two_tower(model, TrainConfig(), data, ks=(1,))["recall@1"] == 1.0


@pytest.mark.parametrize(("history_weighting", "expected_rank"), [(False, 1), (True, 0)])
def test_evaluate_two_tower_pools_history_as_the_model_was_trained(
    history_weighting, expected_rank
):
    # one user owns items 0 (100 hours) and 1 (0 hours); history rows 0 -> x, 1 -> y.
    # Unweighted the user vector is (0.5, 0.5): items 2 = y and 3 = x tie, item 2 wins on idx.
    # Weighted by play time it leans to x, so the held-out item 3 comes first.
    model = TwoTower(n_users=1, n_items=4, embed_dim=2, user_tower="history")
    with torch.no_grad():
        model.history_embedding.weight.copy_(
            torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
        )
        model.item_embedding.weight.copy_(
            torch.tensor([[9.0, 9.0], [9.0, 9.0], [0.0, 1.0], [1.0, 0.0]])
        )
    data = EvaluationData(
        _frame([0, 0], [0, 1], [100.0, 0.0]), _frame([0], [3], [5.0]), n_users=1, n_items=4
    )
    config = TrainConfig(user_tower="history", history_weighting=history_weighting)
    metrics = evaluate_two_tower(model, config, data, ks=(1,))
    assert metrics["mrr"] == pytest.approx(1.0 / (expected_rank + 1))


# --- EASE ----------------------------------------------------------------------------------------


def _random_interactions(n_users=60, n_items=25, per_user=6, seed=0) -> pl.DataFrame:
    """Users drawn from three overlapping tastes, so EASE's L2 weight matters."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        taste = user % 3
        pool = np.arange(taste * 8, taste * 8 + 10) % n_items
        chosen = rng.choice(pool, size=per_user - 1, replace=False)
        chosen = np.append(chosen, rng.integers(n_items))
        for item in np.unique(chosen):
            users.append(user)
            items.append(int(item))
    hours = rng.gamma(1.0, 10.0, size=len(users)).round(1).tolist()
    return _frame(users, items, hours)


def _ease_data(seed=0) -> EvaluationData:
    frame = _random_interactions(seed=seed)
    split = leave_one_out_split(frame, "max_playtime")
    return EvaluationData(split.train, split.val, n_users=60, n_items=25)


def test_tune_ease_l2_picks_the_best_weight_on_a_carved_split_inside_a_widened_grid(monkeypatch):
    data = _ease_data(seed=1)
    searched = {}
    real_search = evaluation.search_grid

    def recording_search(score, grid):
        best, scores = real_search(score, grid)
        searched.update(scores)
        return best, scores

    monkeypatch.setattr(evaluation, "search_grid", recording_search)
    chosen = tune_ease_l2(data, "max_playtime", seed=0)
    assert set(EASE_L2_GRID) <= set(searched) and chosen == max(searched, key=searched.get)
    # by hand: NDCG@20 of each weight on a second leave-one-out carved from train
    carved = leave_one_out_split(data.train, "max_playtime", 0)
    held = EvaluationData(carved.train, carved.val, 60, 25)
    for l2, score in searched.items():
        by_hand = held.metrics(fit_ease(held.train_items, 25, l2).scores, (20,))["ndcg@20"]
        assert score == pytest.approx(by_hand, abs=1e-12)


def test_search_grid_widens_until_the_best_is_inside():
    peak = 3000.0
    best, scores = evaluation.search_grid(lambda x: -abs(np.log(x / peak)), (50.0, 200.0, 500.0))
    assert sorted(scores)[0] < best < sorted(scores)[-1]
    assert best == 2000.0 and max(scores) == 8000.0  # 500 -> 2000 -> 8000: inside at last


def test_tune_ease_l2_never_reads_the_evaluation_hold_out():
    data = _ease_data(seed=3)
    chosen = tune_ease_l2(data, "max_playtime", seed=0)
    # choosing on the evaluation hold-out itself would give another value here
    on_val = {l2: evaluate_ease(data, l2, (20,))["ndcg@20"] for l2 in EASE_L2_GRID}
    assert chosen != max(on_val, key=on_val.get)
    n_val = data.val.height
    # other held-out games, and held-out rows that would crash any scorer that read them
    shifted = data.val.with_columns((pl.col("item_idx") + 7) % 25)
    out_of_range = _frame([10_000] * n_val, [10_000] * n_val)
    for val in (shifted, out_of_range):
        other = EvaluationData(data.train, val, data.n_users, data.n_items)
        assert tune_ease_l2(other, "max_playtime", seed=0) == chosen


def test_evaluate_ease_matches_its_closed_form_ranks():
    data = _ease_data()
    metrics = evaluate_ease(data, l2=50.0, ks=(5, 20))
    # by hand with numpy: X B, training games masked, ties to the smaller item_idx
    x = np.zeros((60, 25))
    x[data.train["user_idx"].to_numpy(), data.train["item_idx"].to_numpy()] = 1.0
    precision = np.linalg.inv(x.T @ x + 50.0 * np.eye(25))
    weights = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    weights = weights.astype(np.float32)  # EASE's weights are stored in float32
    ranks = []
    for user, item in zip(data.val["user_idx"].to_numpy(), data.val["item_idx"].to_numpy()):
        scores = x[user].astype(np.float32) @ weights
        scores[x[user] > 0] = -np.inf
        ahead = (scores > scores[item]) | ((scores == scores[item]) & (np.arange(25) < item))
        ranks.append(int(ahead.sum()))
    expected = loo_metrics(np.array(ranks), (5, 20))
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_evaluate_ease_skips_catalogs_above_the_limit(monkeypatch):
    data = EvaluationData(POP_TRAIN, POP_VAL, n_users=4, n_items=5)
    monkeypatch.setattr(evaluation, "EASE_MAX_ITEMS", 4)
    assert evaluate_ease(data, l2=1.0) is None
    monkeypatch.setattr(evaluation, "EASE_MAX_ITEMS", 5)  # at the limit: evaluated
    metrics = evaluate_ease(data, l2=1.0, ks=(1,))
    assert metrics is not None and set(metrics) == {"recall@1", "ndcg@1", "mrr"}


def test_ease_tuning_falls_back_when_no_user_can_hold_out_a_second_game():
    train = pl.DataFrame(
        {"user_idx": [0, 0, 1, 1], "item_idx": [0, 1, 1, 2], "play_time_hours": [1.0] * 4}
    )
    val = pl.DataFrame({"user_idx": [0], "item_idx": [2], "play_time_hours": [1.0]})
    data = EvaluationData(train, val, n_users=2, n_items=3)
    # Users with one training game have nothing to hold out for tuning:
    single = EvaluationData(train.filter(pl.col("item_idx") != 1), val, n_users=2, n_items=3)
    assert tune_ease_l2(single, "max_playtime") == DEFAULT_EASE_L2
    assert tune_ease_l2(data, "max_playtime") in EASE_L2_GRID


# --- sampled evaluation --------------------------------------------------------------------------


def test_sample_users_is_seeded_subset_and_all_when_too_few():
    split = leave_one_out_split(_random_interactions(), "max_playtime", 0)
    data = EvaluationData(split.train, split.val, n_users=60, n_items=25)
    sample = data.sample_users(20, seed=1)
    assert sample.val.height == 20
    assert sample.val["user_idx"].is_sorted()
    assert set(sample.val.rows()) <= set(data.val.rows())
    assert sample.val.equals(data.sample_users(20, seed=1).val)
    assert not sample.val.equals(data.sample_users(20, seed=2).val)
    assert sample.train is data.train
    assert data.sample_users(0) is data and data.sample_users(10_000) is data


@pytest.mark.parametrize("user_tower", ["id", "history"])
def test_sampled_evaluation_equals_ranking_the_same_users_with_every_vector(user_tower):
    """Only the sampled users are encoded; their scores must be the full model's scores."""
    split = leave_one_out_split(_random_interactions(), "max_playtime", 0)
    data = EvaluationData(split.train, split.val, n_users=60, n_items=25).sample_users(17, 3)
    torch.manual_seed(0)
    model = TwoTower(60, 25, 8, user_tower=user_tower)
    config = TrainConfig(user_tower=user_tower)
    every_user = model.user_vectors(history_from_frame(data.train, 60, config))
    expected = data.metrics(
        lambda users: every_user[torch.tensor(users)] @ model.item_vectors().T, (5, 10)
    )
    assert evaluate_two_tower(model, config, data, ks=(5, 10)) == pytest.approx(expected)


def loo_metrics(ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Leave-one-out metrics from 0-based ranks, by their textbook definition."""
    metrics = {}
    for k in ks:
        metrics[f"recall@{k}"] = float((ranks < k).mean())
        metrics[f"ndcg@{k}"] = float(np.where(ranks < k, 1 / np.log2(ranks + 2.0), 0).mean())
    return {**metrics, "mrr": float((1 / (ranks + 1.0)).mean())}
