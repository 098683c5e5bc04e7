"""Speed of every stage against the seed's approach, measured in the same run.

- training: seconds per epoch of the project's loop (batches sliced from a seeded permutation
  of index tensors; dense fused AdamW or SparseAdam on sparse gradients) against the seed's
  per-sample `Dataset` + `DataLoader` with dense Adam, on the seed's model (user-ID tower, dim
  64) at batch 1024 and 4096, on Steam-200k-sized and 10x-sized synthetic data; the FLOP floor
  of an epoch (forward and backward of the B x B logits) over this machine's measured rate for
  that matmul; and the project's default model, dense against sparse.
- evaluation: users per second of the vectorised, masked evaluator against the seed's per-row
  loop (argsort per user), which is timed on a sample of users and extrapolated.
- index: build time, batch and one-at-a-time queries per second and recall@20 against exact
  search for flat, HNSW and IVF (project default settings) at 5k, 100k and 1M games.
- graph: wall time and peak memory of `gamerec materialize --all` on the default data and on
  Steam-200k, in a fresh folder.

    .venv/bin/python benchmarks/throughput.py [--sections training evaluation index graph]

Prints each row as it is measured, then the table, and writes benchmarks/results/throughput.json
(rows of sections not run are kept from the previous file). Run it on an idle machine.
"""

import argparse
import json
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from datasets import STEAM_200K, synthetic
from scale_run import run_materialize
from torch.utils.data import DataLoader, Dataset

from gamerec_assets.core.compute import configure_threads
from gamerec_assets.core.index import build_index, search
from gamerec_assets.core.metrics import dot_product_scorer, evaluate_scorer
from gamerec_assets.core.model import TwoTower
from gamerec_assets.core.settings import SEED_MODEL, IndexSettings, TrainConfig
from gamerec_assets.core.training.loop import TrainingPairs, train_model

SEED_LOOP_SAMPLE_USERS = 500
INDEX_SIZES = (5_000, 100_000, 1_000_000)
INDEX_DIM = 64  # the scale run's dim; 1M x 256 HNSW would take most of an hour to build here
INDEX_KINDS = ("flat", "hnsw", "ivf")
INDEX_SEARCH_SETTINGS = {  # the project defaults first (efSearch 128, nprobe 32)
    "flat": [(None, None)],
    "hnsw": [("efSearch", 128), ("efSearch", 512)],
    "ivf": [("nprobe", 32), ("nprobe", 128)],
}
INDEX_K = 20
INDEX_BATCH_QUERIES = 10_000
INDEX_SINGLE_QUERIES = 1_000


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


def project_epoch_seconds(users, items, hours, n_users, n_items, config: TrainConfig) -> float:
    pairs = TrainingPairs(users, items, hours)
    result = train_model(pairs, n_users, n_items, config, log=lambda _: None, progress=False)
    return result.seconds / config.epochs


def matmul_flops_per_second(size: int, dim: int, repeats: int = 50) -> float:
    """Measured float32 rate of the B x D @ D x B product the loss is made of."""
    a, b = torch.randn(size, dim), torch.randn(dim, size)
    for _ in range(5):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size * size * dim * repeats / (time.perf_counter() - started)


def epoch_flops(n_pairs: int, batch: int, dim: int) -> float:
    """Forward B x B logits (2 B^2 D) and backward to both towers (4 B^2 D), per batch."""
    return (n_pairs / batch) * 6 * batch * batch * dim


TRAINING_DATA = [
    ("steam-200k-sized synthetic", dict(n_users=12_400, n_games=5_200, n_interactions=129_000)),
    ("10x synthetic", dict(n_users=124_000, n_games=52_000, n_interactions=1_290_000)),
]


def training_rows() -> list[dict]:
    """Seed loop vs the project loop (dense fused AdamW, and sparse SparseAdam) on the seed's
    model at batch 1024 and 4096; the project's default model, dense vs sparse."""
    project_default = replace(TrainConfig(), epochs=1, select_epochs=False)
    rows = []
    for label, sizes in TRAINING_DATA:
        data = synthetic(**sizes).data
        frame = data.train
        users, items = frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy()
        hours = frame["play_time_hours"].to_numpy()
        shape = (users, items, hours, data.n_users, data.n_items)
        for batch in (1024, 4096):
            config = replace(SEED_MODEL, epochs=1, batch_size=batch)
            floor = epoch_flops(len(users), batch, config.embed_dim) / matmul_flops_per_second(
                batch, config.embed_dim
            )
            seed = seed_epoch_seconds(users, items, data.n_users, data.n_items, config)
            for optimizer, sparse in (("dense fused AdamW", False), ("sparse SparseAdam", True)):
                project = project_epoch_seconds(*shape, replace(config, sparse_gradients=sparse))
                rows.append(
                    {
                        "stage": f"training epoch, seed model (batch {batch}, dim 64)",
                        "data": f"{label}: {len(users):,} pairs",
                        "variant": optimizer,
                        "project_s": project,
                        "seed_s": seed,
                        "speedup": seed / project,
                        "floor_s": floor,
                        "times_floor": project / floor,
                        "project_pairs_per_s": len(users) / project,
                    }
                )
                print_row(rows[-1])
        dense = project_epoch_seconds(*shape, replace(project_default, sparse_gradients=False))
        sparse = project_epoch_seconds(*shape, project_default)
        for optimizer, seconds in (("dense fused AdamW", dense), ("sparse SparseAdam", sparse)):
            rows.append(
                {
                    "stage": "training epoch, project default model (batch 1024, dim 256)",
                    "data": f"{label}: {len(users):,} pairs",
                    "variant": optimizer,
                    "project_s": seconds,
                    "project_pairs_per_s": len(users) / seconds,
                    "sparse_speedup": dense / sparse,
                }
            )
            print_row(rows[-1])
    return rows


def best_of(repeats: int, run) -> float:
    """Fastest of `repeats` timed calls after one untimed warm-up call."""
    run()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


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
        ("40k users x 5k games", dict(n_users=40_000, n_games=5_000, n_interactions=600_000)),
        ("200k users x 50k games", dict(n_users=200_000, n_games=50_000, n_interactions=3_000_000)),
    ]:
        data = synthetic(**sizes).data
        torch.manual_seed(0)
        user_vectors = torch.randn(data.n_users, 64)
        item_vectors = torch.randn(data.n_items, 64)
        val_users, val_items = data.val["user_idx"].to_numpy(), data.val["item_idx"].to_numpy()
        train_items = data.train_items  # built once per split, as the asset does
        repeats = 3 if len(val_users) * data.n_items < 10**9 else 1
        project = best_of(
            repeats,
            partial(
                evaluate_scorer,
                dot_product_scorer(user_vectors, item_vectors),
                data.n_items,
                train_items,
                val_users,
                val_items,
            ),
        )
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
                "scores_per_s": len(val_users) * data.n_items / project,
                "note": f"seed loop timed on {SEED_LOOP_SAMPLE_USERS} users, extrapolated",
            }
        )
        print_row(rows[-1])
    return rows


def trained_style_vectors(n_items: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors clustered like a trained item table: a few hundred genre directions, each
    game a noisy mix of one or two of them (the default model L2-normalises its vectors)."""
    rng = np.random.default_rng(seed)
    n_genres = max(8, int(np.sqrt(n_items)))
    genres = rng.standard_normal((n_genres, dim)).astype(np.float32)
    primary = rng.integers(n_genres, size=n_items)
    secondary = rng.integers(n_genres, size=n_items)
    vectors = genres[primary] + 0.5 * genres[secondary]
    vectors += 0.6 * rng.standard_normal((n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def user_style_queries(items: np.ndarray, n_queries: int, seed: int = 1) -> np.ndarray:
    """Queries like a history-tower user vector: the normalised mean of a few games' vectors."""
    rng = np.random.default_rng(seed)
    owned = rng.integers(len(items), size=(n_queries, 5))
    queries = items[owned].mean(axis=1)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def index_rows(sizes=INDEX_SIZES, dim: int = INDEX_DIM) -> list[dict]:
    """Build time, batch and one-at-a-time queries per second, recall@20 against exact, for
    each kind at the project's default settings, then at wider search settings (HNSW efSearch,
    IVF nprobe: query-time only, no rebuild)."""
    rows = []
    for n_items in sizes:
        items = trained_style_vectors(n_items, dim)
        queries = user_style_queries(items, INDEX_BATCH_QUERIES)
        exact = build_index(items, IndexSettings(kind="flat"))
        _, truth = search(exact, queries, INDEX_K)
        for kind in INDEX_KINDS:
            started = time.perf_counter()
            index = build_index(items, IndexSettings(kind=kind))
            build_seconds = time.perf_counter() - started
            for setting, value in INDEX_SEARCH_SETTINGS[kind]:
                if setting == "efSearch":
                    index.hnsw.efSearch = value
                elif setting == "nprobe":
                    index.nprobe = value
                row = {
                    "stage": f"index {kind}",
                    "data": f"{n_items:,} games x dim {dim}",
                    "variant": f"{setting}={value}" if setting else "exact",
                    "build_s": build_seconds,
                    **query_speed_and_recall(index, queries, truth),
                }
                rows.append(row)
                print_row(row)
    return rows


def query_speed_and_recall(index, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    started = time.perf_counter()
    _, found = search(index, queries, INDEX_K)
    batch_qps = len(queries) / (time.perf_counter() - started)
    single = queries[:INDEX_SINGLE_QUERIES]
    started = time.perf_counter()
    for query in single:
        search(index, query[None, :], INDEX_K)
    single_qps = len(single) / (time.perf_counter() - started)
    hits = sum(len(np.intersect1d(t, f)) for t, f in zip(truth, found, strict=True))
    return {
        "batch_qps": batch_qps,
        "single_qps": single_qps,
        f"recall@{INDEX_K}": hits / truth.size,
    }


def graph_rows() -> list[dict]:
    """Wall time and peak memory of `gamerec materialize --all` on the default data and on
    Steam-200k, each in a fresh working folder (project defaults, nothing cached)."""
    rows = []
    for label, settings in [
        ("default synthetic (10k users x 2k games)", {"GAMEREC_SOURCE": "synthetic"}),
        (
            "Steam-200k",
            {"GAMEREC_SOURCE": "steam200k", "GAMEREC_SOURCE_PATH": str(STEAM_200K)},
        ),
    ]:
        with tempfile.TemporaryDirectory(prefix="gamerec-graph-") as workdir:
            measured = run_materialize(Path(workdir), settings)
        rows.append({"stage": "whole graph, first run", "data": label, **measured})
        print_row(rows[-1])
    return rows


def print_row(row: dict) -> None:
    numbers = {
        "project_s": "project {:.2f} s",
        "seed_s": "seed {:.2f} s",
        "speedup": "{:.1f}x",
        "floor_s": "floor {:.2f} s",
        "times_floor": "{:.2f}x floor",
        "sparse_speedup": "sparse/dense {:.2f}x",
        "project_users_per_s": "{:,.0f} users/s",
        "scores_per_s": "{:,.0f} scores/s",
        "build_s": "build {:.2f} s",
        "batch_qps": "batch {:,.0f} q/s",
        "single_qps": "single {:,.0f} q/s",
        "recall@20": "recall@20 {:.4f}",
        "wall_seconds": "wall {:.1f} s",
        "peak_rss_gib": "peak {:.2f} GiB",
    }
    label = " | ".join(str(row[key]) for key in ("stage", "data", "variant") if key in row)
    values = "  ".join(fmt.format(row[key]) for key, fmt in numbers.items() if key in row)
    print(f"{label}: {values}", flush=True)


SECTIONS = {
    "training": training_rows,
    "evaluation": evaluation_rows,
    "index": index_rows,
    "graph": graph_rows,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=list(SECTIONS),
        default=list(SECTIONS),
        help="parts to run (default: all); rows of the others are kept from --out",
    )
    args = parser.parse_args()
    threads = configure_threads(None)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    sections = previous.get("sections", {})
    for name in args.sections:
        sections[name] = SECTIONS[name]()
    print(f"\n{threads} threads")
    for name in SECTIONS:
        for row in sections.get(name, []):
            print_row(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": threads, "sections": sections}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
