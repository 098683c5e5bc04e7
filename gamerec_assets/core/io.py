"""Atomic file writes and content hashes for every artifact the pipeline produces.

Every file is written under a temporary name in the same folder and renamed into place, so a
crash or an exception never leaves a half-written artifact where a good one stood. A process
killed outright (SIGKILL, out of memory) cannot clean up its temporary file; the name carries
the writer's host and process id, and the next write of the same file on that host removes
those of dead writers.
"""

import glob
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file is flushed to disk before the rename and the rename after it, so a machine that
    stops (a preempted node) holds the old file or the new one, never a torn one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{_writer_id()}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporary files left beside `target` by writers on this machine that no longer
    run. Writers elsewhere (another pod on a shared volume) are left alone: their process ids
    mean nothing here."""
    removed = []
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        writer = candidate.name[len(target.name) + 2 :].split(".", 1)[0]
        host, _, pid = writer.rpartition("-")
        if host == _HOST and pid.isdigit() and not _process_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


_HOST = socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def _writer_id() -> str:
    """`<host>-<pid>` of the writing process (asked at each write: a fork has another pid)."""
    return f"{_HOST}-{os.getpid()}"


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so large artifacts stay out of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def write_parquet_atomic(frame: pl.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)


def combined_sha256(paths: list[str | os.PathLike]) -> str:
    """One hash for an artifact made of several files (each file's hash, in order)."""
    return hashlib.sha256("".join(file_sha256(p) for p in paths).encode()).hexdigest()


def config_fingerprint(settings: dict[str, Any]) -> str:
    """Stable hash of a settings mapping (canonical JSON: sorted keys, no whitespace)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
