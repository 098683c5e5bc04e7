"""The published serving set's manifest, and reading files only when they match it.

Torch-free on purpose: serving (`Recommender.load`, the `gamerec` CLI) imports this module and
nothing that trains. `manifest.json` lists each published file with its SHA-256, size and what
it was built from (the hashes of its parents), plus the run id and configuration fingerprint;
`publish` writes it, last. A reader checks the bytes it loads against it and refuses a set
whose files do not match (an index copied in from another run, a file edited since).
"""

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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


def read_verified_files(
    folder: str | os.PathLike, names: Iterable[str] = SERVING_FILES
) -> dict[str, bytes]:
    """The bytes of `names`, each checked against the folder's manifest.

    The bytes checked are the bytes returned, so a publish that replaces files meanwhile
    cannot slip another run's file past the check (the reader is refused, and can retry).
    """
    target = Path(folder)
    manifest = read_manifest(target)
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
            + ". Retry if a run is publishing; otherwise materialize serving_set to publish "
            "a consistent set again"
        )
    check_lineage(target, manifest)
    return contents


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's manifest as written, or `ArtifactSetError` saying why there is none."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactSetError(
            f"{Path(folder)}: no {MANIFEST_FILE}, so nothing says these files belong together; "
            "materialize the graph (`gamerec materialize`) to publish a checked set"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactSetError(
            f"{path}: manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"
        )
    return manifest


def read_verified_manifest(
    folder: str | os.PathLike, names: Iterable[str] = SERVING_FILES
) -> dict[str, Any]:
    """The folder's manifest, after checking that `names` are the files it describes."""
    read_verified_files(folder, names)
    return read_manifest(folder)


def check_lineage(target: Path, manifest: Mapping[str, Any]) -> None:
    """Every file was built from the very parents the manifest lists beside it."""
    files = manifest["files"]
    problems = [
        f"{name} was built from another {parent}"
        for name, entry in files.items()
        for parent, parent_sha in entry["built_from"].items()
        if parent in files and files[parent]["sha256"] != parent_sha
    ]
    if problems:
        raise ArtifactSetError(f"{target}: not one consistent set: " + "; ".join(problems))
