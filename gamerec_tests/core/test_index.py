import numpy as np
import pytest

from gamerec_assets.core.index import build_index, read_index, search, write_index
from gamerec_assets.core.settings import IndexSettings


def _vectors(seed, n, dim=8):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _brute_force(items, queries, k):
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def test_exact_index_top_k_equals_brute_force():
    items, queries = _vectors(0, 200), _vectors(1, 15)
    index = build_index(items, IndexSettings())
    assert index.ntotal == 200 and index.d == 8
    scores, ids = search(index, queries, 10)
    expected_scores, expected_ids = _brute_force(items, queries, 10)
    assert scores.shape == ids.shape == (15, 10)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    # continuous random vectors: all scores distinct, so the ids must agree exactly
    np.testing.assert_array_equal(ids, expected_ids)


def test_search_accepts_float64_and_non_contiguous_queries():
    items = _vectors(2, 50)
    queries = np.asfortranarray(_vectors(3, 4).astype(np.float64))
    _, ids = search(build_index(items.astype(np.float64), IndexSettings()), queries, 3)
    np.testing.assert_array_equal(ids, _brute_force(items, queries, 3)[1])


@pytest.mark.parametrize(
    "bad",
    [np.zeros((0, 4), dtype=np.float32), np.zeros(4, dtype=np.float32)],
    ids=["empty", "one_dimensional"],
)
def test_build_rejects_empty_or_non_matrix(bad):
    with pytest.raises(ValueError, match="non-empty 2-D"):
        build_index(bad, IndexSettings())


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_build_rejects_non_finite(value):
    items = _vectors(4, 10)
    items[3, 2] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        build_index(items, IndexSettings())


def test_write_read_round_trip_and_k_capped_at_ntotal(tmp_path):
    items, queries = _vectors(5, 6), _vectors(6, 3)
    index = build_index(items, IndexSettings())
    path = tmp_path / "items.faiss"
    write_index(index, path)
    assert [p.name for p in tmp_path.iterdir()] == ["items.faiss"]
    loaded = read_index(path)
    assert loaded.ntotal == 6
    np.testing.assert_array_equal(loaded.reconstruct_n(0, 6), items)

    scores, ids = search(loaded, queries, 50)
    assert ids.shape == (3, 6)
    assert (ids >= 0).all()
    assert sorted(ids[0].tolist()) == list(range(6))
    original_scores, original_ids = search(index, queries, 6)
    np.testing.assert_array_equal(ids, original_ids)
    np.testing.assert_array_equal(scores, original_scores)
