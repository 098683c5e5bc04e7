"""Milliseconds per training step of the default model by embedding update: where a step's
time goes at 100k games x 256 dims, batch 1024, history bags of 20.

Variants: torch's SparseAdam (the project's update until December 2026), `RowAdam` (the
project's update: lazy Adam from row gathers and torch's fused Adam kernel), dense fused
AdamW over whole tables, and forward + backward with no update at all (the floor). Each is
the best of three runs of `--steps` steps after a warm-up, on the same batches.

    .venv/bin/python benchmarks/optimizers.py [--games 100000] [--steps 20]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gamerec_assets.core.compute import configure_threads
from gamerec_assets.core.model import TwoTower, UserHistory
from gamerec_assets.core.training.loop import deterministic_on_cpu
from gamerec_assets.core.training.loss import RetrievalLoss, item_log_frequencies
from gamerec_assets.core.training.optim import RowAdam

VARIANTS = {
    "SparseAdam (torch)": ("sparse", lambda params, lr: torch.optim.SparseAdam(params, lr=lr)),
    "RowAdam (project)": ("sparse", lambda params, lr: RowAdam(params, lr=lr)),
    "dense fused AdamW": ("dense", lambda params, lr: torch.optim.AdamW(params, lr=lr, fused=True)),
    "forward + backward only": ("sparse", None),
}


def batches(n_games: int, history: int, batch: int, steps: int, seed: int = 0):
    """Batches of (users, items, history bags) with Zipf-like game popularity."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_games + 1) ** 0.8
    popularity /= popularity.sum()
    users = np.repeat(np.arange(batch * steps), history + 1)
    items = rng.choice(n_games, size=len(users), p=popularity)
    pairs = UserHistory.from_pairs(users, items, batch * steps)
    out = []
    for step in range(steps):
        rows = torch.arange(step * batch, (step + 1) * batch) * (history + 1)
        out.append(
            (
                rows // (history + 1),
                torch.from_numpy(items)[rows],
                pairs.sample_bags(rows, history, None),
            )
        )
    return out, item_log_frequencies(items, n_games)


def ms_per_step(kind, make, n_games, dim, data, log_q, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        torch.manual_seed(0)
        model = TwoTower(len(data) * len(data[0][0]), n_games, dim, "history", True)
        model = model.use_sparse_gradients(kind == "sparse")
        parameters = [model.item_embedding.weight, model.history_embedding.weight]
        optimizer = make(parameters, 3e-3) if make else None
        loss_fn = RetrievalLoss(0.15, log_q, True)
        with deterministic_on_cpu(torch.device("cpu")):
            for index, (users, items, bags) in enumerate(data):
                if index == 1:
                    started = time.perf_counter()
                user_vectors, item_vectors = model.encode_pairs(users, items, bags)
                loss = loss_fn(user_vectors, item_vectors, items)
                model.zero_grad(set_to_none=True)
                loss.backward()
                if optimizer is not None:
                    optimizer.step()
        best = min(best, (time.perf_counter() - started) / (len(data) - 1) * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/optimizers.json")
    args = parser.parse_args()
    threads = configure_threads(None)
    data, log_q = batches(args.games, args.history, args.batch, args.steps + 1)
    rows = []
    print(
        f"{args.games} games x {args.dim} dims, batch {args.batch}, bags of {args.history}, "
        f"{threads} threads"
    )
    for name, (kind, make) in VARIANTS.items():
        ms = ms_per_step(kind, make, args.games, args.dim, data, log_q)
        rows.append({"variant": name, "ms_per_step": ms})
        print(f"{name:<26} {ms:8.1f} ms/step", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
