"""FAISS index over the item vectors, for top-K candidate retrieval.

The index is exact inner product (`IndexFlatIP`), the score the model was trained with, so a
search returns what a brute-force matrix product over all games would. FAISS ids are row
numbers, which are the `item_idx` of the catalog.
"""

from pathlib import Path

import faiss
import numpy as np

from gamerec_assets.core.io import atomic_path


def build_exact_index(item_vectors: np.ndarray) -> faiss.Index:
    """Exact inner-product index; row i of `item_vectors` gets id i."""
    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"item vectors must be a non-empty 2-D array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("item vectors contain NaN or infinite values; refusing to index them")
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def write_index(index: faiss.Index, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_index(path: str | Path) -> faiss.Index:
    return faiss.read_index(str(path))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, item_idx) per query row; k is capped at the catalog size."""
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
