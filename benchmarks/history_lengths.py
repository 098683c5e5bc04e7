"""Training cost per pair across history-length profiles of equal size: does it follow the
interactions, or the square of the history lengths?

Three synthetic data sets with the same number of interactions: light (about 10 games a
user), medium (about 100) and heavy-tailed (a power law: most users own a few games, a few
own thousands). For each, the default model trains a fixed number of steps, with the
project's history sample (`GAMEREC_HISTORY_SAMPLE`) and, for comparison, with whole
histories (0), and the seconds per training pair are reported.

    .venv/bin/python benchmarks/history_lengths.py [--interactions 1000000] [--steps 60]
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gamerec_assets.core.compute import configure_threads
from gamerec_assets.core.features import index_interactions
from gamerec_assets.core.model import TwoTower
from gamerec_assets.core.settings import TrainConfig
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions
from gamerec_assets.core.training.loop import (
    BatchSource,
    PairTowers,
    TrainingPairs,
    deterministic_on_cpu,
    make_optimizer,
    run_epoch,
    shuffled_batches,
)
from gamerec_assets.core.training.loss import RetrievalLoss, item_log_frequencies
from gamerec_assets.core.training.world import SINGLE_PROCESS

PROFILES = {
    "light (10 a user)": dict(per_user=10, history_lengths="lognormal"),
    "medium (100 a user)": dict(per_user=100, history_lengths="lognormal"),
    "heavy-tailed (power law)": dict(per_user=10, history_lengths="power_law"),
}


def profile_pairs(interactions: int, games: int, per_user: int, history_lengths: str):
    spec = SyntheticSpec(
        n_users=interactions // per_user,
        n_games=games,
        n_interactions=interactions,
        history_lengths=history_lengths,
    )
    indexed = index_interactions(generate_synthetic_interactions(spec))
    frame = indexed.interactions
    pairs = TrainingPairs(
        frame["user_idx"].to_numpy(),
        frame["item_idx"].to_numpy(),
        frame["play_time_hours"].to_numpy(),
    )
    lengths = np.bincount(pairs.users)
    stats = {
        "pairs": len(pairs.users),
        "users": indexed.n_users,
        "median_games": float(np.median(lengths)),
        "max_games": int(lengths.max()),
        "mean_history_per_pair": float((lengths.astype(float) ** 2).sum() / lengths.sum()),
    }
    return pairs, indexed.n_users, indexed.n_items, stats


def seconds_per_pair(pairs, n_users, n_items, config: TrainConfig, steps: int) -> float:
    """Time `steps` batches of the training loop's own epoch function on the whole data (whole
    histories, the same batches for every variant), after one warm-up batch."""
    device = torch.device("cpu")
    torch.manual_seed(config.seed)
    model = TwoTower.for_config(n_users, n_items, config)
    model = model.use_sparse_gradients(config.sparse_gradients)
    optimizer = make_optimizer(model, config)
    data = BatchSource.build(pairs, n_users, n_items, config, device, True, False)
    log_q = item_log_frequencies(pairs.items, n_items)
    loss = RetrievalLoss(config.temperature, log_q, config.mask_accidental_hits)
    generator = torch.Generator().manual_seed(config.seed)
    batches = list(shuffled_batches(len(pairs.users), config.batch_size, generator))
    towers = PairTowers(model)
    with deterministic_on_cpu(device):  # as training runs
        run_epoch(towers, loss, data, optimizer, batches[:1], generator, SINGLE_PROCESS, False)
        started = time.perf_counter()
        timed = batches[1 : steps + 1]
        run_epoch(towers, loss, data, optimizer, timed, generator, SINGLE_PROCESS, False)
    return (time.perf_counter() - started) / sum(len(batch) for batch in timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--games", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results/history_lengths.json")
    args = parser.parse_args()
    configure_threads(None)
    base = replace(TrainConfig(), epochs=1, select_epochs=False)
    rows = []
    print(f"{'profile':<26} {'median':>6} {'max':>6} {'n/pair':>7} {'sample':>7} {'us/pair':>8}")
    for name, profile in PROFILES.items():
        pairs, n_users, n_items, stats = profile_pairs(args.interactions, args.games, **profile)
        for sample in (base.history_sample, 0):
            config = replace(base, history_sample=sample)
            seconds = seconds_per_pair(pairs, n_users, n_items, config, args.steps)
            rows.append({"profile": name, **stats, "history_sample": sample, "s_per_pair": seconds})
            print(
                f"{name:<26} {stats['median_games']:>6.0f} {stats['max_games']:>6} "
                f"{stats['mean_history_per_pair']:>7.0f} {sample or 'all':>7} "
                f"{seconds * 1e6:>8.1f}",
                flush=True,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
