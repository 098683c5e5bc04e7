"""FAISS index over the item vectors, for top-K candidate retrieval.

Three kinds, chosen by `IndexSettings`:
- `flat`: exact search (`IndexFlatIP`); the reference the others are measured against;
- `hnsw`: graph search (`IndexHNSWFlat`), M neighbours per node, efSearch beam at query time;
- `ivf`: inverted lists (`IndexIVFFlat`), nlist k-means cells, nprobe cells searched.
Metric `ip` is the model's own score (dot product); `cosine` L2-normalises the item vectors
before indexing, and queries must be normalised the same way (`search` does it). FAISS ids are
row numbers, which are the catalog's `item_idx`.
"""

import math
from pathlib import Path

import faiss
import numpy as np

from gamerec_assets.core.io import atomic_path
from gamerec_assets.core.settings import IndexSettings

MIN_POINTS_PER_IVF_LIST = 39  # below this FAISS warns that k-means is poorly trained


def ivf_list_count(n_items: int, requested: int) -> int:
    """The number of IVF lists: the requested one, or about 4*sqrt(n) capped at n/39."""
    if requested:
        if requested > n_items:
            raise ValueError(
                f"ivf_nlist={requested} is larger than the catalog ({n_items} games); "
                "FAISS cannot train more centroids than points"
            )
        return requested
    return max(1, min(int(4 * math.sqrt(n_items)), n_items // MIN_POINTS_PER_IVF_LIST))


def prepare_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    """A float32, C-contiguous copy, L2-normalised for the cosine metric."""
    prepared = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if metric == "cosine":
        faiss.normalize_L2(prepared)
    return prepared


def build_index(item_vectors: np.ndarray, settings: IndexSettings = IndexSettings()) -> faiss.Index:
    """Build the index the settings describe; row i of `item_vectors` gets id i."""
    vectors = np.asarray(item_vectors)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"item vectors must be a non-empty 2-D array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("item vectors contain NaN or infinite values; refusing to index them")
    vectors = prepare_vectors(vectors, settings.metric)
    n_items, dim = vectors.shape
    if settings.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search
    else:
        nlist = ivf_list_count(n_items, settings.ivf_nlist)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(settings.ivf_nprobe, nlist)
    index.add(vectors)
    return index


def write_index(index: faiss.Index, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_index(path: str | Path) -> faiss.Index:
    return faiss.read_index(str(path))


def search(
    index: faiss.Index, queries: np.ndarray, k: int, metric: str = "ip"
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, item_idx) per query row; k is capped at the catalog size.

    Approximate indexes may return fewer than k hits for a query; missing slots hold id -1.
    """
    k = min(k, index.ntotal)
    return index.search(prepare_vectors(queries, metric), k)


def recall_against_exact(
    index: faiss.Index, item_vectors: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip"
) -> float:
    """Share of the exact top-k neighbours (by the same metric) that the index returns."""
    k = min(k, len(item_vectors))
    exact = build_index(item_vectors, IndexSettings(kind="flat", metric=metric))
    _, truth = search(exact, queries, k, metric)
    _, found = search(index, queries, k, metric)
    hits = [len(np.intersect1d(t, f[f >= 0])) for t, f in zip(truth, found, strict=True)]
    return float(np.sum(hits) / truth.size)
