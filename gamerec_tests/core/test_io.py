import errno
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
    DiskFullError,
    atomic_dir,
    atomic_path,
    combined_sha256,
    file_sha256,
    human_bytes,
    on_disk,
    remove_stale_temporaries_in,
    require_space,
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


# --- a full disk ---------------------------------------------------------------------------


def test_a_full_disk_says_so_naming_the_path_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "two_tower.pt"
    target.write_bytes(b"the good checkpoint")
    with pytest.raises(DiskFullError) as caught:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 5000)
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(caught.value)
    assert message.startswith(f"no space left on device writing {target}: more than the 4.9 KiB")
    assert "free now" in message and "\n" not in message
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"the good checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two_tower.pt"]


def test_torchs_write_failure_on_a_full_disk_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """torch.save on a full disk raises RuntimeError without an errno; almost no free space
    left is what tells it apart."""
    torch_message = "[enforce fail at inline_container.cc:672] . unexpected pos 9920 vs 9808"
    monkeypatch.setattr(io_module, "free_bytes", lambda folder: 4096)
    with pytest.raises(DiskFullError, match=r"no space left on device writing .*model\.pt: "):
        with atomic_path(tmp_path / "model.pt", needed=10 << 20):
            raise RuntimeError(torch_message)
    monkeypatch.setattr(io_module, "free_bytes", lambda folder: 10 << 30)
    with pytest.raises(RuntimeError, match="inline_container"):  # plenty of space: not that
        with atomic_path(tmp_path / "model.pt"):
            raise RuntimeError(torch_message)


def test_a_full_disk_reported_in_words_only_is_recognised(tmp_path):
    with pytest.raises(DiskFullError, match="no space left on device writing .*t.parquet"):
        with atomic_path(tmp_path / "t.parquet"):
            raise pl.exceptions.ComputeError("No space left on device (os error 28)")


def test_require_space_refuses_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(io_module, "free_bytes", lambda folder: 1 << 20)
    with pytest.raises(DiskFullError) as caught:
        require_space(tmp_path, 3 << 20, "the serving set")
    assert str(caught.value) == (
        f"no space left on device for the serving set in {tmp_path}: 3.0 MiB needed, "
        "1.0 MiB free; free some space and run again (nothing was changed)"
    )
    require_space(tmp_path, 1 << 19, "the serving set")


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 << 20, 3 << 30, 2 << 40)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
        "2.0 TiB",
    ]


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"data is a file, not a folder"):
        write_json_atomic(tmp_path / "data" / "x.json", {})
    with pytest.raises(NotADirectoryError) as caught:  # deeper: the file is still the one named
        write_json_atomic(tmp_path / "data" / "staging" / "x.json", {})
    assert str(caught.value).endswith(f"{tmp_path / 'data'} is a file, not a folder")


def test_what_a_file_takes_on_disk_is_whole_blocks_and_one_more():
    assert [on_disk(n) for n in (0, 1, 4096, 4097)] == [4096, 8192, 8192, 12288]


# --- folders -------------------------------------------------------------------------------


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sets" / "one"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("half")
            raise RuntimeError("killed half way")
    assert not target.exists() and list((tmp_path / "sets").iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("whole")
        assert not target.exists()
    assert (target / "a").read_text() == "whole"
    assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == ["one"]


def test_temporary_folders_of_dead_writers_are_removed_whatever_their_name(tmp_path):
    host = io_module._HOST
    dead = tmp_path / f".2026-set.v1.{host}-{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".other.{host}-{os.getpid()}.def456.tmp"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "file").write_text("partial")
    assert remove_stale_temporaries_in(tmp_path) == [dead]
    assert not dead.exists() and live.exists()
