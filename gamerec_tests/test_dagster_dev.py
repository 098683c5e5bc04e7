"""End to end as a user works: `dg dev` on a loopback port, runs launched through the
webserver's GraphQL API (the calls the UI makes), metadata read back the same way."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from gamerec_tests.conftest import ALL_ASSETS, REPO_ROOT, project_environment
from gamerec_tests.test_dagster_commands import DG

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
STARTUP_SECONDS = 180
RUN_SECONDS = 600

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""
RUN_STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""
REPOSITORIES = """
query { repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }
"""
LATEST_METADATA = """
query Metadata($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries {
          label
          __typename
          ... on MarkdownMetadataEntry { mdStr }
          ... on FloatMetadataEntry { floatValue }
          ... on IntMetadataEntry { intValue }
          ... on TableSchemaMetadataEntry { schema { columns { name } } }
        }
      }
    }
  }
}
"""
CHECKS = """
query Checks($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      assetChecksOrError {
        ... on AssetChecks {
          checks {
            name
            blocking
            executionForLatestMaterialization {
              runId
              status
              evaluation { metadataEntries { label } }
            }
          }
        }
      }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Webserver:
    def __init__(self, url: str) -> None:
        self.url = url

    def graphql(self, query: str, **variables) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload["errors"]
        return payload["data"]

    def launch(self, assets: list[str]) -> str:
        (repository,) = self.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
        selector = {
            "repositoryLocationName": repository["location"]["name"],
            "repositoryName": repository["name"],
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": [name]} for name in assets],
        }
        launched = self.graphql(LAUNCH_RUN, executionParams={"selector": selector})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def wait(self, run_id: str) -> str:
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            status = self.graphql(RUN_STATUS, runId=run_id)["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish in {RUN_SECONDS} s")

    def checks(self, asset: str) -> dict[str, dict]:
        node = self.graphql(CHECKS, assetKey={"path": [asset]})["assetNodeOrError"]
        return {check["name"]: check for check in node["assetChecksOrError"]["checks"]}

    def latest_metadata(self, asset: str) -> tuple[str, dict[str, dict]]:
        found = self.graphql(LATEST_METADATA, assetKey={"path": [asset]})["assetOrError"]
        (materialization,) = found["assetMaterializations"]
        entries = {entry["label"]: entry for entry in materialization["metadataEntries"]}
        return materialization["runId"], entries


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    """`dg dev` in a temporary DAGSTER_HOME on a free loopback port; stopped by its process
    group id afterwards."""
    folder = tmp_path_factory.mktemp("dagster_dev")
    env = {**os.environ, **project_environment(folder)}
    port = free_port()
    log = open(folder / "dagster_dev.log", "w")  # noqa: SIM115 - closed in the teardown
    process = subprocess.Popen(
        [DG, "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: webserver, daemon, code server
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"dg dev exited: {(folder / 'dagster_dev.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"dg dev did not answer on {url} in {STARTUP_SECONDS} s")
                time.sleep(1)
        yield Webserver(url)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_ui_runs_the_graph_then_the_index_alone_and_shows_the_metadata(webserver):
    graph_run = webserver.launch(["raw_interactions", *ALL_ASSETS])
    assert webserver.wait(graph_run) == "SUCCESS"
    index_run = webserver.launch(["faiss_index", "serving_set"])
    assert webserver.wait(index_run) == "SUCCESS"

    run, interactions = webserver.latest_metadata("interactions")
    assert run == graph_run
    assert interactions["dagster/row_count"]["intValue"] > 0
    columns = {c["name"] for c in interactions["dagster/column_schema"]["schema"]["columns"]}
    assert {"user_id", "game_id", "user_idx", "item_idx", "play_time_hours"} <= columns

    _, training = webserver.latest_metadata("two_tower_checkpoint")
    assert training["training_curve"]["mdStr"].startswith("![training curve](data:image/png")
    assert training["final_loss"]["floatValue"] > 0

    _, metrics = webserver.latest_metadata("eval_metrics")
    assert 0 < metrics["recall@20"]["floatValue"] <= 1
    assert "| metric | model | popularity |" in metrics["metrics"]["mdStr"]

    run, index = webserver.latest_metadata("faiss_index")
    assert run == index_run  # the second run rebuilt the index alone, and published it
    assert index["recall@20_vs_exact"]["floatValue"] == 1.0  # flat: exact
    run, published = webserver.latest_metadata("serving_set")
    assert run == index_run
    assert (
        "| user_id | games | most played | top 5 recommended |"
        in (published["sample_recommendations"]["mdStr"])
    )
    _, embeddings = webserver.latest_metadata("item_embeddings")
    assert embeddings["dim"]["intValue"] == 16

    # the checks show in the UI with their outcome and metadata
    checks = webserver.checks("faiss_index")
    assert set(checks) == {"faiss_index_matches_catalog", "faiss_index_matches_exact_search"}
    latest = checks["faiss_index_matches_catalog"]["executionForLatestMaterialization"]
    assert (latest["runId"], latest["status"]) == (index_run, "SUCCEEDED")
    labels = {entry["label"] for entry in latest["evaluation"]["metadataEntries"]}
    assert {"ntotal", "catalog_games"} <= labels
    gate = webserver.checks("eval_metrics")["model_beats_popularity"]
    assert gate["blocking"] and gate["executionForLatestMaterialization"]["status"] == "SUCCEEDED"


# --- the UI in a real browser --------------------------------------------------------------------

BROWSER = next((found for name in BROWSERS if (found := shutil.which(name)) is not None), None)
SCREENSHOTS = REPO_ROOT / "test-artifacts"


def headless(url: str, *args: str, window: str = "2400,1400") -> str:
    """Load a page in headless Chromium, let its scripts and queries settle, return stdout."""
    completed = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",  # CI runs as root in a container
            "--disable-gpu",
            "--hide-scrollbars",
            # wide enough that the graph draws full nodes, names untruncated
            f"--window-size={window}",
            "--virtual-time-budget=30000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.mark.skipif(
    BROWSER is None, reason="no Chromium here (Debian: apt-get install chromium; .ci/run does)"
)
def test_browser_shows_every_asset_and_the_lineage(webserver):
    """Runs after the graph test above, so the UI has materializations to show."""
    webserver.graphql("mutation { setNuxSeen }")  # the first-visit dialog, as the UI dismisses it
    # the lineage of serving_set, upstream: every asset of the graph, grouped by stage
    graph_page = (
        f"{webserver.url}/assets/serving_set?view=lineage&lineageScope=upstream&lineageDepth=10"
    )
    graph = headless(graph_page, "--dump-dom")
    missing = [key for key in ["raw_interactions", *ALL_ASSETS] if f">{key}<" not in graph]
    assert not missing, f"the asset graph page does not show {missing}"

    SCREENSHOTS.mkdir(exist_ok=True)
    metrics_page = f"{webserver.url}/assets/eval_metrics"
    # tall enough to reach the metrics table, below the numeric entries
    for name, page, window in [
        ("asset_graph", graph_page, "2400,1400"),
        ("eval_metrics", metrics_page, "2400,2600"),
    ]:
        target = SCREENSHOTS / f"{name}.png"
        target.unlink(missing_ok=True)
        headless(page, f"--screenshot={target}", window=window)
        assert target.read_bytes().startswith(b"\x89PNG"), name
        assert target.stat().st_size > 20_000, f"{name}: a blank page?"
