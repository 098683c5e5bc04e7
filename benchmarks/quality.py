"""Retrieval quality of the project's default model against the baselines, on one protocol.

For each data set: leave-one-out split (the strategy given), the user's training games masked,
the full catalog ranked for every evaluated user. Rows: popularity, EASE (L2 weight tuned on a
tuning split carved from train), the seed's two-tower (its defaults), and the project's default
two-tower (`TrainConfig()`, epochs selected on a tuning split, then refit).

    .venv/bin/python benchmarks/quality.py [--out benchmarks/results/quality.json] [--quick]
"""

import argparse
import json
import time
from pathlib import Path

from datasets import Benchmark, steam, synthetic

from gamerec_assets.core.compute import configure_threads
from gamerec_assets.core.evaluation import (
    evaluate_ease,
    evaluate_popularity,
    evaluate_two_tower,
    tune_ease_l2,
)
from gamerec_assets.core.settings import SEED_MODEL, TrainConfig
from gamerec_assets.core.training.job import fit_two_tower

KS = (10, 20, 50)
COLUMNS = ["recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50", "mrr"]


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def run_benchmark(bench: Benchmark, default: TrainConfig) -> list[dict]:
    data, rows = bench.data, []
    popularity, seconds = timed(lambda: evaluate_popularity(data, KS))
    rows.append({"model": "popularity", **popularity, "fit_seconds": seconds})
    l2, tune_seconds = timed(lambda: tune_ease_l2(data, bench.split_strategy))
    ease, seconds = timed(lambda: evaluate_ease(data, l2, KS))
    if ease is not None:
        rows.append({"model": f"EASE (l2={l2:g})", **ease, "fit_seconds": tune_seconds + seconds})
    for name, config in [
        ("two-tower, seed defaults", SEED_MODEL),
        ("two-tower, project defaults", default),
    ]:
        fit = fit_two_tower(
            data.train,
            data.n_users,
            data.n_items,
            config,
            bench.split_strategy,
            log=lambda message: None,
            progress=False,
        )
        metrics = evaluate_two_tower(fit.final.model, config, data, KS)
        rows.append(
            {"model": name, **metrics, "fit_seconds": fit.seconds, "epochs": fit.final.best_epoch}
        )
    for row in rows:
        row["data"] = bench.name
        row["n_eval_users"] = data.val.height
    return rows


def print_table(rows: list[dict]) -> None:
    header = f"{'data':<30} {'model':<28}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'fit s':>8}"
    print(header)
    for row in rows:
        print(
            f"{row['data']:<30} {row['model']:<28}"
            + "".join(f"{row[c]:>10.4f}" for c in COLUMNS)
            + f"{row['fit_seconds']:>8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/quality.json")
    parser.add_argument("--quick", action="store_true", help="Steam-200k max_playtime only")
    args = parser.parse_args()
    configure_threads(None)
    default = TrainConfig()
    benches = [lambda: steam("max_playtime")]
    if not args.quick:
        benches += [lambda: steam("random"), lambda: synthetic("max_playtime")]
    rows = []
    for make in benches:
        rows += run_benchmark(make(), default)
        print_table(rows)
        print(flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
