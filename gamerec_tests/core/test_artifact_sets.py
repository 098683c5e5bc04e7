"""Published sets: one folder per publish, one pointer switched atomically, rollback, verify.

Crashes are injected for real: a subprocess publishes with GAMEREC_TEST_CRASH_AT naming a
point of `publish_artifacts`, where it SIGKILLs itself; what readers see afterwards is
checked from this process.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from gamerec_assets import Recommender, cli
from gamerec_assets.core import publish as publish_module
from gamerec_assets.core.artifact_sets import (
    CRASH_ENV,
    CRASH_POINTS,
    READER_FILES,
    current_set_name,
    list_sets,
    rollback,
    verify_artifacts,
)
from gamerec_assets.core.io import DiskFullError
from gamerec_assets.core.manifest import (
    MANIFEST_FILE,
    SERVING_FILES,
    SETS_FOLDER,
    ArtifactSetError,
    read_verified_manifest,
    resolve_set,
)
from gamerec_assets.core.publish import publish_artifacts, staged_set_lineage
from gamerec_tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def staged(published_run, tmp_path_factory):
    """A staging folder of one run and its lineage, shared read-only by the tests here."""
    staging = shutil.copytree(
        published_run.artifacts / "staging", tmp_path_factory.mktemp("staged") / "staging"
    )
    return staging, staged_set_lineage(staging)


def publish(staged, folder, run_id: str, keep: int = 3) -> dict:
    staging, entries = staged
    return publish_artifacts(staging, folder, entries, run_id, "f" * 16, keep=keep)


def served_run(folder) -> str:
    return read_verified_manifest(folder)["run_id"]


def test_each_publish_is_a_new_set_and_the_seed_paths_follow_the_current_one(staged, tmp_path):
    folder = tmp_path / "artifacts"
    first = publish(staged, folder, "run-one")
    second = publish(staged, folder, "run-two")
    assert [s.run_id for s in list_sets(folder)] == ["run-one", "run-two"]
    assert current_set_name(folder) == second["set"] and first["set"] < second["set"]
    assert os.readlink(folder / "current") == f"{SETS_FOLDER}/{second['set']}"
    for name in READER_FILES:  # the seed's paths keep working, through `current`
        assert os.readlink(folder / name) == f"current/{name}"
    assert json.loads((folder / MANIFEST_FILE).read_text())["run_id"] == "run-two"
    staging = staged[0]
    assert (folder / "item_emb.npy").read_bytes() == (staging / "item_emb.npy").read_bytes()
    # each set has files of its own: editing one in place cannot damage another
    sets = folder / SETS_FOLDER
    old, new = sets / first["set"] / "two_tower.pt", sets / second["set"] / "two_tower.pt"
    assert old.read_bytes() == new.read_bytes() and not old.samefile(new)
    assert Recommender.load(folder).index.ntotal == np.load(folder / "item_emb.npy").shape[0]


def test_older_sets_are_pruned_beyond_keep_but_never_the_current_one(staged, tmp_path):
    folder = tmp_path / "artifacts"
    for run in ("a", "b", "c", "d"):
        publish(staged, folder, f"run-{run}", keep=2)
    assert [s.run_id for s in list_sets(folder)] == ["run-c", "run-d"]
    rollback(folder)  # serve run-c again; a new publish keeps it while it serves
    publish(staged, folder, "run-e", keep=1)
    assert [s.run_id for s in list_sets(folder)] == ["run-e"]
    assert served_run(folder) == "run-e"


def test_rollback_serves_the_previous_good_set_and_says_when_there_is_none(staged, tmp_path):
    folder = tmp_path / "artifacts"
    for run in ("a", "b", "c"):
        publish(staged, folder, f"run-{run}")
    names = [s.name for s in list_sets(folder)]
    (folder / SETS_FOLDER / names[1] / "metrics.json").write_text("{}")  # b is damaged
    before, now = rollback(folder)
    assert (before, now) == (names[2], names[0])  # b skipped: its files fail the manifest
    assert served_run(folder) == "run-a"
    with pytest.raises(ArtifactSetError, match="no set older than the current one"):
        rollback(folder)
    assert rollback(folder, to="run-c") == (names[0], names[2])
    with pytest.raises(ArtifactSetError, match="not rolling back to a damaged set: .*metrics"):
        rollback(folder, to=names[1])
    with pytest.raises(ArtifactSetError, match="no kept set"):
        rollback(folder, to="nothing-like-it")
    assert served_run(folder) == "run-c"


def test_rollback_command_lists_and_switches(staged, tmp_path, capsys):
    folder = tmp_path / "artifacts"
    publish(staged, folder, "run-a")
    publish(staged, folder, "run-b")
    assert cli.main(["rollback", "--list", "--artifacts", str(folder)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].startswith("*") and "run-b" in listing[1] and "run-a" in listing[2]
    assert cli.main(["rollback", "--artifacts", str(folder)]) == 0
    assert "serving set" in capsys.readouterr().out
    assert served_run(folder) == "run-a"
    assert cli.main(["rollback", "--artifacts", str(folder)]) == 2
    assert capsys.readouterr().err.startswith("gamerec rollback: ")


def test_a_folder_published_before_sets_existed_is_kept_as_the_first_set(staged, tmp_path):
    """The layout of earlier versions: the files and manifest.json side by side."""
    folder = tmp_path / "artifacts"
    publish(staged, tmp_path / "old", "run-old")
    flat = resolve_set(tmp_path / "old")
    folder.mkdir()
    for name in READER_FILES:
        shutil.copyfile(flat / name, folder / name)
    assert Recommender.load(folder).index.ntotal > 0  # still readable as it is
    publish(staged, folder, "run-new")
    assert [s.run_id for s in list_sets(folder)] == ["run-old", "run-new"]
    assert all((folder / name).is_symlink() for name in READER_FILES)
    rollback(folder)
    assert served_run(folder) == "run-old"


def test_a_full_disk_while_publishing_changes_nothing_published(staged, tmp_path, monkeypatch):
    folder = tmp_path / "artifacts"
    publish(staged, folder, "run-good")
    before = {name: (folder / name).read_bytes() for name in READER_FILES}
    original_copy = shutil.copyfile
    copies = []

    def copy_until_the_disk_fills(source, target, *args, **kwargs):
        copies.append(target)
        if len(copies) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return original_copy(source, target, *args, **kwargs)

    monkeypatch.setattr(publish_module.shutil, "copyfile", copy_until_the_disk_fills)
    with pytest.raises(DiskFullError) as caught:
        publish(staged, folder, "run-disk-full")
    message = str(caught.value)
    assert message.startswith(f"no space left on device writing {folder / SETS_FOLDER}/")
    assert "needed" in message and "free now" in message
    assert served_run(folder) == "run-good"
    assert {name: (folder / name).read_bytes() for name in READER_FILES} == before
    assert [s.run_id for s in list_sets(folder)] == ["run-good"]
    assert not list((folder / SETS_FOLDER).glob(".*.tmp"))


def test_a_set_that_cannot_fit_is_refused_before_anything_is_written(staged, tmp_path, monkeypatch):
    folder = tmp_path / "artifacts"
    monkeypatch.setattr("gamerec_assets.core.io.free_bytes", lambda folder: 1000)
    with pytest.raises(DiskFullError, match=r"for the serving set of run run-x in .*: [\d.]+ KiB"):
        publish(staged, folder, "run-x")
    assert not (folder / SETS_FOLDER).exists() and not (folder / "current").exists()


def test_concurrent_publishers_take_turns_and_each_set_is_whole(staged, tmp_path):
    folder = tmp_path / "artifacts"
    errors = []

    def publish_one(run):
        try:
            publish(staged, folder, run)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=publish_one, args=(f"run-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(s.run_id for s in list_sets(folder)) == ["run-0", "run-1", "run-2"]
    problems, _ = verify_artifacts(folder, every_set=True)
    assert problems == []


CRASH_SCRIPT = """
import sys
from pathlib import Path
from gamerec_assets.core.publish import publish_artifacts, staged_set_lineage
staging, folder = Path(sys.argv[1]), Path(sys.argv[2])
publish_artifacts(staging, folder, staged_set_lineage(staging), "run-killed", "f" * 16)
"""


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_9_at_any_point_of_publishing_leaves_a_whole_set_serving(staged, tmp_path, point):
    folder = tmp_path / "artifacts"
    publish(staged, folder, "run-before")
    killed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(staged[0]), str(folder)],
        cwd=REPO_ROOT,
        env={**os.environ, CRASH_ENV: point},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    expected = "run-killed" if point == "publish:after-switch" else "run-before"
    assert served_run(folder) == expected  # whole: every file matches that run's manifest
    assert verify_artifacts(folder)[0] == []
    recommender = Recommender.load(folder)
    assert len(recommender.similar(game_id=recommender.catalog["game_id"][0], k=3)) == 3
    leftovers = list((folder / SETS_FOLDER).glob(".*.tmp"))
    assert bool(leftovers) == (point == "publish:between-files")
    publish(staged, folder, "run-after")  # the next publish cleans up and goes ahead
    assert served_run(folder) == "run-after"
    assert not list((folder / SETS_FOLDER).glob(".*.tmp"))
    assert verify_artifacts(folder, every_set=True)[0] == []


# --- gamerec verify ------------------------------------------------------------------------


def test_verify_passes_a_good_set_and_names_each_problem_of_a_tampered_one(
    staged, tmp_path, capsys
):
    folder = tmp_path / "artifacts"
    publish(staged, folder, "run-a")
    assert cli.main(["verify", "--artifacts", str(folder)]) == 0
    assert "OK" in capsys.readouterr().out

    served = resolve_set(folder)
    metrics = json.loads((served / "metrics.json").read_text())
    metrics["recall@20"] = 0.99
    (served / "metrics.json").write_text(json.dumps(metrics))  # an edited metric
    checkpoint = bytearray((served / "two_tower.pt").read_bytes())
    checkpoint[len(checkpoint) // 2] ^= 0xFF
    (served / "two_tower.pt").write_bytes(bytes(checkpoint))  # one flipped byte
    (folder / "index.faiss").unlink()
    shutil.copyfile(served / "index.faiss", folder / "index.faiss")  # a copy, not the link

    assert cli.main(["verify", "--artifacts", str(folder)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{served}: two_tower.pt is not the file run run-a published")
    assert lines[1] == (
        f"{served}: metrics.json is not the file run run-a published (its SHA-256 differs "
        "from manifest.json: edited or replaced since)"
    )
    assert lines[2].startswith(f"{folder / 'index.faiss'}: not the link to current/index.faiss")
    assert lines[3] == f"{folder}: 3 problem(s) found"


def test_verify_names_a_truncated_manifest_and_a_pointer_to_nowhere(staged, tmp_path, capsys):
    folder = tmp_path / "artifacts"
    publish(staged, folder, "run-a")
    served = resolve_set(folder)
    manifest = served / MANIFEST_FILE
    manifest.write_bytes(manifest.read_bytes()[:100])
    assert cli.main(["verify", "--artifacts", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"{manifest}: not a readable manifest (truncated or edited" in out
    assert cli.main(["similar", "--game-id", "1", "--artifacts", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{manifest}: not a readable manifest" in err

    shutil.rmtree(served)
    assert cli.main(["verify", "--artifacts", str(folder)]) == 1
    assert "points to" in capsys.readouterr().out
    assert cli.main(["recommend", "--user", "1", "--artifacts", str(folder)]) == 2
    assert "which is not there; `gamerec rollback --list`" in capsys.readouterr().err


def test_verify_all_checks_every_kept_set(staged, tmp_path):
    folder = tmp_path / "artifacts"
    publish(staged, folder, "run-a")
    publish(staged, folder, "run-b")
    old = list_sets(folder)[0].path
    (old / "catalog.parquet").unlink()
    assert verify_artifacts(folder)[0] == []
    problems, summary = verify_artifacts(folder, every_set=True)
    assert problems == [f"{old.resolve()}: catalog.parquet is missing"]
    assert set(SERVING_FILES) <= set(json.loads((folder / MANIFEST_FILE).read_text())["files"])


def test_a_staged_file_that_changes_while_publishing_is_never_made_current(
    staged, tmp_path, monkeypatch
):
    folder = tmp_path / "artifacts"
    publish(staged, folder, "run-good")
    original_copy = shutil.copyfile

    def copy_a_file_another_run_just_rewrote(source, target, *args, **kwargs):
        original_copy(source, target, *args, **kwargs)
        if target.name == "index.json":
            target.write_text("{}")

    monkeypatch.setattr(publish_module.shutil, "copyfile", copy_a_file_another_run_just_rewrote)
    with pytest.raises(ArtifactSetError, match=r"index\.json changed while it was being published"):
        publish(staged, folder, "run-raced")
    assert served_run(folder) == "run-good"
    assert [s.run_id for s in list_sets(folder)] == ["run-good"]
