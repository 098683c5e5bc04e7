"""Publishing the serving set: checked as one consistent set, then switched to in one rename.

The pipeline's steps write into a staging folder (`ARTIFACTS_DIR/staging`). The publishing
step checks that the staged files belong together (the checkpoint trained on this catalog,
embeddings and user tower made from this checkpoint, metrics of this checkpoint, an index of
these embeddings: what no single asset check can see), then copies them into a new set folder
with `manifest.json`, and points `ARTIFACTS_DIR/current` at it (see `artifact_sets`). Whether
each file is good on its own is what the assets' blocking checks decide, before this step runs.
"""

import json
import os
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gamerec_assets.core.artifact_sets import (
    adopt_flat_set,
    crash_point,
    ensure_reader_links,
    prune_sets,
    publish_lock,
    set_name,
    switch_current,
)
from gamerec_assets.core.io import (
    atomic_dir,
    file_sha256,
    fsync_path,
    on_disk,
    remove_stale_temporaries_in,
    require_space,
    write_json_atomic,
)
from gamerec_assets.core.manifest import (
    CATALOG_FILE,
    CHECKPOINT_FILE,
    INDEX_FILE,
    INDEX_SETTINGS_FILE,
    ITEM_EMBEDDINGS_FILE,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    METRICS_FILE,
    SERVING_FILES,
    SETS_FOLDER,
    USER_GAMES_FILE,
    USER_TOWER_FILE,
    ArtifactSetError,
    check_lineage,
)
from gamerec_assets.core.training.checkpoint import checkpoint_fingerprint, load_checkpoint


def staged_set_lineage(staging: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The manifest entry of each staged file (SHA-256, size, what it was built from), once
    what it was built from is checked against the files themselves.

    Raises `ArtifactSetError` naming every file that was built from something other than what
    is staged now, and the asset to materialize again.
    """
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
            f"{CHECKPOINT_FILE} records no input files (trained outside the graph): "
            "materialize two_tower_checkpoint and everything downstream"
        )
    for name in (CATALOG_FILE, USER_GAMES_FILE):
        if trained_on and trained_on.get(name) != sha[name]:
            problems.append(
                f"{CHECKPOINT_FILE} was trained with another {name} (the interactions changed "
                "since): materialize two_tower_checkpoint and everything downstream"
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
    if index_settings.get("index_sha256") != sha[INDEX_FILE]:
        problems.append(
            f"{INDEX_FILE} is not the index {INDEX_SETTINGS_FILE} describes (replaced since it "
            "was built): materialize faiss_index"
        )
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
    keep: int = 3,
) -> dict[str, Any]:
    """Publish the staged serving files (`files`: the entries `staged_set_lineage` returns) as
    a new set in `folder` and make it the current one; keep the newest `keep` sets. Returns
    the manifest.

    Nothing a reader can see changes until the last step, one rename of `current`: a crash or
    a full disk before it leaves the previous set serving, whole.
    """
    source, target = Path(staging), Path(folder)
    published_at = datetime.now(UTC)
    name = set_name(run_id, published_at)
    manifest = {
        "format": MANIFEST_FORMAT,
        "set": name,
        "run_id": run_id,
        "config_fingerprint": config_fingerprint,
        "code_version": code_version,
        "published_at": published_at.isoformat(timespec="seconds"),
        "files": {file: dict(entry) for file, entry in files.items()},
    }
    check_lineage(target, manifest)
    with publish_lock(target):
        crash_point("publish:start")
        if adopt_flat_set(target) is not None:
            ensure_reader_links(target)
        sets = target / SETS_FOLDER
        remove_stale_temporaries_in(sets)
        needed = sum(on_disk(entry["bytes"]) for entry in manifest["files"].values())
        require_space(target, needed, f"the serving set of run {run_id}")
        with atomic_dir(sets / name, needed=needed) as tmp:
            # copies, never links: a file edited in place (in staging or in one set) must
            # change neither what serves nor the sets kept for rollback
            for position, (file, entry) in enumerate(manifest["files"].items()):
                shutil.copyfile(source / file, tmp / file)
                fsync_path(tmp / file)
                if file_sha256(tmp / file) != entry["sha256"]:
                    raise ArtifactSetError(
                        f"{source / file} changed while it was being published (another run "
                        "writing staging?); nothing was published: materialize serving_set again"
                    )
                if position == 0:
                    crash_point("publish:between-files")
            write_json_atomic(tmp / MANIFEST_FILE, manifest)
        crash_point("publish:before-switch")
        switch_current(target, name)
        ensure_reader_links(target)
        crash_point("publish:after-switch")
        prune_sets(target, keep)
    return manifest
