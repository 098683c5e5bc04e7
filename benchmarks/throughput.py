"""Throughput of the training loop and the evaluator against the seed's approach, same run.

Training: pairs per second and seconds per epoch of the project's loop (batches sliced from a
seeded permutation of index tensors) against the seed's per-sample `Dataset` + `DataLoader`,
both on the seed's model (user-ID tower, batch 1024, dim 64, Adam), on Steam-200k-sized and
10x-sized synthetic data; plus the FLOP floor of one epoch (forward and backward of the B x B
logits) over this machine's measured matmul rate. Evaluation: users per second of the
vectorised, masked evaluator against the seed's per-row loop (argsort per user), which is
timed on a sample of users and extrapolated (said in the table).

    .venv/bin/python benchmarks/throughput.py [--out benchmarks/results/throughput.json]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from datasets import synthetic
from torch.utils.data import DataLoader, Dataset

from gamerec_assets.core.compute import configure_threads
from gamerec_assets.core.metrics import heldout_ranks
from gamerec_assets.core.model import TwoTower
from gamerec_assets.core.trainer import TrainConfig, TrainingPairs, train_two_tower

SEED_MODEL = TrainConfig()  # the seed's model: ID towers, batch 1024, dim 64, lr 1e-3
SEED_LOOP_SAMPLE_USERS = 500


class SeedPairDataset(Dataset):
    """The seed's loader: one (user, item) pair per __getitem__."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        self.users = torch.tensor(np.asarray(users), dtype=torch.long)
        self.items = torch.tensor(np.asarray(items), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users[index], self.items[index]


def seed_epoch_seconds(users, items, n_users, n_items, config: TrainConfig) -> float:
    """One epoch of the seed's loop: DataLoader over the per-sample dataset, Adam."""
    torch.manual_seed(config.seed)
    model = TwoTower(n_users, n_items, config.embed_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loader = DataLoader(
        SeedPairDataset(users, items), batch_size=config.batch_size, shuffle=True, drop_last=True
    )
    started = time.perf_counter()
    for user_batch, item_batch in loader:
        logits = model(user_batch, item_batch)
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(user_batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def project_epoch_seconds(users, items, n_users, n_items, config: TrainConfig) -> float:
    result = train_two_tower(TrainingPairs(users, items), n_users, n_items, config, progress=False)
    return result.seconds / config.epochs


def matmul_flops_per_second(size: int = 1024, dim: int = 64, repeats: int = 200) -> float:
    """Measured float32 rate of the B x D @ D x B product the loss is made of."""
    a, b = torch.randn(size, dim), torch.randn(dim, size)
    for _ in range(10):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size * size * dim * repeats / (time.perf_counter() - started)


def epoch_flops(n_pairs: int, batch: int, dim: int) -> float:
    """Forward B x B logits (2 B^2 D) and backward to both towers (4 B^2 D), per batch."""
    return (n_pairs / batch) * 6 * batch * batch * dim


def training_rows(flop_rate: float) -> list[dict]:
    rows = []
    for label, sizes in [
        ("steam-200k-sized synthetic", dict(n_users=12_400, n_games=5_200, n_interactions=129_000)),
        ("10x synthetic", dict(n_users=124_000, n_games=52_000, n_interactions=1_290_000)),
    ]:
        data = synthetic(**sizes).data
        users, items = data.train["user_idx"].to_numpy(), data.train["item_idx"].to_numpy()
        config = TrainConfig(epochs=1)
        seed = seed_epoch_seconds(users, items, data.n_users, data.n_items, config)
        project = project_epoch_seconds(users, items, data.n_users, data.n_items, config)
        rows.append(
            {
                "stage": "training epoch (batch 1024, dim 64)",
                "data": f"{label}: {len(users):,} pairs",
                "project_s": project,
                "seed_s": seed,
                "speedup": seed / project,
                "project_pairs_per_s": len(users) / project,
                "floor_s": epoch_flops(len(users), 1024, 64) / flop_rate,
            }
        )
    return rows


def seed_eval_seconds_per_user(user_vectors, item_vectors, users, items) -> float:
    """The seed's evaluator: per row, score, argsort, find the held-out game (no masking)."""
    started = time.perf_counter()
    for user, item in zip(users, items):
        scores = user_vectors[user] @ item_vectors.T
        order = torch.argsort(scores, descending=True)
        (order == item).nonzero()
    return (time.perf_counter() - started) / len(users)


def evaluation_rows() -> list[dict]:
    rows = []
    for label, sizes in [
        ("10k users x 5k games", dict(n_users=10_000, n_games=5_000, n_interactions=150_000)),
        ("200k users x 50k games", dict(n_users=200_000, n_games=50_000, n_interactions=3_000_000)),
    ]:
        data = synthetic(**sizes).data
        torch.manual_seed(0)
        user_vectors = torch.randn(data.n_users, 64)
        item_vectors = torch.randn(data.n_items, 64)
        val_users, val_items = data.val["user_idx"].to_numpy(), data.val["item_idx"].to_numpy()
        started = time.perf_counter()
        heldout_ranks(user_vectors, item_vectors, data.train_items, val_users, val_items)
        project = time.perf_counter() - started
        sample = slice(0, SEED_LOOP_SAMPLE_USERS)
        per_user = seed_eval_seconds_per_user(
            user_vectors, item_vectors, val_users[sample], val_items[sample]
        )
        seed = per_user * len(val_users)
        rows.append(
            {
                "stage": "evaluation (full catalog)",
                "data": f"{label}: {len(val_users):,} evaluated users",
                "project_s": project,
                "seed_s": seed,
                "speedup": seed / project,
                "project_users_per_s": len(val_users) / project,
                "note": f"seed loop timed on {SEED_LOOP_SAMPLE_USERS} users, extrapolated",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    args = parser.parse_args()
    threads = configure_threads(None)
    flop_rate = matmul_flops_per_second()
    rows = training_rows(flop_rate) + evaluation_rows()
    print(f"{threads} threads; measured matmul rate {flop_rate / 1e9:.1f} GFLOP/s")
    print(f"{'stage':<36} {'data':<44} {'project s':>10} {'seed s':>10} {'speedup':>8}")
    for row in rows:
        print(
            f"{row['stage']:<36} {row['data']:<44} {row['project_s']:>10.2f} "
            f"{row['seed_s']:>10.2f} {row['speedup']:>7.1f}x"
            + (f"  floor {row['floor_s']:.2f} s" if "floor_s" in row else "")
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"threads": threads, "matmul_flops": flop_rate, "rows": rows}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
