"""The published set: its manifest, the checks before publishing and on every load."""

import json
import shutil

import faiss
import numpy as np
import polars as pl
import pytest

from gamerec_assets import Recommender, cli
from gamerec_assets.core.io import file_sha256, write_json_atomic
from gamerec_assets.core.manifest import (
    MANIFEST_FILE,
    SERVING_FILES,
    ArtifactSetError,
    read_verified_manifest,
    resolve_set,
)
from gamerec_assets.core.publish import publish_artifacts, staged_set_lineage


@pytest.fixture
def artifacts(published_run, tmp_path):
    """A private copy of a published folder (with its staging/), free to damage."""
    return shutil.copytree(published_run.artifacts, tmp_path / "artifacts", symlinks=True)


def test_manifest_describes_every_published_file(published_run):
    folder, run_id = published_run.artifacts, published_run.run_id
    manifest = read_verified_manifest(folder)
    assert manifest["run_id"] == run_id
    assert len(manifest["config_fingerprint"]) == 16 and manifest["code_version"]
    assert set(manifest["files"]) == set(SERVING_FILES)
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == file_sha256(folder / name), name
        assert entry["bytes"] == (folder / name).stat().st_size, name
        assert (folder / name).read_bytes() == (folder / "staging" / name).read_bytes(), name
    files = manifest["files"]
    assert files["index.faiss"]["built_from"] == {"item_emb.npy": files["item_emb.npy"]["sha256"]}
    assert files["item_emb.npy"]["built_from"] == {"two_tower.pt": files["two_tower.pt"]["sha256"]}
    assert (
        files["two_tower.pt"]["built_from"]["catalog.parquet"]
        == (files["catalog.parquet"]["sha256"])
    )


def test_an_index_built_from_other_embeddings_is_refused(artifacts, capsys):
    vectors = np.load(artifacts / "item_emb.npy")
    other = faiss.IndexFlatIP(vectors.shape[1])
    other.add(np.random.default_rng(1).standard_normal(vectors.shape).astype(np.float32))
    faiss.write_index(other, str(resolve_set(artifacts) / "index.faiss"))
    with pytest.raises(ArtifactSetError, match=r"index\.faiss is not the file run .* published"):
        Recommender.load(artifacts)
    assert cli.main(["similar", "--game", "x", "--artifacts", str(artifacts)]) == 2
    assert "do not match manifest.json: index.faiss" in capsys.readouterr().err


def test_a_manifest_whose_files_disagree_on_lineage_is_refused(artifacts):
    manifest = json.loads((artifacts / MANIFEST_FILE).read_text())
    manifest["files"]["index.faiss"]["built_from"]["item_emb.npy"] = "0" * 64
    write_json_atomic(resolve_set(artifacts) / MANIFEST_FILE, manifest)
    with pytest.raises(ArtifactSetError, match="index.faiss was built from another item_emb.npy"):
        Recommender.load(artifacts)


def test_files_without_a_manifest_are_refused_unless_verification_is_off(artifacts):
    (resolve_set(artifacts) / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactSetError, match="no manifest.json"):
        Recommender.load(artifacts)
    assert Recommender.load(artifacts, verify=False).index.ntotal > 0


def test_staged_set_is_consistent_after_a_run(artifacts):
    entries = staged_set_lineage(artifacts / "staging")
    embeddings_sha = file_sha256(artifacts / "staging" / "item_emb.npy")
    assert entries["item_emb.npy"]["sha256"] == embeddings_sha
    assert entries["index.faiss"]["built_from"] == {"item_emb.npy": embeddings_sha}


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda staging: np.save(
                staging / "item_emb.npy", np.load(staging / "item_emb.npy") * 1.5
            ),
            "item_emb.npy is not the item tower of two_tower.pt",
        ),
        (
            lambda staging: _edit_json(staging / "metrics.json", checkpoint_fingerprint="0"),
            "metrics.json evaluated another checkpoint: materialize eval_metrics",
        ),
        (
            lambda staging: _edit_json(staging / "index.json", item_embeddings_sha256="0"),
            "index.faiss was built from other embeddings: materialize faiss_index",
        ),
        (
            lambda staging: (
                pl.read_parquet(staging / "catalog.parquet")
                .with_columns(pl.col("title").reverse())
                .write_parquet(staging / "catalog.parquet")
            ),
            "two_tower.pt was trained with another catalog.parquet",
        ),
        (
            lambda staging: (
                pl.read_parquet(staging / "user_games.parquet")
                .with_columns(pl.col("user_idx").reverse())
                .write_parquet(staging / "user_games.parquet")
            ),
            "two_tower.pt was trained with another user_games.parquet",
        ),
        (
            lambda staging: faiss.write_index(faiss.IndexFlatIP(16), str(staging / "index.faiss")),
            "index.faiss is not the index index.json describes",
        ),
    ],
    ids=["embeddings", "metrics", "index-lineage", "catalog", "user-games", "index-replaced"],
)
def test_inconsistent_staged_set_is_refused_naming_the_file_and_the_fix(artifacts, damage, message):
    staging = artifacts / "staging"
    damage(staging)
    with pytest.raises(ArtifactSetError, match=message):
        staged_set_lineage(staging)


def test_publish_refuses_lineage_that_disagrees_before_touching_the_folder(artifacts, tmp_path):
    target = tmp_path / "published"
    entries = staged_set_lineage(artifacts / "staging")
    entries["index.faiss"]["built_from"] = {"item_emb.npy": "0" * 64}
    with pytest.raises(ArtifactSetError, match="index.faiss was built from another item_emb.npy"):
        publish_artifacts(artifacts / "staging", target, entries, "run", "fingerprint")
    assert not target.exists() or list(target.iterdir()) == []


def test_republishing_replaces_files_without_leaving_temporaries(artifacts):
    manifest = publish_artifacts(
        artifacts / "staging",
        artifacts,
        staged_set_lineage(artifacts / "staging"),
        run_id="again",
        config_fingerprint="f" * 16,
    )
    assert read_verified_manifest(artifacts)["run_id"] == manifest["run_id"] == "again"
    assert not list(artifacts.glob(".*.tmp"))


def _edit_json(path, **changes) -> None:
    payload = json.loads(path.read_text())
    payload.update(changes)
    write_json_atomic(path, payload)
