"""The variables a Dagster YAML file reads, and `gamerec materialize` naming the unset ones of
its instance in one line instead of Dagster's traceback per variable."""

import shutil

import pytest

from gamerec_assets.cli import main
from gamerec_assets.core.settings import SettingError
from gamerec_assets.instance_config import env_entries, require_instance_variables
from gamerec_tests.conftest import REPO_ROOT

DEPLOYMENT_INSTANCE = REPO_ROOT / "deploy" / "docker" / "dagster.yaml"
POSTGRES_VARIABLES = [
    "DAGSTER_POSTGRES_HOST",
    "DAGSTER_POSTGRES_PORT",
    "DAGSTER_POSTGRES_USER",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_POSTGRES_DB",
]


def test_env_entries_are_found_anywhere_in_order_and_once():
    config = {
        "storage": {"postgres": {"postgres_db": {"hostname": {"env": "HOST"}, "port": 5432}}},
        "load_from": [{"grpc_server": {"host": {"env": "HOST"}, "port": {"env": "PORT"}}}],
        "telemetry": {"enabled": False},
        "not_an_entry": {"env": "X", "other": 1},
    }
    assert env_entries(config) == ["HOST", "PORT"]
    assert env_entries(None) == []


@pytest.fixture
def deployment_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOYMENT_INSTANCE, home / "dagster.yaml")
    for name in POSTGRES_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no .env from the project folder
    return home


def test_the_unset_variables_are_named_and_the_set_ones_are_not(deployment_home):
    environ = {"DAGSTER_POSTGRES_HOST": "db", "DAGSTER_POSTGRES_PASSWORD": ""}
    with pytest.raises(SettingError) as raised:
        require_instance_variables(deployment_home, environ)
    message = str(raised.value)
    assert "\n" not in message
    assert "DAGSTER_POSTGRES_PORT, DAGSTER_POSTGRES_USER, DAGSTER_POSTGRES_DB" in message
    assert "HOST" not in message and "PASSWORD" not in message  # an empty value is a value
    require_instance_variables(deployment_home, dict.fromkeys(POSTGRES_VARIABLES, "x"))


def test_the_local_instance_and_a_missing_file_need_nothing(tmp_path):
    require_instance_variables(REPO_ROOT / "dagster_home", {})
    require_instance_variables(tmp_path, {})


def test_gamerec_materialize_says_which_connection_variables_are_missing(deployment_home, capsys):
    assert main(["materialize"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"gamerec materialize: DAGSTER_HOME={deployment_home}: dagster.yaml")
    assert ", ".join(POSTGRES_VARIABLES) in line
