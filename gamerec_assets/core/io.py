"""Atomic file writes and content hashes for every artifact the pipeline produces.

Every file (or folder) is written under a temporary name in the same folder and renamed into
place, so a crash or an exception never leaves a half-written artifact where a good one stood.
A process killed outright (SIGKILL, out of memory) cannot clean up its temporary; the name
carries the writer's host and process id, and the next write of the same name on that host
removes those of dead writers. A write that fails because the disk is full raises
`DiskFullError`, one line naming the path, what was written or needed, and the space left.
"""

import errno
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

LOW_SPACE_BYTES = 1 << 20
"""Below this much free space, a write error without an errno is taken for a full disk."""


class DiskFullError(OSError):
    """No space left on the device; the message names the path and the space needed and left."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


def human_bytes(count: int) -> str:
    """1536 -> '1.5 KiB'."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def free_bytes(folder: str | os.PathLike) -> int:
    """Free space for this user on the file system holding `folder` (its nearest existing
    ancestor when it does not exist yet)."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def is_disk_full(error: BaseException, folder: str | os.PathLike) -> bool:
    """Whether `error` (or what caused it) means the disk holding `folder` is full.

    Libraries do not all keep the errno: polars says "No space left on device (os error 28)",
    torch `RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 9920 vs
    9808` (seen on a full tmpfs); so the words count too, and an OS or runtime error while
    writing when almost no space is left.
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        cause = cause.__cause__ or cause.__context__
    text = str(error).lower()
    if "no space left on device" in text or "os error 28" in text:  # polars/Rust, errno lost
        return True
    return isinstance(error, RuntimeError | OSError) and free_bytes(folder) < LOW_SPACE_BYTES


def require_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Raise `DiskFullError` before writing `needed` bytes into `folder` when they do not fit."""
    free = free_bytes(folder)
    if needed > free:
        raise DiskFullError(
            f"no space left on device for {what} in {folder}: {human_bytes(needed)} needed, "
            f"{human_bytes(free)} free; free some space and run again (nothing was changed)"
        )


def _disk_full_error(target: Path, written: int, needed: int | None) -> DiskFullError:
    amount = (
        f"{human_bytes(needed)} needed"
        if needed is not None
        else f"more than the {human_bytes(written)} written when it filled up"
    )
    return DiskFullError(
        f"no space left on device writing {target}: {amount}, "
        f"{human_bytes(free_bytes(target.parent))} free now; free some space and run again "
        "(what was there before is unchanged)"
    )


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


@contextmanager
def _temporary_beside(target: Path, make_dir: bool, needed: int | None) -> Iterator[Path]:
    """A temporary file or folder beside `target`, renamed onto it only if the block succeeds;
    removed otherwise. A full disk is reported as `DiskFullError`."""
    _make_parent(target)
    remove_stale_temporaries(target)
    prefix = f".{target.name}.{_writer_id()}."
    if make_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    else:
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if make_dir else 0o666) & ~_UMASK)  # mkstemp/mkdtemp are private
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except Exception as error:
        if isinstance(error, DiskFullError) or not is_disk_full(error, target.parent):
            raise
        written = _size_of(tmp)
        _remove(tmp)
        raise _disk_full_error(target, written, needed) from error
    finally:
        _remove(tmp)


DISK_BLOCK = 4096


def on_disk(size: int) -> int:
    """Bytes a file of `size` bytes takes on a disk of 4 KiB blocks (what free space pays),
    with a block for its metadata: so "needed" in a disk-full message is what must be free."""
    return (size + DISK_BLOCK - 1) // DISK_BLOCK * DISK_BLOCK + DISK_BLOCK


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        blocking = next(
            (p for p in (target.parent, *target.parent.parents) if p.exists() and not p.is_dir()),
            Path(error.filename or target.parent),
        )
        raise NotADirectoryError(
            f"cannot write {target}: {blocking} is a file, not a folder"
        ) from error


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file is flushed to disk before the rename and the rename after it, so a machine that
    stops (a preempted node) holds the old file or the new one, never a torn one. `needed`
    (bytes, when known) goes into the message if the disk fills up.
    """
    with _temporary_beside(Path(path), make_dir=False, needed=needed) as tmp:
        yield tmp


@contextmanager
def atomic_dir(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; rename it to `path` only if the block
    succeeds (`path` must not exist then). Fill it with finished files: the folder is synced,
    the files in it are the caller's to sync."""
    with _temporary_beside(Path(path), make_dir=True, needed=needed) as tmp:
        yield tmp


def temporary_sibling(target: Path, tag: str) -> Path:
    """A name beside `target` for a temporary of this writer that `remove_stale_temporaries`
    recognises (`tag`: letters and digits, no dots)."""
    return target.with_name(f".{target.name}.{_writer_id()}.{tag}.tmp")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's bytes, or a folder's entries (a rename in it), to disk."""
    _fsync(Path(path))


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporaries (files or folders) left beside `target` by writers on this machine
    that no longer run. Writers elsewhere (another pod on a shared volume) are left alone:
    their process ids mean nothing here."""
    return _remove_dead_writers(target.parent.glob(f".{glob.escape(target.name)}.*.tmp"))


def remove_stale_temporaries_in(folder: str | os.PathLike) -> list[Path]:
    """The same for every name in `folder` (temporaries of names not known in advance)."""
    return _remove_dead_writers(Path(folder).glob(".*.tmp"))


def _remove_dead_writers(candidates: Iterator[Path]) -> list[Path]:
    removed = []
    for candidate in candidates:
        # .<name>.<host>-<pid>.<random>.tmp: the name may hold dots, the rest cannot
        parts = candidate.name[: -len(".tmp")].rsplit(".", 2)
        if len(parts) != 3:
            continue
        host, _, pid = parts[1].rpartition("-")
        if host == _HOST and pid.isdigit() and not _process_alive(int(pid)):
            _remove(candidate)
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
