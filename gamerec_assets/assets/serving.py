"""Stage 5, serving: the FAISS index over the item embeddings for top-K retrieval."""

import dagster as dg
import numpy as np
import polars as pl

from gamerec_assets.assets.common import content_version
from gamerec_assets.core.index import build_exact_index, read_index, search, write_index
from gamerec_assets.resources import PathsResource, TrainingResource

FAISS_INDEX_MATCHES_CATALOG = "faiss_index_matches_catalog"
FAISS_INDEX_MATCHES_EXACT_SEARCH = "faiss_index_matches_exact_search"
EXACT_SEARCH_SAMPLE = 256
EXACT_SEARCH_K = 20


@dg.asset(
    deps=["item_embeddings"],
    group_name="serving",
    kinds={"faiss"},
    description="index.faiss: exact inner-product index over item_emb.npy; FAISS id = item_idx.",
)
def faiss_index(paths: PathsResource) -> dg.MaterializeResult:
    vectors = np.load(paths.item_embeddings)
    index = build_exact_index(vectors)
    write_index(index, paths.faiss_index)
    return dg.MaterializeResult(
        metadata={
            "index_type": type(index).__name__,
            "ntotal": int(index.ntotal),
            "dim": int(index.d),
            "bytes": paths.faiss_index.stat().st_size,
            "path": dg.MetadataValue.path(str(paths.faiss_index)),
        },
        data_version=content_version(paths.faiss_index),
    )


@dg.asset_check(
    asset=faiss_index,
    name=FAISS_INDEX_MATCHES_CATALOG,
    blocking=True,
    description="The index holds one vector per catalog game, of dimension EMBED_DIM.",
)
def faiss_index_matches_catalog(
    paths: PathsResource, training: TrainingResource
) -> dg.AssetCheckResult:
    index = read_index(paths.faiss_index)
    n_games = pl.scan_parquet(paths.catalog).select(pl.len()).collect().item()
    return dg.AssetCheckResult(
        passed=index.ntotal == n_games and index.d == training.embed_dim,
        metadata={
            "ntotal": int(index.ntotal),
            "catalog_games": n_games,
            "dim": int(index.d),
            "embed_dim": training.embed_dim,
        },
    )


@dg.asset_check(
    asset=faiss_index,
    name=FAISS_INDEX_MATCHES_EXACT_SEARCH,
    description=(
        f"Searching with a sample of the embeddings' own rows returns the same top-{EXACT_SEARCH_K} "
        "as a brute-force numpy inner product."
    ),
)
def faiss_index_matches_exact_search(paths: PathsResource) -> dg.AssetCheckResult:
    index = read_index(paths.faiss_index)
    vectors = np.load(paths.item_embeddings)
    rows = np.random.default_rng(0).choice(
        len(vectors), size=min(EXACT_SEARCH_SAMPLE, len(vectors)), replace=False
    )
    k = min(EXACT_SEARCH_K, len(vectors))
    _, found = search(index, vectors[rows], k)
    exact_scores = vectors[rows] @ vectors.T
    exact_top = -np.sort(-exact_scores, axis=1)[:, :k]
    found_scores = np.take_along_axis(exact_scores, found, axis=1)
    # Equal scores may come back in either order, so compare each rank's score, not the ids.
    agree = np.isclose(found_scores, exact_top, rtol=1e-4, atol=1e-6)
    return dg.AssetCheckResult(
        passed=bool(agree.all()),
        metadata={"sampled_queries": len(rows), "k": k, "score_agreement": float(agree.mean())},
    )
