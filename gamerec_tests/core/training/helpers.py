"""Small training data sets and configurations shared by the training tests."""

from dataclasses import replace

import numpy as np
import polars as pl
import torch

from gamerec_assets.core.settings import SEED_MODEL
from gamerec_assets.core.training.loop import TrainingPairs, train_model

FAST = replace(SEED_MODEL, epochs=6, batch_size=16, embed_dim=8, lr=0.05, seed=3)
"""The seed's plain model (ID towers, dense AdamW), small and quick."""

ALL_OPTIONS = replace(
    FAST,
    user_tower="history",
    normalize=True,
    temperature=0.1,
    logq_correction=True,
    mask_accidental_hits=True,
    playtime_weighting=True,
    history_weighting=True,
    weight_decay=0.01,
    negatives=4,
    history_dropout=0.2,
    history_mlp=16,
)
"""Every training option on, with dense gradients."""

FIT = replace(FAST, epochs=8, lr=0.5, seed=0, patience=2)


def quiet(message: str) -> None:
    del message


def two_clusters() -> tuple[np.ndarray, np.ndarray]:
    """Users 0-9 play items 0-4, users 10-19 play items 5-9: a structure the model can learn."""
    users, items = [], []
    for user in range(20):
        for item in range(0, 5) if user < 10 else range(5, 10):
            users.append(user)
            items.append(item)
    return np.array(users), np.array(items)


def clusters_with_hours(n_users: int = 20, per_cluster: int = 5):
    """Two clusters of users and games, with play hours varying by (user, game)."""
    users, items, hours = [], [], []
    for user in range(n_users):
        own = range(per_cluster) if user < n_users // 2 else range(per_cluster, 2 * per_cluster)
        for item in own:
            users.append(user)
            items.append(item)
            hours.append(float((user * 7 + item * 3) % 11))
    return np.array(users), np.array(items), np.array(hours)


def train_clusters(config=FAST, **kwargs):
    users, items = two_clusters()
    kwargs.setdefault("log", quiet)
    return train_model(TrainingPairs(users, items), 20, 10, config, progress=False, **kwargs)


def train_all_options(config=ALL_OPTIONS, **kwargs):
    users, items, hours = clusters_with_hours()
    kwargs.setdefault("log", quiet)
    pairs = TrainingPairs(users, items, hours)
    return train_model(pairs, 20, 10, config, progress=False, **kwargs)


def train_frame() -> pl.DataFrame:
    users, items, hours = clusters_with_hours(20, 6)
    return pl.DataFrame(
        {"user_idx": users, "item_idx": items, "play_time_hours": hours},
        schema={"user_idx": pl.Int64, "item_idx": pl.Int64, "play_time_hours": pl.Float64},
    )


def assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


def own_cluster_scores_highest(scores: torch.Tensor) -> bool:
    """Every user's own cluster's games outscore every game of the other cluster."""
    half, games = scores.shape[0] // 2, scores.shape[1] // 2
    own = torch.cat([scores[:half, :games], scores[half:, games:]])
    other = torch.cat([scores[:half, games:], scores[half:, :games]])
    return bool((own.min(dim=1).values > other.max(dim=1).values).all())
