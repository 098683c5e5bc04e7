"""The serving set: checked for consistency, published whole, described by a manifest.

The pipeline's steps write into a staging folder (`ARTIFACTS_DIR/staging`). Only when the last
step has a consistent set (the checkpoint trained on this catalog, embeddings and user tower
made from this checkpoint, metrics of this checkpoint, an index of these embeddings) are the
files copied into `ARTIFACTS_DIR`, and `manifest.json` written last: for each file its SHA-256,
size and what it was built from, with the run id and the configuration fingerprint. A run that
fails anywhere before that (bad input, an exception, a blocking check) leaves the published
set as it was. Readers (`Recommender.load`, the CLI) verify the manifest and refuse a set whose
files do not match it, e.g. an index copied in from another run.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from gamerec_assets.core.index import read_index
from gamerec_assets.core.io import atomic_path, file_sha256, write_json_atomic

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
CHECKPOINT_FILE = "two_tower.pt"
CATALOG_FILE = "catalog.parquet"
USER_GAMES_FILE = "user_games.parquet"
ITEM_EMBEDDINGS_FILE = "item_emb.npy"
USER_TOWER_FILE = "user_tower.npz"
METRICS_FILE = "metrics.json"
INDEX_FILE = "index.faiss"
INDEX_SETTINGS_FILE = "index.json"
SERVING_FILES = (
    CATALOG_FILE,
    USER_GAMES_FILE,
    CHECKPOINT_FILE,
    ITEM_EMBEDDINGS_FILE,
    USER_TOWER_FILE,
    METRICS_FILE,
    INDEX_FILE,
    INDEX_SETTINGS_FILE,
)


class ArtifactSetError(ValueError):
    """The files in a folder do not form one consistent set; the message says which and why."""


def staged_set_lineage(staging: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The manifest entry of each staged file (SHA-256, size, what it was built from), once
    what it was built from is checked against the files themselves.

    Raises `ArtifactSetError` naming every file that was built from something other than what
    is staged now, and the asset to materialize again. It covers what the blocking checks of
    the last step check too (one index vector per catalog game), since those run only after
    the step, when the set is already published.
    """
    from gamerec_assets.core.trainer import checkpoint_fingerprint, load_checkpoint

    folder = Path(staging)
    missing = [name for name in SERVING_FILES if not (folder / name).is_file()]
    if missing:
        raise ArtifactSetError(f"{folder}: missing {', '.join(missing)}; materialize the graph")
    sha = {name: file_sha256(folder / name) for name in SERVING_FILES}
    model, checkpoint = load_checkpoint(folder / CHECKPOINT_FILE)
    # torch.save stamps each file with a random id: what was derived from the checkpoint
    # records the hash of its contents, which two identical trainings share.
    fingerprint = checkpoint_fingerprint(checkpoint)
    trained_on = checkpoint.get("extra", {}).get("inputs", {})
    metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    index_settings = json.loads((folder / INDEX_SETTINGS_FILE).read_text(encoding="utf-8"))
    with np.load(folder / USER_TOWER_FILE) as arrays:
        tower_settings = json.loads(str(arrays["settings"]))
    vectors = np.load(folder / ITEM_EMBEDDINGS_FILE)

    problems = []
    if not trained_on:
        problems.append(
            f"{CHECKPOINT_FILE} records no input files (trained outside the graph, or without "
            "`--inputs`): materialize two_tower_checkpoint and everything downstream"
        )
    for name in (CATALOG_FILE, USER_GAMES_FILE):
        if trained_on and trained_on.get(name) != sha[name]:
            problems.append(
                f"{CHECKPOINT_FILE} was trained with another {name} (the interactions changed "
                "since): materialize two_tower_checkpoint and everything downstream"
            )
    index = read_index(folder / INDEX_FILE)
    n_games = pl.scan_parquet(folder / CATALOG_FILE).select(pl.len()).collect().item()
    if not (index.ntotal == len(vectors) == n_games and index.d == vectors.shape[1]):
        problems.append(
            f"{INDEX_FILE} holds {index.ntotal} vectors of dimension {index.d}, expected one "
            f"per game of {CATALOG_FILE} ({n_games}) of dimension {vectors.shape[1]}: "
            "materialize faiss_index"
        )
    expected_vectors = model.item_vectors().cpu().numpy().astype(np.float32)
    if vectors.shape != expected_vectors.shape or not np.array_equal(vectors, expected_vectors):
        problems.append(
            f"{ITEM_EMBEDDINGS_FILE} is not the item tower of {CHECKPOINT_FILE}: "
            "materialize item_embeddings"
        )
    if tower_settings.get("checkpoint_fingerprint") != fingerprint:
        problems.append(
            f"{USER_TOWER_FILE} was made from another checkpoint: materialize item_embeddings"
        )
    if metrics.get("checkpoint_fingerprint") != fingerprint:
        problems.append(f"{METRICS_FILE} evaluated another checkpoint: materialize eval_metrics")
    if index_settings.get("item_embeddings_sha256") != sha[ITEM_EMBEDDINGS_FILE]:
        problems.append(f"{INDEX_FILE} was built from other embeddings: materialize faiss_index")
    if problems:
        raise ArtifactSetError(f"{folder}: not one consistent set: " + "; ".join(problems))
    built_from = {
        CHECKPOINT_FILE: dict(trained_on),
        ITEM_EMBEDDINGS_FILE: {CHECKPOINT_FILE: sha[CHECKPOINT_FILE]},
        USER_TOWER_FILE: {CHECKPOINT_FILE: sha[CHECKPOINT_FILE]},
        METRICS_FILE: {CHECKPOINT_FILE: sha[CHECKPOINT_FILE]},
        INDEX_FILE: {ITEM_EMBEDDINGS_FILE: sha[ITEM_EMBEDDINGS_FILE]},
        INDEX_SETTINGS_FILE: {ITEM_EMBEDDINGS_FILE: sha[ITEM_EMBEDDINGS_FILE]},
    }
    return {
        name: {
            "sha256": sha[name],
            "bytes": (folder / name).stat().st_size,
            "built_from": built_from.get(name, {}),
        }
        for name in SERVING_FILES
    }


def publish_artifacts(
    staging: str | os.PathLike,
    folder: str | os.PathLike,
    files: Mapping[str, Mapping[str, Any]],
    run_id: str,
    config_fingerprint: str,
    code_version: str | None = None,
) -> dict[str, Any]:
    """Copy the staged serving files into `folder`, then write its manifest (`files`, the
    entries `staged_set_lineage` returns); return it.

    Each file is copied under a temporary name and renamed into place; the
    manifest comes last, so until it is written a reader sees files that do not match the
    manifest and refuses them rather than serve a mix of two runs.
    """
    source, target = Path(staging), Path(folder)
    manifest = {
        "format": MANIFEST_FORMAT,
        "run_id": run_id,
        "config_fingerprint": config_fingerprint,
        "code_version": code_version,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {name: dict(entry) for name, entry in files.items()},
    }
    _check_lineage(target, manifest)
    for name, entry in manifest["files"].items():
        published = target / name
        if published.is_file() and file_sha256(published) == entry["sha256"]:
            continue  # already there (an index-only rebuild leaves the model files alone)
        # a copy, not a hard link: a staged file edited in place must not change what serves
        with atomic_path(published) as tmp:
            shutil.copyfile(source / name, tmp)
    write_json_atomic(target / MANIFEST_FILE, manifest)
    return manifest


def read_verified_files(
    folder: str | os.PathLike, names: Iterable[str] = SERVING_FILES
) -> dict[str, bytes]:
    """The bytes of `names`, each checked against the folder's manifest.

    The bytes checked are the bytes returned, so a publish that replaces files meanwhile
    cannot slip another run's file past the check (the reader is refused, and can retry).
    """
    target = Path(folder)
    path = target / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactSetError(
            f"{target}: no {MANIFEST_FILE}, so nothing says these files belong together; "
            "materialize the graph (`gamerec materialize`) to publish a checked set"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactSetError(
            f"{path}: manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"
        )
    problems, contents = [], {}
    for name in names:
        entry = manifest["files"].get(name)
        if entry is None:
            problems.append(f"{name} is not in the manifest")
        elif not (target / name).is_file():
            problems.append(f"{name} is missing")
        else:
            contents[name] = (target / name).read_bytes()
            if hashlib.sha256(contents[name]).hexdigest() != entry["sha256"]:
                problems.append(
                    f"{name} is not the file run {manifest['run_id']} published (its SHA-256 "
                    "differs: replaced or edited since, or a publish is under way)"
                )
    if problems:
        raise ArtifactSetError(
            f"{target}: the artifacts do not match {MANIFEST_FILE}: "
            + "; ".join(problems)
            + ". Retry if a run is publishing; otherwise materialize faiss_index to publish "
            "a consistent set again"
        )
    _check_lineage(target, manifest)
    return contents


def read_verified_manifest(
    folder: str | os.PathLike, names: Iterable[str] = SERVING_FILES
) -> dict[str, Any]:
    """The folder's manifest, after checking that `names` are the files it describes."""
    read_verified_files(folder, names)
    return json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))


def _check_lineage(target: Path, manifest: Mapping[str, Any]) -> None:
    files = manifest["files"]
    problems = [
        f"{name} was built from another {parent}"
        for name, entry in files.items()
        for parent, parent_sha in entry["built_from"].items()
        if parent in files and files[parent]["sha256"] != parent_sha
    ]
    if problems:
        raise ArtifactSetError(f"{target}: not one consistent set: " + "; ".join(problems))
