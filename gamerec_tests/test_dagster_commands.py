"""The documented `dg` commands, run as a user runs them, in a persistent DAGSTER_HOME."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from gamerec_tests.conftest import REPO_ROOT, STEAM_200K, project_environment, requires_steam_200k

DG = shutil.which("dg", path=str(Path(sys.executable).parent)) or "dg"


def run_dg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DG, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    return {**os.environ, **project_environment(tmp_path)}


def materialize(env: dict[str, str], selection: str) -> subprocess.CompletedProcess:
    return run_dg(env, "launch", "--assets", selection)


def test_materialize_everything_then_the_index_alone(cli_env, tmp_path):
    full = materialize(cli_env, "*")
    assert full.returncode == 0, full.stderr[-3000:]
    assert "Warning" not in full.stderr  # nothing superseded, nothing in beta
    artifacts = tmp_path / "artifacts"
    for name in ("item_emb.npy", "index.faiss", "metrics.json", "two_tower.pt", "catalog.parquet"):
        assert (artifacts / name).stat().st_size > 0
    assert json.loads((artifacts / "metrics.json").read_text())["n_eval_users"] > 0
    checkpoint = (artifacts / "two_tower.pt").read_bytes()
    (artifacts / "index.faiss").unlink()  # the link to the current set's index

    index_only = materialize(cli_env, "faiss_index+")  # the index and publishing
    assert index_only.returncode == 0, index_only.stderr[-3000:]
    assert (artifacts / "index.faiss").exists()  # a new set, and the link again
    assert (artifacts / "two_tower.pt").read_bytes() == checkpoint  # the model as it was
    assert "two_tower_checkpoint - STEP_START" not in index_only.stderr


def test_bad_input_fails_the_command(cli_env, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,game_id,play_time_hours\n1,10,2.0\n1,11,-3.0\n2,10,1.0\n2,11,4.0\n")
    env = {**cli_env, "GAMEREC_SOURCE": "interactions", "GAMEREC_SOURCE_PATH": str(bad)}
    result = materialize(env, "*")
    assert result.returncode != 0
    assert (
        "data row 2 (line 3), column play_time_hours: expected a finite number >= 0"
        in result.stderr
    )
    assert not (tmp_path / "artifacts" / "two_tower.pt").exists()


@requires_steam_200k
def test_materialize_on_steam_200k(cli_env, tmp_path):
    env = {
        **cli_env,
        "GAMEREC_SOURCE": "steam200k",
        "GAMEREC_SOURCE_PATH": str(STEAM_200K),
        "TRAIN_EPOCHS": "1",
        "BATCH_SIZE": "1024",
        "GAMEREC_EASE_BASELINE": "false",
    }
    full = materialize(env, "*")
    assert full.returncode == 0, full.stderr[-3000:]
    metrics = json.loads((tmp_path / "artifacts" / "metrics.json").read_text())
    assert metrics["n_eval_users"] == 6_693
    index_only = materialize(env, "faiss_index+")
    assert index_only.returncode == 0, index_only.stderr[-3000:]


def test_training_killed_with_sigkill_leaves_no_partial_file_and_the_rerun_resumes(
    cli_env, tmp_path
):
    """SIGKILL in the middle of training: nothing half-written is left under a real name, and
    the same command resumes from the last completed epoch, says so, and finishes cleanly."""
    # no search: training then selects its own length, the phase killed here
    env = {**cli_env, "TRAIN_EPOCHS": "40", "BATCH_SIZE": "64", "GAMEREC_TUNE_TRIALS": "0"}
    artifacts = tmp_path / "artifacts"
    state = artifacts / "staging" / "training_state"
    command = [DG, "launch", "--assets", "*"]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so the kill reaches every child
    )
    try:
        deadline = time.monotonic() + 300
        while not (state / "tune.pt").exists():
            assert process.poll() is None, "the run ended before the first epoch was saved"
            assert time.monotonic() < deadline, "no epoch checkpoint within 300 s"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (artifacts / "two_tower.pt").exists()  # killed before training finished
    saved = torch.load(state / "tune.pt", weights_only=True)
    epoch = saved["periods"]  # a period is an epoch on data this small
    assert 1 <= epoch < 40
    for path in artifacts.rglob("*"):  # every file under a real name is complete
        if path.suffix == ".parquet":
            pl.read_parquet(path)

    rerun = materialize(env, "*")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from the epoch checkpoint" in rerun.stderr
    assert f"tune epoch {epoch}:" not in rerun.stderr  # that epoch was not redone
    assert f"tune epoch {epoch + 1}:" in rerun.stderr
    assert not state.exists()  # removed once the checkpoint is in
    leftovers = [p for p in tmp_path.rglob("*.tmp")]
    assert leftovers == []
    checkpoint = torch.load(artifacts / "two_tower.pt", weights_only=True)
    assert checkpoint["best_epoch"] >= 1 and len(checkpoint["tuning_ndcg"]) > epoch
