"""Stage 5, serving: the FAISS index over the item embeddings for top-K retrieval.

The index has settings of its own (`IndexResource`), so changing them rebuilds only this
asset, from the stored `item_emb.npy`. `index.json` beside the index records the settings a
reader needs (the metric decides whether queries are L2-normalised) and the SHA-256 of the
embeddings it indexes. Being the last step, it also publishes: it checks that the staged files
form one consistent set whose model passed the popularity gate, then copies them into
ARTIFACTS_DIR with manifest.json (see `core.publish`).
"""

import json
import time

import dagster as dg
import numpy as np
import polars as pl

from gamerec_assets.assets.common import content_version, markdown_table
from gamerec_assets.assets.evaluation import MODEL_BEATS_POPULARITY, popularity_gate
from gamerec_assets.core.index import (
    build_index,
    prepare_vectors,
    read_index,
    recall_against_exact,
    search,
    write_index,
)
from gamerec_assets.core.io import file_sha256, write_json_atomic
from gamerec_assets.core.publish import (
    INDEX_FILE,
    MANIFEST_FILE,
    ArtifactSetError,
    publish_artifacts,
    staged_set_lineage,
)
from gamerec_assets.core.recommend import Recommender, sample_recommendations
from gamerec_assets.resources import IndexResource, PathsResource
from gamerec_assets.versioning import CODE_VERSION_TAG, effective_version

FAISS_INDEX_MATCHES_CATALOG = "faiss_index_matches_catalog"
FAISS_INDEX_MATCHES_EXACT_SEARCH = "faiss_index_matches_exact_search"
RECALL_SAMPLE = 256
RECALL_K = 20
MIN_APPROXIMATE_RECALL = 0.95


def _sample_rows(n_items: int) -> np.ndarray:
    return np.random.default_rng(0).choice(n_items, size=min(RECALL_SAMPLE, n_items), replace=False)


@dg.asset(
    # eval_metrics is a dependency so that its blocking check (the model must beat
    # popularity) keeps a worse-than-popularity model out of the index.
    deps=["item_embeddings", "eval_metrics"],
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
    settings = index.index_settings()
    vectors = np.load(paths.item_embeddings)
    started = time.perf_counter()
    built = build_index(vectors, settings)
    build_seconds = time.perf_counter() - started
    queries = vectors[_sample_rows(len(vectors))]
    recall = recall_against_exact(built, vectors, queries, RECALL_K, settings.metric)
    write_index(built, paths.faiss_index)
    write_json_atomic(
        paths.faiss_index_settings,
        {
            **settings.relevant_fields(),
            "ntotal": int(built.ntotal),
            "dim": int(built.d),
            f"recall@{RECALL_K}_vs_exact": recall,
            "recall_queries": len(queries),
            "item_embeddings_sha256": file_sha256(paths.item_embeddings),
        },
    )
    context.log.info(
        f"{type(built).__name__} over {built.ntotal} games in {build_seconds:.2f}s, "
        f"recall@{RECALL_K} against exact {recall:.4f}"
    )
    version = effective_version(context, "faiss_index", {"index": index})
    try:
        staged = staged_set_lineage(paths.staging)
    except ArtifactSetError as error:
        raise dg.Failure(f"not publishing: {error}") from error
    passed, why_not, _ = popularity_gate(json.loads(paths.metrics.read_text(encoding="utf-8")))
    if not passed:  # the blocking check stops a full run; this stops an index-only one
        raise dg.Failure(
            f"not publishing: the staged model in {paths.staging} fails "
            f"{MODEL_BEATS_POPULARITY} ({why_not}); the published set stays as it was"
        )
    manifest = publish_artifacts(
        paths.staging,
        paths.artifacts_dir,
        staged,
        run_id=context.run.run_id,
        config_fingerprint=version["metadata"]["config_fingerprint"],
        code_version=version["tags"][CODE_VERSION_TAG],
    )
    context.log.info(f"published {len(manifest['files'])} files to {paths.artifacts_dir}")
    samples = sample_recommendations(Recommender.load(paths.artifacts_dir))
    return dg.MaterializeResult(
        tags=version["tags"],
        metadata={
            **version["metadata"],
            "index_type": type(built).__name__,
            "settings": dg.MetadataValue.json(settings.relevant_fields()),
            "ntotal": int(built.ntotal),
            "dim": int(built.d),
            "bytes": paths.faiss_index.stat().st_size,
            "build_seconds": round(build_seconds, 4),
            f"recall@{RECALL_K}_vs_exact": recall,
            "sample_recommendations": dg.MetadataValue.md(markdown_table(samples)),
            "path": dg.MetadataValue.path(str(paths.published(INDEX_FILE))),
            "manifest": dg.MetadataValue.path(str(paths.published(MANIFEST_FILE))),
        },
        data_version=content_version(paths.faiss_index, paths.faiss_index_settings),
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
    built = read_index(paths.faiss_index)
    n_games = pl.scan_parquet(paths.catalog).select(pl.len()).collect().item()
    embed_dim = int(np.load(paths.item_embeddings, mmap_mode="r").shape[1])
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
    built = read_index(paths.faiss_index)
    settings = json.loads(paths.faiss_index_settings.read_text(encoding="utf-8"))
    vectors = np.load(paths.item_embeddings)
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
