"""Data sets the benchmarks run on, prepared with the project's own code (no Dagster): the same
readers, indices and splits the graph uses."""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from gamerec_assets.core.evaluation import EvaluationData
from gamerec_assets.core.features import index_interactions
from gamerec_assets.core.settings import Source, Split
from gamerec_assets.core.sources import load_source, load_test_pairs
from gamerec_assets.core.splits import make_split
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STEAM_200K = SHARED_DATA / "steam-200k.csv.gz"
GOWALLA = SHARED_DATA / "gowalla"
GOWALLA_PUBLISHED = {  # Recall@20, NDCG@20 on this split, as ../shared/data/README.md quotes them
    "EASE": (0.1765, 0.1467),
    "LightGCN": (0.1830, 0.1554),
    "UltraGCN": (0.1862, 0.1580),
    "SimpleX": (0.1872, 0.1557),
}


@dataclass(frozen=True)
class Benchmark:
    name: str
    data: EvaluationData
    split_strategy: str


def prepare(name: str, source: Source, split: Split) -> Benchmark:
    """A source read, indexed and split as the graph's ingestion and split assets do."""
    indexed = index_interactions(load_source(source).frame)
    test = load_test_pairs(source, indexed)
    divided = make_split(indexed.interactions, split, test)
    data = EvaluationData(divided.train, divided.val, indexed.n_users, indexed.n_items)
    return Benchmark(name, data, split.strategy)


def require(path: Path) -> None:
    if not path.exists():
        raise SystemExit(f"benchmark data not found at {path}")


def steam(split_strategy: str = "max_playtime") -> Benchmark:
    require(STEAM_200K)
    source = Source(kind="steam200k", path=str(STEAM_200K))
    return prepare(f"steam-200k/{split_strategy}", source, Split(strategy=split_strategy))


def gowalla(split_strategy: str = "predefined") -> Benchmark:
    """The NGCF/LightGCN train/test split of Gowalla check-ins (a location is the 'game')."""
    require(GOWALLA / "train.csv.gz")
    source = Source(
        kind="interactions",
        path=str(GOWALLA / "train.csv.gz"),
        test_path=str(GOWALLA / "test.csv.gz"),
    )
    return prepare("gowalla/predefined", source, Split(strategy="predefined"))


def synthetic(split_strategy: str = "max_playtime", **sizes: int) -> Benchmark:
    spec = SyntheticSpec(**sizes)
    label = f"synthetic {spec.n_users}x{spec.n_games}/{split_strategy}"
    indexed = index_interactions(generate_synthetic_interactions(spec))
    divided = make_split(indexed.interactions, Split(strategy=split_strategy))
    data = EvaluationData(divided.train, divided.val, indexed.n_users, indexed.n_items)
    return Benchmark(label, data, split_strategy)


@cache
def load(name: str) -> Benchmark:
    """A benchmark by name: `steam:<strategy>`, `synthetic:<strategy>` or `gowalla`."""
    kind, _, strategy = name.partition(":")
    makers = {"steam": steam, "synthetic": synthetic, "gowalla": gowalla}
    if kind not in makers:
        raise SystemExit(f"unknown data set {name!r}: expected one of {', '.join(makers)}")
    return makers[kind](strategy or ("predefined" if kind == "gowalla" else "max_playtime"))
