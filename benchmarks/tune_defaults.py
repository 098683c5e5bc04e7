"""How the default training settings were chosen: on a tuning split, never the hold-out.

Starting from a base configuration, one setting at a time is changed, and each variant is
scored by the best NDCG@20 it reaches on a tuning split carved out of Steam-200k's training
data (a second `max_playtime` leave-one-out). The evaluation hold-out is not looked at.

    .venv/bin/python benchmarks/tune_defaults.py [--out benchmarks/results/tune_defaults.json]
"""

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from datasets import steam

from gamerec_assets.core.compute import configure_threads
from gamerec_assets.core.settings import TrainConfig
from gamerec_assets.core.training.job import fit_two_tower

BASE = TrainConfig(
    epochs=20,
    batch_size=1024,
    embed_dim=128,
    lr=3e-3,
    user_tower="history",
    normalize=True,
    temperature=0.15,
    logq_correction=True,
    mask_accidental_hits=True,
    playtime_weighting=True,
    select_epochs=True,
    patience=3,
    refit=False,
    sparse_gradients=False,  # as when these defaults were chosen
)
VARIANTS = {
    "base": {},
    "temperature 0.1": {"temperature": 0.1},
    "temperature 0.2": {"temperature": 0.2},
    "embed_dim 64": {"embed_dim": 64},
    "embed_dim 256": {"embed_dim": 256},
    "lr 1e-2": {"lr": 1e-2},
    "lr 1e-3": {"lr": 1e-3},
    "user_tower id": {"user_tower": "id"},
    "user_tower history+id": {"user_tower": "history+id"},
    "no logQ correction": {"logq_correction": False},
    "no accidental-hit mask": {"mask_accidental_hits": False},
    "no playtime weighting": {"playtime_weighting": False},
    "history weighting": {"history_weighting": True},
    "weight_decay 0.01": {"weight_decay": 0.01},
    "batch_size 2048": {"batch_size": 2048},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/tune_defaults.json")
    args = parser.parse_args()
    configure_threads(None)
    bench = steam("max_playtime")
    rows = []
    print(f"{'variant':<26} {'tuning NDCG@20':>14} {'best epoch':>10} {'seconds':>8}")
    for name, change in VARIANTS.items():
        config = replace(BASE, **change)
        started = time.perf_counter()
        fit = fit_two_tower(
            bench.data.train,
            bench.data.n_users,
            bench.data.n_items,
            config,
            log=lambda _: None,
            progress=False,
        )
        seconds = time.perf_counter() - started
        best = max(fit.tuning.tuning_ndcg)
        rows.append(
            {
                "variant": name,
                "tuning_ndcg@20": best,
                "best_epoch": fit.tuning.best_epoch,
                "seconds": seconds,
                "config": asdict(config),
            }
        )
        print(f"{name:<26} {best:>14.4f} {fit.tuning.best_epoch:>10} {seconds:>8.1f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
