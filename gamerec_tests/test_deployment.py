"""The deployment of deploy/docker, without Docker: a real PostgreSQL server in a temporary
folder, the deployment's very dagster.yaml and workspace.yaml, and the commands
docker-compose.yml gives its services (code server, webserver, daemon), each in its own
process group on free loopback ports. Runs go through the webserver's GraphQL API, as the UI
sends them, and the daemon's queue; history is read back from the database and through
GraphQL after the webserver and the daemon restart.

The tests share one deployment and run in order: the graph, the restart, the sensor, two runs
at once, then `gamerec materialize` against the same database.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import yaml

from gamerec_assets.assets.tuning import TRAINING_POOL
from gamerec_assets.core.settings import Source, settings_from_env
from gamerec_assets.core.sources import synthetic_spec
from gamerec_assets.core.synthetic import generate_synthetic_interactions
from gamerec_assets.definitions import defs
from gamerec_assets.retraining import GRAPH_JOB, INPUT_SENSOR
from gamerec_tests.conftest import ALL_ASSETS, REPO_ROOT, project_environment, write_source
from gamerec_tests.postgres import NO_SERVER, server_bin_dir, start_postgres
from gamerec_tests.services import Service, wait_for
from gamerec_tests.test_dagster_dev import LAUNCH_RUN, REPOSITORIES, Webserver, free_port

DEPLOY = REPO_ROOT / "deploy" / "docker"
VENV_BIN = Path(sys.executable).parent
POSTGRES_BIN = server_bin_dir()
pytestmark = pytest.mark.skipif(POSTGRES_BIN is None, reason=NO_SERVER)

STARTUP_SECONDS = 240
RUN_SECONDS = 600
SENSOR_SECONDS = 3  # GAMEREC_INPUT_CHECK_SECONDS for the test
GRAPH = ["raw_interactions", *ALL_ASSETS]
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
CHECKS = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
DAEMONS = {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "MONITORING"}

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status startTime endTime jobName tags { key value } }
  }
}
"""
RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { ... on Runs { results { runId status jobName } } }
}
"""
DAEMON_HEALTH = """
query { instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }
"""
SENSOR = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      minIntervalSeconds
      sensorState { id status ticks(limit: 100) { status runIds skipReason error { message } } }
    }
  }
}
"""
RELOAD_LOCATION = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry { loadStatus locationOrLoadError { __typename } }
    ... on PythonError { message }
  }
}
"""
START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""
STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""


def compose_command(service: str, port: int | None = None) -> list[str]:
    """The command docker-compose.yml gives a service, on loopback and the given port; the
    executable from this virtual environment, which is what the image's pip install puts on
    its PATH."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    command = list(compose["services"][service]["command"])
    for i, token in enumerate(command):
        if token == "0.0.0.0":
            command[i] = "127.0.0.1"
        elif command[i - 1] in ("-p", "--port") and port is not None:
            command[i] = str(port)
    return [str(VENV_BIN / command[0]), *command[1:]]


class Deployment:
    """The three Dagster services over one PostgreSQL; the webserver's GraphQL API."""

    def __init__(self, folder: Path, postgres_env: dict[str, str]) -> None:
        self.folder = folder
        settings = project_environment(folder)  # small, fast training; its own folders
        # the synthetic data those settings describe, as the deployment's input file
        source = Source(**settings_from_env(Source, settings))
        self.synthetic = generate_synthetic_interactions(synthetic_spec(source))
        self.input = folder / "interactions.csv"
        write_source(self.input, frame=self.synthetic)
        home = Path(settings["DAGSTER_HOME"])
        shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")  # the deployment's own
        code_port = free_port()
        self.dagster_env = {
            **os.environ,
            **postgres_env,
            "DAGSTER_HOME": str(home),
            "GAMEREC_CODE_SERVER_HOST": "127.0.0.1",
            "GAMEREC_CODE_SERVER_PORT": str(code_port),
        }
        self.code_env = {
            **self.dagster_env,
            **settings,
            "GAMEREC_SOURCE": "interactions",
            "GAMEREC_SOURCE_PATH": str(self.input),
            "GAMEREC_INPUT_CHECK_SECONDS": str(SENSOR_SECONDS),
            "GAMEREC_DEVICE": "cpu",
        }
        self.code_server = self._service(
            "gamerec_code", compose_command("gamerec_code", code_port), self.code_env
        )
        self.webserver_service: Service | None = None
        self.daemon: Service | None = None
        self.webserver: Webserver | None = None

    def _service(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        return Service(name, argv, env, cwd=REPO_ROOT, log_dir=self.folder)

    @property
    def services(self) -> list[Service]:
        return [s for s in (self.code_server, self.webserver_service, self.daemon) if s]

    def start(self) -> None:
        self.start_code_server()
        self.start_webserver_and_daemon()

    def start_code_server(self) -> None:
        """Start it, and wait until it answers its health check (the compose healthcheck)."""
        self.code_server.start()
        port = self.code_env["GAMEREC_CODE_SERVER_PORT"]
        health = [str(VENV_BIN / "dagster"), "api", "grpc-health-check", "-p", port]
        wait_for(
            "the code server to answer",
            lambda: subprocess.run(health, capture_output=True).returncode == 0 or None,
            STARTUP_SECONDS,
            [self.code_server],
            interval=2,
        )

    def start_webserver_and_daemon(self) -> None:
        port = free_port()
        command = compose_command("dagster_webserver", port)
        self.webserver_service = self._service("dagster_webserver", command, self.dagster_env)
        daemon_command = compose_command("dagster_daemon")
        self.daemon = self._service("dagster_daemon", daemon_command, self.dagster_env)
        self.webserver_service.start()
        self.daemon.start()
        self.webserver = Webserver(f"http://127.0.0.1:{port}")
        self.wait(
            "the webserver to load the code location",
            lambda: self.webserver.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"] or None,
            STARTUP_SECONDS,
        )
        self.wait("every daemon to be healthy", self.daemons_healthy, STARTUP_SECONDS)

    def stop_webserver_and_daemon(self) -> None:
        for service in (self.webserver_service, self.daemon):
            if service:
                service.stop()

    def stop(self) -> None:
        for service in self.services:
            service.stop()

    def wait(self, what: str, found, timeout: float = RUN_SECONDS, interval: float = 1.0):
        return wait_for(
            what,
            found,
            timeout,
            self.services,
            interval,
            retry_on=(urllib.error.URLError, ConnectionError, TimeoutError),
        )

    def daemons_healthy(self) -> bool | None:
        statuses = self.webserver.graphql(DAEMON_HEALTH)["instance"]["daemonHealth"]
        healthy = {s["daemonType"] for s in statuses["allDaemonStatuses"] if s["healthy"]}
        return DAEMONS <= healthy or None

    def run(self, run_id: str) -> dict:
        return self.webserver.graphql(RUN, runId=run_id)["runOrError"]

    def wait_finished(self, run_id: str) -> dict:
        def finished() -> dict | None:
            run = self.run(run_id)
            return run if run["status"] in FINISHED else None

        return self.wait(f"run {run_id} to finish", finished)

    def repository(self) -> dict[str, str]:
        (repository,) = self.webserver.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
        return {
            "repositoryLocationName": repository["location"]["name"],
            "repositoryName": repository["name"],
        }

    def launch_job(self, job: str) -> str:
        selector = {**self.repository(), "jobName": job}
        launched = self.webserver.graphql(LAUNCH_RUN, executionParams={"selector": selector})
        assert launched["launchRun"]["__typename"] == "LaunchRunSuccess", launched
        return launched["launchRun"]["run"]["runId"]

    def sensor_selector(self) -> dict[str, str]:
        return {**self.repository(), "sensorName": INPUT_SENSOR}

    def sensor(self) -> dict:
        found = self.webserver.graphql(SENSOR, selector=self.sensor_selector())["sensorOrError"]
        assert found["__typename"] == "Sensor", found
        return found

    def runs(self, **filters) -> list[dict]:
        return self.webserver.graphql(RUNS, filter=filters)["runsOrError"]["results"]


@pytest.fixture(scope="module")
def postgres():
    server = start_postgres(POSTGRES_BIN)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployment(postgres, tmp_path_factory):
    deployment = Deployment(tmp_path_factory.mktemp("deployment"), postgres.dagster_env())
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def graph_run(deployment) -> str:
    """The whole graph, launched as the UI's "Materialize all" launches it."""
    run_id = deployment.webserver.launch(GRAPH)
    run = deployment.wait_finished(run_id)
    assert run["status"] == "SUCCESS", "\n".join(s.log_tail() for s in deployment.services)
    return run_id


def test_the_graph_run_its_materializations_and_checks_are_rows_in_postgres(postgres, graph_run):
    (status,) = postgres.query("SELECT status FROM runs WHERE run_id = %s", graph_run)[0]
    assert status == "SUCCESS"
    materialized = {
        row[0]
        for row in postgres.query(
            "SELECT asset_key FROM event_logs WHERE run_id = %s "
            "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            graph_run,
        )
    }
    assert materialized == {f'["{name}"]' for name in GRAPH}
    checks = dict(
        postgres.query(
            "SELECT check_name, execution_status FROM asset_check_executions WHERE run_id = %s",
            graph_run,
        )
    )
    assert checks == dict.fromkeys(CHECKS, "SUCCEEDED")


def test_history_survives_restarting_every_service(deployment, graph_run):
    deployment.stop_webserver_and_daemon()
    deployment.start_webserver_and_daemon()  # new processes, new port, same database
    deployment.code_server.stop()  # a code upgrade: the code server alone is replaced
    deployment.start_code_server()
    reloaded = deployment.webserver.graphql(RELOAD_LOCATION, name="gamerec")
    assert reloaded["reloadRepositoryLocation"]["loadStatus"] == "LOADED", reloaded

    run = deployment.run(graph_run)
    assert (run["status"], run["jobName"]) == ("SUCCESS", "__ASSET_JOB")
    for asset in ("interactions", "two_tower_checkpoint", "serving_set"):
        run_id, _ = deployment.webserver.latest_metadata(asset)
        assert run_id == graph_run, asset
    gate = deployment.webserver.checks("eval_metrics")["model_beats_popularity"]
    latest = gate["executionForLatestMaterialization"]
    assert (latest["runId"], latest["status"]) == (graph_run, "SUCCEEDED")


def test_the_sensor_starts_one_run_for_a_changed_input_and_none_for_an_unchanged_one(
    deployment, graph_run
):
    sensor = deployment.sensor()
    assert sensor["minIntervalSeconds"] == SENSOR_SECONDS
    assert sensor["sensorState"]["status"] == "STOPPED"  # off by default
    started = deployment.webserver.graphql(START_SENSOR, selector=deployment.sensor_selector())
    assert started["startSensor"]["__typename"] == "Sensor", started
    state_id = deployment.sensor()["sensorState"]["id"]

    def ticks(status: str) -> list[dict]:
        return [t for t in deployment.sensor()["sensorState"]["ticks"] if t["status"] == status]

    try:
        # the input the graph was built from: the sensor looks, and starts nothing
        deployment.wait("two skipped sensor ticks", lambda: len(ticks("SKIPPED")) >= 2 or None)
        assert not ticks("SUCCESS") and not ticks("FAILURE"), deployment.sensor()
        assert not deployment.runs(tags=[{"key": "dagster/sensor_name", "value": INPUT_SENSOR}])

        write_source(deployment.input, 3.0, deployment.synthetic)  # edited in place
        (tick,) = deployment.wait("a sensor tick with a run", lambda: ticks("SUCCESS") or None)
        (run_id,) = tick["runIds"]
        run = deployment.wait_finished(run_id)
        assert (run["status"], run["jobName"]) == ("SUCCESS", GRAPH_JOB)
        skipped_after = len(ticks("SKIPPED")) + 2
        deployment.wait(
            "two more skipped ticks", lambda: len(ticks("SKIPPED")) >= skipped_after or None
        )
    finally:
        deployment.webserver.graphql(STOP_SENSOR, id=state_id)
    by_sensor = deployment.runs(tags=[{"key": "dagster/sensor_name", "value": INPUT_SENSOR}])
    assert [r["runId"] for r in by_sensor] == [run_id]
    assert len(ticks("SUCCESS")) == 1 and not ticks("FAILURE")
    run_id_now, _ = deployment.webserver.latest_metadata("interactions")
    assert run_id_now == run_id  # the new input was ingested by that run


def test_two_graph_runs_at_once_the_second_waits_in_the_queue(deployment, postgres, graph_run):
    """One through the job, one as the UI's "Materialize all" (no tags): the training pool
    holds either back while the other runs."""
    first = deployment.launch_job(GRAPH_JOB)
    second = deployment.webserver.launch(GRAPH)
    seen_waiting = set()
    deadline = time.monotonic() + 2 * RUN_SECONDS
    while True:
        statuses = {run_id: deployment.run(run_id)["status"] for run_id in (first, second)}
        assert time.monotonic() < deadline, f"the two runs did not finish: {statuses}"
        if statuses[first] == "STARTED" and statuses[second] == "QUEUED":
            seen_waiting.add(second)
        if statuses[second] == "STARTED" and statuses[first] == "QUEUED":
            seen_waiting.add(first)
        assert set(statuses.values()) != {"STARTED"}, f"both ran at once: {statuses}"
        if all(status in FINISHED for status in statuses.values()):
            break
        time.sleep(0.5)
    assert statuses == {first: "SUCCESS", second: "SUCCESS"}
    assert seen_waiting, "neither run was seen waiting in the queue while the other ran"
    ((earlier_end, later_start),) = postgres.query(
        "SELECT min(end_time), max(start_time) FROM runs WHERE run_id IN (%s, %s)", first, second
    )
    assert later_start >= earlier_end, "the runs overlapped"
    pools = postgres.query('SELECT concurrency_key, "limit" FROM concurrency_limits')
    assert pools == [(TRAINING_POOL, 1)]  # the default limit, written on first use


def test_gamerec_materialize_records_its_runs_in_the_same_postgres(deployment, postgres):
    """A plain CLI user with DAGSTER_HOME at the deployment's instance shares its history."""
    env = {**deployment.code_env, "GAMEREC_INDEX": "hnsw"}  # something to rebuild
    before = {row[0] for row in postgres.query("SELECT run_id FROM runs")}
    completed = subprocess.run(
        [str(VENV_BIN / "gamerec"), "materialize"],
        env=env,
        cwd=deployment.folder,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    rows = postgres.query("SELECT run_id, status FROM runs")
    new_runs = {run_id: status for run_id, status in rows if run_id not in before}
    # the input's fingerprint, then the index and the publishing it rebuilt
    assert list(new_runs.values()) == ["SUCCESS", "SUCCESS"], new_runs
    index_run, _ = deployment.webserver.latest_metadata("faiss_index")
    assert index_run in new_runs and f"Run {index_run} succeeded" in completed.stdout
    for run_id in new_runs:  # what the UI shows
        assert deployment.run(run_id)["status"] == "SUCCESS"
