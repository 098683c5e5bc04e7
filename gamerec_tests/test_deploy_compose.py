"""deploy/docker checked statically: no Docker engine runs here, so neither the image build nor
`docker compose up` is tested (test_deployment.py runs the services' commands without Docker).
What is checked: the compose file parses (and passes `docker-compose config` where installed),
each service's command is installed by the image's `pip install` of the project, and every
variable the Dagster files read is given to the services that read them, as is every setting."""

import os
import re
import shutil
import subprocess
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement

from gamerec_assets.core.settings import env_variables
from gamerec_assets.instance_config import env_entries
from gamerec_tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "docker"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DAGSTER_SERVICES = ("gamerec_code", "dagster_webserver", "dagster_daemon")
INSTANCE_VARIABLES = env_entries(yaml.safe_load((DEPLOY / "dagster.yaml").read_text()))
WORKSPACE_VARIABLES = env_entries(yaml.safe_load((DEPLOY / "workspace.yaml").read_text()))
FIXED_PATHS = {"DATA_DIR": "/app/data", "ARTIFACTS_DIR": "/app/artifacts"}
IMAGE_WORKDIR = "/app"


def installed_scripts(distribution: str = "gamerec") -> set[str]:
    """The console scripts that installing `distribution` installs: its own and those of
    everything it requires, transitively (what `pip install .` puts on the image's PATH)."""
    seen: set[str] = set()
    pending = [distribution]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name.lower())
    return {
        script.name
        for script in metadata.entry_points(group="console_scripts")
        if script.dist is not None and script.dist.name.lower() in seen
    }


def environment(service: str) -> dict[str, str]:
    return {name: str(value) for name, value in SERVICES[service]["environment"].items()}


def test_the_services_of_dagsters_docker_deployment():
    assert set(SERVICES) == {"postgresql", *DAGSTER_SERVICES}
    assert SERVICES["postgresql"]["image"].startswith("postgres:")
    images = {SERVICES[name]["image"] for name in DAGSTER_SERVICES}
    assert images == {"gamerec:latest"}  # one image, built once by the code server's service
    assert SERVICES["gamerec_code"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (DEPLOY / SERVICES["gamerec_code"]["build"]["context"]).resolve() == REPO_ROOT


def test_every_command_is_installed_by_the_image():
    scripts = installed_scripts()
    commands = {name: SERVICES[name]["command"] for name in DAGSTER_SERVICES}
    commands["gamerec_code healthcheck"] = SERVICES["gamerec_code"]["healthcheck"]["test"][1:]
    for service, command in commands.items():
        assert command[0] in scripts, f"{service}: {command[0]} is not installed by the project"
    code_server = SERVICES["gamerec_code"]["command"]
    assert code_server[:3] == ["dagster", "code-server", "start"]
    assert code_server[code_server.index("-m") + 1] == "gamerec_assets.definitions"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd and yaml.safe_load(cmd.group(1)) == code_server  # the image runs the same


def test_the_image_holds_the_files_the_commands_read():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"WORKDIR {IMAGE_WORKDIR}" in dockerfile
    assert "-c constraints.txt" in dockerfile  # the pinned versions, torch included
    for name in ("dagster_webserver", "dagster_daemon"):
        command = SERVICES[name]["command"]
        workspace = command[command.index("-w") + 1]
        assert (REPO_ROOT / workspace).resolve() == DEPLOY / "workspace.yaml", name
        assert f"COPY {workspace} ./{workspace}" in dockerfile  # same path under WORKDIR
    assert "COPY deploy/docker/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in dockerfile
    # .dockerignore ignores everything but what is let through: each file the image copies
    rules = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    let_through = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = [
        source
        for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert len(copied) == 6 and set(copied) <= let_through, copied


def test_every_variable_the_dagster_files_read_is_set_for_each_service():
    assert set(INSTANCE_VARIABLES) == {
        f"DAGSTER_POSTGRES_{part}" for part in ("HOST", "PORT", "USER", "PASSWORD", "DB")
    }
    for name in DAGSTER_SERVICES:
        given = environment(name)
        missing = set(INSTANCE_VARIABLES + WORKSPACE_VARIABLES) - set(given)
        assert not missing, f"{name} lacks {missing}"
    dagster = environment("dagster_daemon")
    assert dagster["DAGSTER_POSTGRES_HOST"] in SERVICES  # the database service
    assert dagster["GAMEREC_CODE_SERVER_HOST"] in SERVICES
    code_server = SERVICES["gamerec_code"]["command"]
    assert code_server[code_server.index("-p") + 1] == dagster["GAMEREC_CODE_SERVER_PORT"]
    database = environment("postgresql")
    for part in ("USER", "PASSWORD", "DB"):  # the database is created as the instance reads it
        assert database[f"POSTGRES_{part}"] == dagster[f"DAGSTER_POSTGRES_{part}"]


def test_the_code_server_gets_every_setting_and_nothing_unknown():
    given = environment("gamerec_code")
    settings = set(env_variables())
    unknown = set(given) - settings - set(INSTANCE_VARIABLES) - set(WORKSPACE_VARIABLES)
    assert not unknown, f"not a setting nor read by the Dagster files: {unknown}"
    assert settings <= set(given), f"settings not passed through: {settings - set(given)}"
    for name in settings - set(FIXED_PATHS):
        assert given[name] == f"${{{name}:-}}", f"{name} is not passed through as is"
    assert {name: given[name] for name in FIXED_PATHS} == FIXED_PATHS
    volumes = SERVICES["gamerec_code"]["volumes"]
    assert {"./data:/app/data", "./artifacts:/app/artifacts"} <= set(volumes)
    for name in ("dagster_webserver", "dagster_daemon"):  # no settings where no code runs
        assert not settings & set(environment(name)), name


def compose_tool() -> list[str] | None:
    """`docker compose` (v2) where it works without an engine, else Debian's docker-compose."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


COMPOSE_TOOL = compose_tool()


@pytest.mark.skipif(
    COMPOSE_TOOL is None,
    reason="neither `docker compose` nor docker-compose here (Debian: apt-get install "
    "docker-compose; .ci/run installs it)",
)
def test_docker_compose_config_accepts_the_file_and_requires_a_password(tmp_path):
    base = {key: value for key, value in os.environ.items() if not key.startswith("DAGSTER_")}
    no_env_file = tmp_path / "empty.env"  # not deploy/docker/.env, which may hold a password
    no_env_file.write_text("")
    compose_file = str(DEPLOY / "docker-compose.yml")
    command = [*COMPOSE_TOOL, "-f", compose_file, "--env-file", str(no_env_file), "config"]
    resolved = subprocess.run(
        command,
        env={**base, "DAGSTER_POSTGRES_PASSWORD": "from-the-environment", "LR": "0.01"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resolved.returncode == 0, resolved.stderr
    config = yaml.safe_load(resolved.stdout)
    code_env = config["services"]["gamerec_code"]["environment"]
    assert code_env["DAGSTER_POSTGRES_PASSWORD"] == "from-the-environment"
    assert code_env["LR"] == "0.01" and code_env["TRAIN_EPOCHS"] == ""  # empty: the default

    without = subprocess.run(command, env=base, capture_output=True, text=True, timeout=120)
    assert without.returncode != 0
    assert "set DAGSTER_POSTGRES_PASSWORD" in without.stderr
