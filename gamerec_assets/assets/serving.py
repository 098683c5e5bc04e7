"""Stage 5, serving: the FAISS index over the item embeddings for top-K retrieval.

The index has settings of its own (`IndexResource`), so changing them rebuilds only this
asset, from the stored `item_emb.npy`. `index.json` beside the index records the settings a
reader needs (the metric decides whether queries are L2-normalised) and the SHA-256 of the
embeddings it indexes. Publishing the serving set is the next step (`publishing`).
"""

import json
import time

import dagster as dg
import numpy as np
import polars as pl

from gamerec_assets.assets.common import content_version
from gamerec_assets.core.index import (
    build_index,
    prepare_vectors,
    read_index,
    recall_against_exact,
    search,
    write_index,
)
from gamerec_assets.core.io import file_sha256, write_json_atomic
from gamerec_assets.resources import IndexResource, PathsResource
from gamerec_assets.versioning import effective_version

FAISS_INDEX_MATCHES_CATALOG = "faiss_index_matches_catalog"
FAISS_INDEX_MATCHES_EXACT_SEARCH = "faiss_index_matches_exact_search"
RECALL_SAMPLE = 256
RECALL_K = 20
MIN_APPROXIMATE_RECALL = 0.95


def _sample_rows(n_items: int) -> np.ndarray:
    return np.random.default_rng(0).choice(n_items, size=min(RECALL_SAMPLE, n_items), replace=False)


@dg.asset(
    deps=["item_embeddings"],
    group_name="serving",
    kinds={"faiss"},
    description=(
        "index.faiss over item_emb.npy (FAISS id = item_idx): exact `flat`, `hnsw` or `ivf`, "
        "inner product or cosine (GAMEREC_INDEX, GAMEREC_INDEX_METRIC); index.json beside it."
    ),
)
def faiss_index(
    context: dg.AssetExecutionContext, index: IndexResource, paths: PathsResource
) -> dg.MaterializeResult:
    settings, files = index.settings(), paths.settings()
    vectors = np.load(files.item_embeddings)
    started = time.perf_counter()
    built = build_index(vectors, settings)
    build_seconds = time.perf_counter() - started
    queries = vectors[_sample_rows(len(vectors))]
    recall = recall_against_exact(built, vectors, queries, RECALL_K, settings.metric)
    write_index(built, files.faiss_index)
    write_json_atomic(
        files.faiss_index_settings,
        {
            **settings.relevant_fields(),
            "ntotal": int(built.ntotal),
            "dim": int(built.d),
            f"recall@{RECALL_K}_vs_exact": recall,
            "recall_queries": len(queries),
            "item_embeddings_sha256": file_sha256(files.item_embeddings),
            "index_sha256": file_sha256(files.faiss_index),
        },
    )
    context.log.info(
        f"{type(built).__name__} over {built.ntotal} games in {build_seconds:.2f}s, "
        f"recall@{RECALL_K} against exact {recall:.4f}"
    )
    version = effective_version(context, "faiss_index", {"index": index})
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            "index_type": type(built).__name__,
            "settings": dg.MetadataValue.json(settings.relevant_fields()),
            "ntotal": int(built.ntotal),
            "dim": int(built.d),
            "bytes": files.faiss_index.stat().st_size,
            "build_seconds": round(build_seconds, 4),
            f"recall@{RECALL_K}_vs_exact": recall,
            "path": dg.MetadataValue.path(str(files.faiss_index)),
        },
        data_version=content_version(files.faiss_index, files.faiss_index_settings),
    )


@dg.asset_check(
    asset=faiss_index,
    name=FAISS_INDEX_MATCHES_CATALOG,
    blocking=True,
    description=(
        "The index holds one vector per catalog game, of the dimension of the embeddings "
        "(EMBED_DIM of the model that made them)."
    ),
)
def faiss_index_matches_catalog(paths: PathsResource) -> dg.AssetCheckResult:
    files = paths.settings()
    built = read_index(files.faiss_index)
    n_games = pl.scan_parquet(files.catalog).select(pl.len()).collect().item()
    embed_dim = int(np.load(files.item_embeddings, mmap_mode="r").shape[1])
    return dg.AssetCheckResult(
        passed=built.ntotal == n_games and built.d == embed_dim,
        metadata={
            "ntotal": int(built.ntotal),
            "catalog_games": n_games,
            "dim": int(built.d),
            "embed_dim": embed_dim,
        },
    )


@dg.asset_check(
    asset=faiss_index,
    name=FAISS_INDEX_MATCHES_EXACT_SEARCH,
    description=(
        f"Top-{RECALL_K} for a sample of the embeddings' own rows: a flat index returns the "
        "scores of a brute-force numpy search exactly (ERROR); hnsw/ivf reach recall "
        f">= {MIN_APPROXIMATE_RECALL} against exact search (WARN)."
    ),
)
def faiss_index_matches_exact_search(paths: PathsResource) -> dg.AssetCheckResult:
    files = paths.settings()
    built = read_index(files.faiss_index)
    settings = json.loads(files.faiss_index_settings.read_text(encoding="utf-8"))
    vectors = np.load(files.item_embeddings)
    queries = vectors[_sample_rows(len(vectors))]
    k = min(RECALL_K, len(vectors))
    if settings["kind"] != "flat":
        recall = recall_against_exact(built, vectors, queries, k, settings["metric"])
        return dg.AssetCheckResult(
            passed=recall >= MIN_APPROXIMATE_RECALL,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                f"recall@{k}": recall,
                "sampled_queries": len(queries),
                "kind": settings["kind"],
            },
        )
    found_scores, _ = search(built, queries, k, settings["metric"])
    items, normalized_queries = (
        prepare_vectors(vectors, settings["metric"]),
        prepare_vectors(queries, settings["metric"]),
    )
    exact_top = -np.sort(-(normalized_queries @ items.T), axis=1)[:, :k]
    # Equal scores may come back in either order, so compare each rank's score, not the ids.
    agree = np.isclose(found_scores, exact_top, rtol=1e-4, atol=1e-6)
    return dg.AssetCheckResult(
        passed=bool(agree.all()),
        metadata={"sampled_queries": len(queries), "k": k, "score_agreement": float(agree.mean())},
    )
