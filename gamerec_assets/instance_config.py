"""The variables a Dagster YAML file reads with `{env: NAME}` (dagster.yaml, workspace.yaml).

The deployment's dagster.yaml (deploy/docker) reads its PostgreSQL connection this way;
Dagster itself reports an unset one with a long traceback per variable, so `gamerec
materialize` checks them first and names them all in one line.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gamerec_assets.core.settings import SettingError

INSTANCE_FILE = "dagster.yaml"


def env_entries(config: Any) -> list[str]:
    """Every NAME in `{env: NAME}` anywhere in a loaded YAML document, in order, once."""
    if isinstance(config, Mapping):
        if set(config) == {"env"} and isinstance(config["env"], str):
            return [config["env"]]
        found = [name for value in config.values() for name in env_entries(value)]
    elif isinstance(config, list):
        found = [name for value in config for name in env_entries(value)]
    else:
        return []
    return list(dict.fromkeys(found))


def require_instance_variables(home: Path, environ: Mapping[str, str] | None = None) -> None:
    """Raise `SettingError` naming every variable `home/dagster.yaml` reads that is unset."""
    environ = os.environ if environ is None else environ
    path = home / INSTANCE_FILE
    if not path.is_file():
        return
    wanted = env_entries(yaml.safe_load(path.read_text()))
    missing = [name for name in wanted if name not in environ]
    if missing:
        raise SettingError(
            f"DAGSTER_HOME={home}: {INSTANCE_FILE} needs {', '.join(missing)} set in the "
            "environment (for deploy/docker/dagster.yaml: the PostgreSQL connection, see "
            "docs/deployment.md)"
        )
