"""The published serving set's manifest, and reading files only when they match it.

Torch-free on purpose: serving (`Recommender.load`, the `gamerec` CLI) imports this module and
nothing that trains. `manifest.json` lists each published file with its SHA-256, size and what
it was built from (the hashes of its parents), plus the run id and configuration fingerprint;
`publish` writes it, last. A reader checks the bytes it loads against it and refuses a set
whose files do not match (an index copied in from another run, a file edited since).

Each published set is a folder of its own, `ARTIFACTS_DIR/sets/<name>/`, never written again;
`ARTIFACTS_DIR/current` points at the one that serves (see `artifact_sets`). A reader resolves
that pointer once (`resolve_set`) and reads every file from the folder it found, so a publish
that switches the pointer meanwhile cannot hand it files of two sets.
"""

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
CURRENT_LINK = "current"
SETS_FOLDER = "sets"
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


def resolve_set(folder: str | os.PathLike) -> Path:
    """The folder holding the set that serves: where `folder/current` points, or `folder`
    itself when it has no such pointer (a set folder given directly, or an older flat layout).

    Raises `FileNotFoundError` / `NotADirectoryError` naming `folder` when it is not a
    folder, and `ArtifactSetError` when the pointer leads nowhere.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(
            f"{root}: no such folder; materialize the graph first (`gamerec materialize`), or "
            "point ARTIFACTS_DIR (or --artifacts) at its artifacts"
        )
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: a file, not an artifacts folder")
    pointer = root / CURRENT_LINK
    if not pointer.is_symlink() and not pointer.exists():
        return root
    target = pointer.resolve()
    if not target.is_dir():
        raise ArtifactSetError(
            f"{pointer} points to {target}, which is not there; `gamerec rollback --list` "
            "shows the sets kept, `gamerec rollback` serves the newest good one"
        )
    return target


def verified_files(
    folder: Path, names: Iterable[str] = SERVING_FILES
) -> tuple[dict[str, bytes], list[str]]:
    """The bytes of `names` in one set folder, and each way they disagree with its manifest
    or with one another (one sentence per problem; none when the set is good)."""
    manifest = read_manifest(folder)
    problems, contents = [], {}
    for name in names:
        entry = manifest["files"].get(name)
        if entry is None:
            problems.append(f"{name} is not in {MANIFEST_FILE}")
        elif not (folder / name).is_file():
            problems.append(f"{name} is missing")
        else:
            contents[name] = (folder / name).read_bytes()
            if hashlib.sha256(contents[name]).hexdigest() != entry["sha256"]:
                problems.append(
                    f"{name} is not the file run {manifest['run_id']} published (its SHA-256 "
                    f"differs from {MANIFEST_FILE}: edited or replaced since)"
                )
    problems += lineage_problems(manifest)
    return contents, problems


def set_problems(folder: Path, names: Iterable[str] = SERVING_FILES) -> list[str]:
    """Every way one set folder disagrees with its manifest (an unreadable manifest too)."""
    try:
        return verified_files(folder, names)[1]
    except ArtifactSetError as error:
        return [str(error)]


def read_verified_files(
    folder: str | os.PathLike, names: Iterable[str] = SERVING_FILES
) -> dict[str, bytes]:
    """The bytes of `names` in the set that serves from `folder`, each checked against its
    manifest; `ArtifactSetError` naming every problem otherwise.

    The bytes checked are the bytes returned, so a file replaced meanwhile cannot slip past
    the check.
    """
    target = resolve_set(folder)
    contents, problems = verified_files(target, names)
    if problems:
        raise ArtifactSetError(
            f"{target}: the artifacts do not match {MANIFEST_FILE}: "
            + "; ".join(problems)
            + ". Run `gamerec verify` for details; `gamerec rollback` serves the previous set, "
            "materializing serving_set publishes a new one"
        )
    return contents


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's manifest as written, or `ArtifactSetError` saying why there is none."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactSetError(
            f"{Path(folder)}: no {MANIFEST_FILE}, so nothing says these files belong together; "
            "materialize the graph (`gamerec materialize`) to publish a checked set"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise ArtifactSetError(
            f"{path}: not a readable manifest (truncated or edited: {error}); `gamerec "
            "rollback` serves the previous set, materializing serving_set publishes a new one"
        ) from error
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(entry, dict) and {"sha256", "built_from"} <= set(entry)
        for entry in files.values()
    ):
        raise ArtifactSetError(f"{path}: no list of files with their SHA-256 (edited?)")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactSetError(
            f"{path}: manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"
        )
    return manifest


def read_verified_manifest(
    folder: str | os.PathLike, names: Iterable[str] = SERVING_FILES
) -> dict[str, Any]:
    """The serving set's manifest, after checking that `names` are the files it describes."""
    target = resolve_set(folder)
    read_verified_files(target, names)
    return read_manifest(target)


def lineage_problems(manifest: Mapping[str, Any]) -> list[str]:
    """Each file the manifest says was built from a parent other than the one beside it."""
    files = manifest["files"]
    return [
        f"{name} was built from another {parent}"
        for name, entry in files.items()
        for parent, parent_sha in entry["built_from"].items()
        if parent in files and files[parent]["sha256"] != parent_sha
    ]


def check_lineage(target: Path, manifest: Mapping[str, Any]) -> None:
    """Every file was built from the very parents the manifest lists beside it."""
    problems = lineage_problems(manifest)
    if problems:
        raise ArtifactSetError(f"{target}: not one consistent set: " + "; ".join(problems))
