"""Compare model variants on the tuning split only (never the evaluation hold-out), over seeds.

For each data set, variant and seed: the default model with the variant's changes trains on
the training data minus a tuning split carved from it (the same strategy as the evaluation
split), scored on that tuning split after every period; the row keeps its best tuning NDCG,
the best epoch and the seconds it took. The table gives mean and spread (standard deviation
over seeds) per variant. This is how the project's defaults are chosen.

    .venv/bin/python benchmarks/tuning_split.py --data steam:max_playtime \\
        --variant base --variant history_sample=20 --variant history_sample=0 --seeds 3

The variant `ease` is the reference: EASE, its L2 weight searched on the same tuning split.
"""

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
from datasets import load  # benchmarks/datasets.py, beside this script

from gamerec_assets.core.baselines import fit_ease
from gamerec_assets.core.compute import configure_threads
from gamerec_assets.core.evaluation import EASE_L2_GRID, search_grid, tuning_data
from gamerec_assets.core.settings import TrainConfig, Tuning
from gamerec_assets.core.training.job import fit_two_tower


def parse_variant(text: str) -> dict[str, object]:
    """`base`, or `name=value[,name=value]` over TrainConfig fields, typed by the field."""
    if text == "base":
        return {}
    types = TrainConfig.field_types()
    changes = {}
    for part in text.split(","):
        name, value = part.split("=", 1)
        kind = types[name]
        changes[name] = value.lower() in ("1", "true") if kind is bool else kind(value)
    return changes


def run(data_name: str, changes: dict, seed: int, base: TrainConfig) -> dict:
    bench = load(data_name)
    config = replace(base, **changes, seed=seed, select_epochs=True, refit=False)
    started = time.perf_counter()
    fit = fit_two_tower(
        bench.data.train,
        bench.data.n_users,
        bench.data.n_items,
        config,
        bench.split_strategy,
        log=lambda _: None,
        progress=False,
        tuning=Tuning(),
        heldout=bench.data.val,
    )
    best = int(np.argmax(fit.tuning.tuning_ndcg))
    return {
        "tuning_ndcg": fit.tuning.tuning_ndcg[best],
        "tuning_ndcg_error": fit.tuning.tuning_ndcg_error[best],
        "best_epoch": fit.tuning.best_epoch,
        "seconds": time.perf_counter() - started,
    }


def run_ease(data_name: str, seed: int) -> dict:
    """The reference: EASE with its L2 weight searched on the same tuning split."""
    bench = load(data_name)
    started = time.perf_counter()
    tuning = Tuning()
    held = tuning_data(bench.data, bench.split_strategy, seed, tuning)
    ndcg = f"ndcg@{tuning.k}"

    def score(l2: float) -> float:
        return held.metrics(fit_ease(held.train_items, held.n_items, l2).scores, (tuning.k,))[ndcg]

    best, scores = search_grid(score, EASE_L2_GRID)
    return {
        "tuning_ndcg": scores[best],
        "l2": best,
        "best_epoch": 0.0,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="e.g. steam:random")
    parser.add_argument("--variant", action="append", required=True, help="base | name=value")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/tuning_split.json")
    args = parser.parse_args()
    configure_threads(None)
    names = {item.name for item in fields(TrainConfig)}
    rows = []
    print(f"{'data':<22} {'variant':<28} {'tuning NDCG (mean ± sd)':>24} {'epoch':>6} {'s':>6}")
    for data_name in args.data:
        for variant in args.variant:
            if variant == "ease":
                runs = [run_ease(data_name, seed) for seed in range(args.seeds)]
            else:
                changes = parse_variant(variant)
                assert set(changes) <= names
                runs = [run(data_name, changes, seed, TrainConfig()) for seed in range(args.seeds)]
            scores = np.array([r["tuning_ndcg"] for r in runs])
            row = {
                "data": data_name,
                "variant": variant,
                "runs": runs,
                "mean": float(scores.mean()),
                "sd": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            }
            rows.append(row)
            epochs = np.mean([r["best_epoch"] for r in runs])
            seconds = np.mean([r["seconds"] for r in runs])
            print(
                f"{data_name:<22} {variant:<28} {row['mean']:>15.4f} ± {row['sd']:.4f} "
                f"{epochs:>6.1f} {seconds:>6.1f}",
                flush=True,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
