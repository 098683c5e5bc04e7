"""Retrieval quality of the project's default model beside the baselines, over seeds.

For each data set, the evaluation split the graph would make (leave-one-out, or Gowalla's
official test set through the `predefined` split), the full catalog ranked for every evaluated
user with their training games masked. Rows: popularity; EASE and implicit ALS, their weights
tuned on the tuning split (as the graph's eval_metrics does); the seed's two-tower; and the
project's default two-tower (`TrainConfig()`, its length chosen on the tuning split, then
refit), and the graph's model: the automatic search (`core.tuning`, `Tuning()`'s budget) on
the tuning split, then training with what it chose. Models with randomness run once per
seed: the table gives mean and standard deviation over seeds, and the seconds spent tuning
and fitting. For Gowalla, the published results on the same split are printed beside.

    .venv/bin/python benchmarks/quality.py [--data steam:max_playtime ...] [--seeds 3] \
        [--model popularity --model EASE --model ALS --model seed --model defaults \
         --model searched] [--set history_mlp=512,temperature=0.1]

`--set` changes the two-tower defaults (the `defaults` and `searched` rows; the search then
keeps those settings fixed), to measure a candidate configuration on the evaluation hold-out
once the tuning split (benchmarks/tuning_split.py) has chosen it.
"""

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from datasets import GOWALLA_PUBLISHED, Benchmark, load
from tuning_split import parse_variant  # benchmarks/tuning_split.py, beside this script

from gamerec_assets.core.baselines import EASE_MAX_ITEMS
from gamerec_assets.core.compute import configure_threads
from gamerec_assets.core.evaluation import (
    evaluate_als,
    evaluate_ease,
    evaluate_popularity,
    evaluate_two_tower,
    tune_als,
    tune_ease_l2,
)
from gamerec_assets.core.settings import SEED_MODEL, TrainConfig, Tuning
from gamerec_assets.core.training.job import fit_two_tower
from gamerec_assets.core.tuning import reusable_length, search

KS = (10, 20, 50)
COLUMNS = ["recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50", "mrr"]
DEFAULT_DATA = ["steam:max_playtime", "steam:random", "synthetic:max_playtime", "gowalla"]


def timed(fn: Callable):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def two_tower(
    bench: Benchmark,
    config: TrainConfig,
    seed: int,
    searched: bool = False,
    fixed: frozenset[str] = frozenset(),
) -> tuple[dict, float, float]:
    """The model's metrics, its fit seconds and its tuning seconds (the selection phase, and
    the search when `searched`), as the graph trains it."""
    data, config = bench.data, replace(config, seed=seed)
    known, search_seconds, chosen = None, 0.0, {}
    if searched:
        with tempfile.TemporaryDirectory() as folder:
            result, search_seconds = timed(
                lambda: search(
                    data.train,
                    data.n_users,
                    data.n_items,
                    config,
                    Tuning(),
                    bench.split_strategy,
                    data.val,
                    Path(folder) / "study.journal",
                    "quality",
                    fixed=fixed,
                    log=print,
                )
            )
        if result is not None:
            config, chosen = result.apply(config), dict(result.params)
            known = reusable_length(result, config)
    fit = fit_two_tower(
        data.train,
        data.n_users,
        data.n_items,
        config,
        bench.split_strategy,
        log=lambda _: None,
        progress=False,
        heldout=data.val,
        known_length=known,
    )
    tuning = fit.tuning.seconds if fit.tuning and fit.tuning is not fit.final else 0.0
    metrics = evaluate_two_tower(fit.final.model, config, data, KS)
    return {**metrics, **chosen}, fit.final.seconds, tuning + search_seconds


def als(bench: Benchmark, seed: int) -> tuple[dict, float, float]:
    data = bench.data
    chosen, tune_seconds = timed(lambda: tune_als(data, bench.split_strategy, seed))
    metrics, fit_seconds = timed(lambda: evaluate_als(data, seed=seed, ks=KS, **chosen))
    return {**metrics, **chosen}, fit_seconds, tune_seconds


def summarize(name: str, bench: Benchmark, runs: list[tuple[dict, float, float]]) -> dict:
    metrics = {column: [run[0][column] for run in runs] for column in COLUMNS}
    return {
        "data": bench.name,
        "model": name,
        "seeds": len(runs),
        **{column: float(np.mean(values)) for column, values in metrics.items()},
        **{
            f"{column}_sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            for column, values in metrics.items()
        },
        "fit_seconds": float(np.mean([run[1] for run in runs])),
        "tuning_seconds": float(np.mean([run[2] for run in runs])),
        "settings": {k: v for k, v in runs[0][0].items() if k not in COLUMNS and "@" not in k},
        "n_eval_users": len(bench.data.eval_users),
    }


MODELS = ("popularity", "EASE", "ALS", "seed", "defaults", "searched")


def run_benchmark(
    bench: Benchmark, seeds: int, models: tuple[str, ...] = MODELS, changes: dict | None = None
) -> list[dict]:
    data, rows = bench.data, []
    if "popularity" in models:
        rows.append(summarize("popularity", bench, [(evaluate_popularity(data, KS), 0.0, 0.0)]))
    if "EASE" in models and data.n_items <= EASE_MAX_ITEMS:
        l2, tune_seconds = timed(lambda: tune_ease_l2(data, bench.split_strategy, 0))
        metrics, fit_seconds = timed(lambda: evaluate_ease(data, l2, KS))
        rows.append(summarize("EASE", bench, [({**metrics, "l2": l2}, fit_seconds, tune_seconds)]))
    if "ALS" in models:
        rows.append(summarize("ALS", bench, [als(bench, seed) for seed in range(seeds)]))
    changed = "".join(f" {name}={value}" for name, value in (changes or {}).items())
    defaults = replace(TrainConfig(), **(changes or {}))
    two_towers = {
        "seed": ("two-tower, seed's model", SEED_MODEL, False),
        "defaults": (f"two-tower, defaults{changed}", defaults, False),
        "searched": (f"two-tower, searched{changed}", defaults, True),
    }
    for model in (m for m in models if m in two_towers):
        name, config, searched = two_towers[model]
        fixed = frozenset(changes or {})
        runs = [two_tower(bench, config, seed, searched, fixed) for seed in range(seeds)]
        rows.append(summarize(name, bench, runs))
    return rows


def print_rows(rows: list[dict]) -> None:
    header = f"{'data':<32} {'model':<24} {'R@20':>16} {'NDCG@20':>16} {'MRR':>8}"
    print(f"{header} {'fit s':>7} {'tune s':>7}")
    for row in rows:
        print(
            f"{row['data']:<32} {row['model']:<24} "
            f"{row['recall@20']:>8.4f} ± {row['recall@20_sd']:.4f} "
            f"{row['ndcg@20']:>8.4f} ± {row['ndcg@20_sd']:.4f} {row['mrr']:>8.4f} "
            f"{row['fit_seconds']:>7.1f} {row['tuning_seconds']:>7.1f}",
            flush=True,
        )
        if row["data"].startswith("gowalla") and row["model"] == "two-tower, searched":
            for name, (recall, ndcg) in GOWALLA_PUBLISHED.items():
                print(f"{'  published':<32} {name:<24} {recall:>8.4f}{'':>9} {ndcg:>8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", help=f"default: {' '.join(DEFAULT_DATA)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", action="append", choices=MODELS, help="default: all")
    parser.add_argument("--out", default="benchmarks/results/quality.json")
    parser.add_argument("--set", default="base", help="two-tower settings: name=value[,...]")
    args = parser.parse_args()
    configure_threads(None)
    rows = []
    for name in args.data or DEFAULT_DATA:
        models = tuple(args.model or MODELS)
        rows += run_benchmark(load(name), args.seeds, models, parse_variant(args.set))
        print_rows(rows)
        print(flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
