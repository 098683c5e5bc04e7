import hashlib
import json
import os
import stat
import subprocess
import sys

import polars as pl
import pytest

from gamerec_assets.core import io as io_module
from gamerec_assets.core.io import (
    atomic_path,
    combined_sha256,
    file_sha256,
    write_json_atomic,
    write_parquet_atomic,
)


def test_atomic_path_replaces_target_on_success(tmp_path):
    target = tmp_path / "artifact.bin"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not replaced before the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.bin"]


def test_atomic_path_keeps_old_file_and_removes_temp_on_exception(tmp_path):
    target = tmp_path / "artifact.bin"
    old = bytes(range(256)) * 4
    target.write_bytes(old)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("boom")
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.bin"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_next_write_removes_temporaries_of_dead_writers_only(tmp_path):
    """A SIGKILLed writer leaves `.name.<host>-<pid>.<random>.tmp`; the next write of that
    file removes it, but not a live writer's, another file's, or another host's."""
    target = tmp_path / "item_emb.npy"
    host = io_module._HOST
    dead = tmp_path / f".item_emb.npy.{host}-{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".item_emb.npy.{host}-{os.getpid()}.def456.tmp"
    other_file = tmp_path / f".index.faiss.{host}-{_dead_pid()}.abc123.tmp"
    other_host = tmp_path / f".item_emb.npy.elsewhere-{_dead_pid()}.abc123.tmp"
    for path in (dead, live, other_file, other_host):
        path.write_bytes(b"partial")
    with atomic_path(target) as tmp:
        assert f"{host}-{os.getpid()}" in tmp.name
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert not dead.exists()
    assert live.exists() and other_file.exists() and other_host.exists()


def test_atomic_path_on_exception_creates_no_target(tmp_path):
    target = tmp_path / "sub" / "new.json"
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise KeyError("x")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_write_json_atomic_round_trip(tmp_path):
    payload = {"b": [1, 2.5, None], "a": {"nested": "text", "flag": True}}
    path = tmp_path / "meta.json"
    write_json_atomic(path, payload)
    assert json.loads(path.read_text(encoding="utf-8")) == payload
    write_json_atomic(path, {"replaced": 1})
    assert json.loads(path.read_text(encoding="utf-8")) == {"replaced": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_write_parquet_atomic_round_trip(tmp_path):
    frame = pl.DataFrame({"user_id": [3, 1], "title": ["a", "b"]})
    path = tmp_path / "t.parquet"
    write_parquet_atomic(frame, path)
    assert pl.read_parquet(path).equals(frame)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 1 << 20])
def test_file_sha256_equals_hashlib(tmp_path, chunk_bytes):
    data = bytes(range(256)) * 37 + b"tail"
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=chunk_bytes) == hashlib.sha256(data).hexdigest()


def test_file_sha256_of_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert file_sha256(path) == hashlib.sha256(b"").hexdigest()


def test_combined_sha256_changes_when_either_file_changes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    base = combined_sha256([first, second])
    assert combined_sha256([first, second]) == base

    first.write_bytes(b"first!")
    changed_first = combined_sha256([first, second])
    assert changed_first != base

    first.write_bytes(b"first")
    second.write_bytes(b"second!")
    changed_second = combined_sha256([first, second])
    assert changed_second not in (base, changed_first)

    second.write_bytes(b"second")
    assert combined_sha256([first, second]) == base


def test_combined_sha256_depends_on_order(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    assert combined_sha256([first, second]) != combined_sha256([second, first])


def test_atomic_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    target = tmp_path / "artifact.json"
    write_json_atomic(target, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
