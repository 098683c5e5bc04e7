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
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from gamerec_assets.core.io import atomic_path

INDEX_KINDS = ("flat", "hnsw", "ivf")
INDEX_METRICS = ("ip", "cosine")
MIN_POINTS_PER_IVF_LIST = 39  # below this FAISS warns that k-means is poorly trained


@dataclass(frozen=True)
class IndexSettings:
    kind: str = "flat"
    metric: str = "ip"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    ivf_nlist: int = 0  # 0: about 4 * sqrt(n), with at least 39 points per list
    ivf_nprobe: int = 32

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(
                f"index kind must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}"
            )
        if self.metric not in INDEX_METRICS:
            raise ValueError(
                f"index metric must be one of {', '.join(INDEX_METRICS)}, got {self.metric!r}"
            )

    def relevant_fields(self) -> dict[str, object]:
        """The settings that matter for this kind (a new efSearch does not touch a flat index)."""
        fields = asdict(self)
        prefix = {"flat": None, "hnsw": "hnsw_", "ivf": "ivf_"}[self.kind]
        return {
            name: value
            for name, value in fields.items()
            if name in ("kind", "metric") or (prefix and name.startswith(prefix))
        }


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
