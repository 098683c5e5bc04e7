"""Data sets the benchmarks run on, prepared with the project's own code (no Dagster)."""

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from gamerec_assets.core.evaluation import EvaluationData
from gamerec_assets.core.features import index_interactions
from gamerec_assets.core.sources import read_steam200k
from gamerec_assets.core.splits import leave_one_out_split
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions

STEAM_200K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "steam-200k.csv.gz"


@dataclass(frozen=True)
class Benchmark:
    name: str
    data: EvaluationData
    split_strategy: str


def prepare(name: str, raw: pl.DataFrame, split_strategy: str, seed: int = 0) -> Benchmark:
    indexed = index_interactions(raw)
    split = leave_one_out_split(indexed.interactions, split_strategy, seed)
    data = EvaluationData(split.train, split.val, indexed.n_users, indexed.n_items)
    return Benchmark(name, data, split_strategy)


def steam(split_strategy: str = "max_playtime") -> Benchmark:
    if not STEAM_200K.exists():
        raise SystemExit(f"Steam-200k not found at {STEAM_200K}")
    return prepare(f"steam-200k/{split_strategy}", read_steam200k(STEAM_200K).frame, split_strategy)


def synthetic(split_strategy: str = "max_playtime", **sizes: int) -> Benchmark:
    spec = SyntheticSpec(**sizes)
    frame = generate_synthetic_interactions(spec)
    label = f"synthetic {spec.n_users}x{spec.n_games}/{split_strategy}"
    return prepare(label, frame, split_strategy)
