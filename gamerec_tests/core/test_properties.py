"""Property-based tests (hypothesis): the split and the metrics on any generated interactions."""

import numpy as np
import polars as pl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gamerec_assets.core.metrics import TrainItems, dot_product_scorer, evaluate_scorer
from gamerec_assets.core.settings import LEAVE_ONE_OUT
from gamerec_assets.core.splits import leave_one_out_split

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def interactions(draw) -> pl.DataFrame:
    """Distinct (user, game) pairs with hours (ties and zeros likely) and timestamps."""
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 10))
    pairs = draw(
        st.sets(
            st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)),
            min_size=1,
            max_size=40,
        )
    )
    pairs = sorted(pairs)
    hours = draw(
        st.lists(
            st.sampled_from([0.0, 0.5, 1.0, 7.0, 7.0, 120.0]),
            min_size=len(pairs),
            max_size=len(pairs),
        )
    )
    stamps = draw(st.lists(st.integers(0, 5), min_size=len(pairs), max_size=len(pairs)))
    return pl.DataFrame(
        {
            "user_idx": [u for u, _ in pairs],
            "item_idx": [i for _, i in pairs],
            "play_time_hours": hours,
            "timestamp": stamps,
        },
        schema={
            "user_idx": pl.Int64,
            "item_idx": pl.Int64,
            "play_time_hours": pl.Float64,
            "timestamp": pl.Int64,
        },
    )


@SETTINGS
@given(frame=interactions(), strategy=st.sampled_from(LEAVE_ONE_OUT), seed=st.integers(0, 3))
def test_split_invariants(frame, strategy, seed):
    split = leave_one_out_split(frame, strategy, seed)
    train = set(split.train.select("user_idx", "item_idx").rows())
    val = set(split.val.select("user_idx", "item_idx").rows())
    everything = set(frame.select("user_idx", "item_idx").rows())
    assert not train & val  # no held-out pair is in train
    assert train | val == everything  # nothing lost, nothing invented
    counts = frame.group_by("user_idx").len()
    held_out_users = split.val["user_idx"].to_list()
    assert len(held_out_users) == len(set(held_out_users))  # one game per user at most
    assert set(held_out_users) == set(counts.filter(pl.col("len") >= 2)["user_idx"].to_list())
    assert set(held_out_users) <= set(split.train["user_idx"].to_list())  # has training data
    if strategy == "max_playtime":
        for user, item, hours in split.val.select("user_idx", "item_idx", "play_time_hours").rows():
            mine = frame.filter(pl.col("user_idx") == user)
            top = mine["play_time_hours"].max()
            assert hours == top
            assert item == mine.filter(pl.col("play_time_hours") == top)["item_idx"].min()


def _slow_ranks(scores: np.ndarray, owned: list[set[int]], users, targets) -> list[int]:
    ranks = []
    for user, target in zip(users, targets, strict=True):
        candidates = [i for i in range(scores.shape[1]) if i not in owned[user]]
        ordered = sorted(candidates, key=lambda i: (-scores[user, i], i))
        ranks.append(ordered.index(target))
    return ranks


@SETTINGS
@given(frame=interactions(), dim=st.integers(1, 3), data=st.data())
def test_ranks_and_metrics_match_a_slow_reference(frame, dim, data):
    split = leave_one_out_split(frame, "max_playtime")
    if split.val.height == 0:
        return
    n_users = int(frame["user_idx"].max()) + 1
    n_items = int(frame["item_idx"].max()) + 1
    values = st.integers(-2, 2)  # small integers: many exact ties
    users = np.array(data.draw(st.lists(values, min_size=n_users * dim, max_size=n_users * dim)))
    items = np.array(data.draw(st.lists(values, min_size=n_items * dim, max_size=n_items * dim)))
    user_vectors = torch.tensor(users.reshape(n_users, dim), dtype=torch.float32)
    item_vectors = torch.tensor(items.reshape(n_items, dim), dtype=torch.float32)
    train_users, train_items = (
        split.train["user_idx"].to_numpy(),
        split.train["item_idx"].to_numpy(),
    )
    val_users, val_items = split.val["user_idx"].to_numpy(), split.val["item_idx"].to_numpy()
    chunk = data.draw(st.sampled_from([1, 2, None]))
    evaluated = evaluate_scorer(
        dot_product_scorer(user_vectors, item_vectors),
        n_items,
        TrainItems.from_pairs(train_users, train_items, n_users),
        val_users,
        val_items,
        (1, 5),
        chunk_users=chunk,
    )
    ranks = np.rint(1 / evaluated.values["mrr"] - 1).astype(int)  # one game each: MRR = 1/(r+1)
    owned = [set() for _ in range(n_users)]
    for user, item in zip(train_users, train_items, strict=True):
        owned[user].add(int(item))
    scores = (user_vectors @ item_vectors.T).numpy()
    order = np.argsort(val_users)
    slow = _slow_ranks(scores, owned, val_users[order], val_items[order])
    assert ranks.tolist() == slow
    metrics = evaluated.mean()
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert metrics["recall@1"] <= metrics["recall@5"]
    assert metrics["ndcg@5"] <= metrics["recall@5"]
