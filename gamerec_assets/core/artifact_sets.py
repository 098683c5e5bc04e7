"""Published serving sets: one folder per publish, one pointer switched in a single rename.

Layout of ARTIFACTS_DIR:

    sets/<name>/                  one complete set each (the serving files and manifest.json),
                                  never written again once in place
    current -> sets/<name>        the set that serves: a relative symbolic link
    item_emb.npy -> current/item_emb.npy, index.faiss, metrics.json, manifest.json, ...
                                  the seed's paths, resolving to the current set
    staging/                      each step's latest output (see `publish`)

A publish builds the new set under a temporary name, renames it into `sets/`, then replaces
`current` with a link to it (`os.replace`: one atomic rename). A crash at any instant
therefore leaves `current` on the old set or on the new one, each whole; temporaries of a
killed publisher are removed by the next one. The last `keep` sets stay for `gamerec
rollback`; older ones are pruned. Publishing and rolling back hold a lock on the folder, so
concurrent runs take turns. Links need a POSIX file system (Linux, macOS). Torch-free.
"""

import fcntl
import json
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gamerec_assets.core.io import atomic_dir, fsync_path, temporary_sibling
from gamerec_assets.core.manifest import (
    CURRENT_LINK,
    INDEX_FILE,
    INDEX_SETTINGS_FILE,
    ITEM_EMBEDDINGS_FILE,
    MANIFEST_FILE,
    SERVING_FILES,
    SETS_FOLDER,
    ArtifactSetError,
    read_manifest,
    resolve_set,
    set_problems,
)

LOCK_FILE = ".publish.lock"
READER_FILES = (*SERVING_FILES, MANIFEST_FILE)
"""The names kept at the top of ARTIFACTS_DIR as links into the current set."""
CRASH_ENV = "GAMEREC_TEST_CRASH_AT"
CRASH_POINTS = (
    "publish:start",
    "publish:between-files",
    "publish:before-switch",
    "publish:after-switch",
)


def crash_point(name: str) -> None:
    """For tests only: SIGKILL this process here when GAMEREC_TEST_CRASH_AT names the point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class PublishedSet:
    name: str
    path: Path
    run_id: str | None
    published_at: str | None
    is_current: bool


@contextmanager
def publish_lock(folder: Path) -> Iterator[None]:
    """Exclusive use of `folder` for publishing or rolling back; the kernel releases it when
    the holder dies, so a killed publisher never blocks the next one."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_name(run_id: str, when: datetime) -> str:
    """Sorts by publishing time: `20261201-120000-123456-1a2b3c4d`."""
    return f"{when:%Y%m%d-%H%M%S-%f}-{run_id[:8]}"


def current_set_name(folder: Path) -> str | None:
    pointer = folder / CURRENT_LINK
    return Path(os.readlink(pointer)).name if pointer.is_symlink() else None


def list_sets(folder: Path) -> list[PublishedSet]:
    """The kept sets, oldest first."""
    sets = folder / SETS_FOLDER
    if not sets.is_dir():
        return []
    current = current_set_name(folder)
    found = []
    for path in sorted(p for p in sets.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            manifest = read_manifest(path)
        except ArtifactSetError:
            manifest = {}
        found.append(
            PublishedSet(
                path.name,
                path,
                manifest.get("run_id"),
                manifest.get("published_at"),
                path.name == current,
            )
        )
    return found


def _links_to(path: Path, target: str) -> bool:
    return path.is_symlink() and os.readlink(path) == target


def replace_with_link(path: Path, target: str) -> None:
    """Make `path` a link to `target` in one rename: a reader sees the old entry or the new."""
    if _links_to(path, target):
        return
    tmp = temporary_sibling(path, "link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def switch_current(folder: Path, name: str) -> None:
    """Serve `sets/<name>` from now on."""
    replace_with_link(folder / CURRENT_LINK, f"{SETS_FOLDER}/{name}")


def ensure_reader_links(folder: Path) -> None:
    """`ARTIFACTS_DIR/<file>` -> `current/<file>` for every published file (created once;
    also repairs one that was deleted or overwritten)."""
    for name in READER_FILES:
        replace_with_link(folder / name, f"{CURRENT_LINK}/{name}")


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link when the file system allows it (published files are never written in
    place, so sets can share them), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def adopt_flat_set(folder: Path) -> str | None:
    """Move a set published before sets existed (files and manifest.json side by side at the
    top of `folder`) into a set folder of its own and point `current` at it, so it stays
    available to rollback. Returns its name, or None when there is nothing to adopt."""
    manifest_path = folder / MANIFEST_FILE
    if (folder / CURRENT_LINK).is_symlink() or manifest_path.is_symlink():
        return None
    if not manifest_path.is_file():
        return None
    try:
        manifest = read_manifest(folder)
        when = datetime.fromisoformat(manifest["published_at"])
    except (ArtifactSetError, KeyError, TypeError, ValueError):
        return None  # not a set worth keeping: the links replace its files
    name = set_name(str(manifest.get("run_id") or "unknown"), when)
    with atomic_dir(folder / SETS_FOLDER / name) as tmp:
        for file in (*manifest["files"], MANIFEST_FILE):
            if (folder / file).is_file() and not (folder / file).is_symlink():
                link_or_copy(folder / file, tmp / file)
    switch_current(folder, name)
    return name


def prune_sets(folder: Path, keep: int) -> list[str]:
    """Remove all but the newest `keep` sets, never the current one; returns their names."""
    current = current_set_name(folder)
    sets = list_sets(folder)
    kept = {s.name for s in sets[-keep:]} | {current}
    removed = [s for s in sets if s.name not in kept]
    for published in removed:
        shutil.rmtree(published.path, ignore_errors=True)
    return [s.name for s in removed]


def rollback(folder: Path, to: str | None = None) -> tuple[str | None, str]:
    """Serve an older kept set again: `to` (a set name, or the start of one or of its run id),
    else the newest set older than the current one whose files match its manifest. Returns
    (the set served before, the set served now)."""
    with publish_lock(folder):
        current = current_set_name(folder)
        sets = list_sets(folder)
        if to is not None:
            candidates = [s for s in sets if to in (s.name[: len(to)], (s.run_id or "")[: len(to)])]
            if len(candidates) != 1:
                names = ", ".join(s.name for s in sets) or "none"
                found = "no" if not candidates else f"{len(candidates)}"
                raise ArtifactSetError(f"{folder}: {found} kept set(s) match {to!r}; kept: {names}")
        else:
            candidates = [s for s in reversed(sets) if current is None or s.name < current]
            if not candidates:
                raise ArtifactSetError(
                    f"{folder}: no set older than the current one ({current}) is kept; "
                    "nothing to roll back to"
                )
        damaged = []
        for candidate in candidates:
            problems = set_problems(candidate.path)
            if not problems:
                switch_current(folder, candidate.name)
                ensure_reader_links(folder)
                return current, candidate.name
            damaged.append(f"{candidate.name} ({'; '.join(problems)})")
        raise ArtifactSetError(f"{folder}: not rolling back to a damaged set: {', '.join(damaged)}")


def verify_artifacts(folder: Path, every_set: bool = False) -> tuple[list[str], str]:
    """Every problem with the published artifacts in `folder`, one line each naming the file,
    and a one-line summary. Checked: each file of the current set (or of every kept set)
    against its manifest's SHA-256, the lineage the manifest records, the hashes `index.json`
    records, and that the paths at the top of `folder` lead to the current set."""
    try:
        current = resolve_set(folder)
    except (OSError, ArtifactSetError) as error:
        return [str(error)], f"{folder}: nothing verified"
    kept = [s.path for s in list_sets(folder)] if every_set else []
    folders = list(dict.fromkeys([current, *(path.resolve() for path in kept)]))
    problems = [f"{path}: {problem}" for path in folders for problem in _set_problems(path)]
    problems += _reader_link_problems(folder)
    if problems:
        return problems, f"{folder}: {len(problems)} problem(s) found"
    manifest = read_manifest(current)
    return [], (
        f"{folder}: OK, {len(folders)} set(s) verified; current {current.name}: "
        f"{len(manifest['files'])} files of run {manifest['run_id']} (published "
        f"{manifest['published_at']}) match {MANIFEST_FILE} and their lineage"
    )


def _set_problems(path: Path) -> list[str]:
    """A set's problems: against its manifest, then the hashes its index.json records."""
    problems = set_problems(path)
    if problems:
        return problems
    manifest = read_manifest(path)
    recorded = json.loads((path / INDEX_SETTINGS_FILE).read_text(encoding="utf-8"))
    return [
        f"{INDEX_SETTINGS_FILE} describes another {name} than the one published"
        for name, key in (
            (ITEM_EMBEDDINGS_FILE, "item_embeddings_sha256"),
            (INDEX_FILE, "index_sha256"),
        )
        if recorded.get(key) != manifest["files"][name]["sha256"]
    ]


def _reader_link_problems(folder: Path) -> list[str]:
    """The top-level paths that do not lead into the current set (with the set layout)."""
    if not (folder / CURRENT_LINK).is_symlink():
        return []
    return [
        f"{folder / name}: not the link to {CURRENT_LINK}/{name} (replaced or removed): "
        "readers of that path do not get the current set; publishing again restores it"
        for name in READER_FILES
        if not (
            (folder / name).is_symlink() and os.readlink(folder / name) == f"{CURRENT_LINK}/{name}"
        )
    ]


def describe_sets(folder: Path) -> str:
    """The kept sets as a table, newest first, the current one marked."""
    sets = list_sets(folder)
    if not sets:
        return f"{folder}: no published sets"
    rows = [("", "set", "run", "published")] + [
        ("*" if s.is_current else "", s.name, s.run_id or "?", s.published_at or "?")
        for s in reversed(sets)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
