"""The documented `dagster` commands, run as a user runs them, in a persistent DAGSTER_HOME."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gamerec_tests.conftest import REPO_ROOT, STEAM_200K, project_environment, requires_steam_200k

DAGSTER = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"


def run_dagster(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DAGSTER, *args],
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
    return run_dagster(
        env, "asset", "materialize", "-m", "gamerec_assets.definitions", "--select", selection
    )


def test_materialize_everything_then_the_index_alone(cli_env, tmp_path):
    full = materialize(cli_env, "*")
    assert full.returncode == 0, full.stderr[-3000:]
    artifacts = tmp_path / "artifacts"
    for name in ("item_emb.npy", "index.faiss", "metrics.json", "two_tower.pt", "catalog.parquet"):
        assert (artifacts / name).stat().st_size > 0
    assert json.loads((artifacts / "metrics.json").read_text())["n_eval_users"] > 0
    checkpoint_mtime = (artifacts / "two_tower.pt").stat().st_mtime_ns
    (artifacts / "index.faiss").unlink()

    index_only = materialize(cli_env, "faiss_index")
    assert index_only.returncode == 0, index_only.stderr[-3000:]
    assert (artifacts / "index.faiss").exists()
    assert (artifacts / "two_tower.pt").stat().st_mtime_ns == checkpoint_mtime
    assert "two_tower_checkpoint - STEP_START" not in index_only.stderr


def test_a_failed_blocking_check_fails_the_command(cli_env, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,game_id,play_time_hours\n1,10,2.0\n1,11,-3.0\n2,10,1.0\n2,11,4.0\n")
    env = {**cli_env, "GAMEREC_SOURCE": "interactions", "GAMEREC_SOURCE_PATH": str(bad)}
    result = materialize(env, "*")
    assert result.returncode != 0
    assert "interactions_hours_valid" in result.stderr
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
    index_only = materialize(env, "faiss_index")
    assert index_only.returncode == 0, index_only.stderr[-3000:]
