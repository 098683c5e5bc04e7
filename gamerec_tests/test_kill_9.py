"""kill -9 of `gamerec materialize`, as an operator or the out-of-memory killer does it: no
training process survives its run, serving goes on from a whole set, and the next command
tells the truth about the killed run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gamerec_assets import Recommender
from gamerec_assets.core.artifact_sets import CRASH_ENV, list_sets, verify_artifacts
from gamerec_assets.core.manifest import read_verified_manifest
from gamerec_tests.conftest import REPO_ROOT, project_environment

GAMEREC = [sys.executable, "-m", "gamerec_assets.cli"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc")


def processes_mentioning(text: str) -> list[int]:
    """Live processes (not zombies) whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # ended meanwhile
    return found


def gamerec(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GAMEREC, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_kill_9_leaves_no_worker_alive_serving_whole_and_the_run_marked_failed(tmp_path):
    env = {**os.environ, **project_environment(tmp_path), "GAMEREC_EASE_BASELINE": "false"}
    artifacts = tmp_path / "artifacts"
    first = gamerec(env, "materialize")
    assert first.returncode == 0, first.stderr[-3000:]
    published = read_verified_manifest(artifacts)["run_id"]

    # 1. a two-process torchrun job: kill -9 the run itself, not its process group
    job_file = str(artifacts / "staging" / "training_job.json")
    training = {**env, "TRAIN_NPROC": "2", "LR": "0.02", "TRAIN_EPOCHS": "30"}
    run = subprocess.Popen(
        [*GAMEREC, "materialize"],
        cwd=REPO_ROOT,
        env=training,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while len(processes_mentioning(job_file)) < 3:  # the launcher and two workers
            assert run.poll() is None, "the run ended before its workers started"
            assert time.monotonic() < deadline, "no torchrun workers within 300 s"
            time.sleep(0.2)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 15
        while processes_mentioning(job_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = processes_mentioning(job_file)
        assert survivors == [], f"processes of the killed run still alive: {survivors}"
    finally:
        for pid in processes_mentioning(job_file):
            os.kill(pid, signal.SIGKILL)
    assert read_verified_manifest(artifacts)["run_id"] == published  # serving untouched

    # 2. killed while publishing, just before the switch: the old set serves, whole
    crashing = {**env, CRASH_ENV: "publish:before-switch"}
    killed = gamerec(crashing, "materialize", "--all", "--select", "serving_set")
    assert killed.returncode == -signal.SIGKILL
    assert_marked_failed(killed.stdout)  # the run killed in training, found on the next start
    assert read_verified_manifest(artifacts)["run_id"] == published
    assert verify_artifacts(artifacts)[0] == []
    assert len(list_sets(artifacts)) == 2  # the killed publisher's set, complete, not current
    recommender = Recommender.load(artifacts)
    assert len(recommender.similar(game_id=recommender.catalog["game_id"][0], k=3)) == 3

    # 3. the next command marks the run killed while publishing failed too, once
    check = gamerec(env, "materialize", "--dry-run")
    assert check.returncode == 0, check.stderr[-3000:]
    assert_marked_failed(check.stdout)
    assert "Nothing to materialize" in check.stdout
    again = gamerec(env, "materialize", "--dry-run")
    assert "marked failed" not in again.stdout


def assert_marked_failed(output: str) -> None:
    marked = [line for line in output.splitlines() if "marked failed" in line]
    assert len(marked) == 1, output
    assert " was left STARTED: its process (pid " in marked[0]
    assert marked[0].endswith(
        "is gone, killed before the run ended; marked failed by the next gamerec materialize"
    )
