"""Retraining the whole graph when the input file changed: a job, a sensor and a schedule.

They are meant for the deployment (deploy/docker), where the daemon runs them; both start
STOPPED. Each takes the input's fingerprint (`core.sources.source_fingerprint`, the data
version `raw_interactions` records) and compares it with the version the graph last consumed,
the one `interactions` was built from (its data provenance), so a fingerprint taken without a
rebuild (`gamerec materialize --dry-run`, the automation sensor's 5-minute check) does not
hide a change.

- `gamerec_input_changed` (sensor): every GAMEREC_INPUT_CHECK_SECONDS; its cursor is the
  fingerprint it last acted on, so a change starts exactly one run, even while that run is
  queued or failing. With no cursor yet it compares with what the graph consumed.
- `gamerec_nightly` (schedule): at 03:00 UTC, a run only when the input changed since the
  graph last consumed it.

Both start `gamerec_graph`, the whole graph with its checks. The automation sensor
(`automation.py`) is the other, asset-by-asset way; switch on one of the three.
"""

import dagster as dg

from gamerec_assets.assets.ingestion import input_data_version
from gamerec_assets.automation import INPUT_FINGERPRINT
from gamerec_assets.core.sources import source_fingerprint
from gamerec_assets.resources import SourceResource

GRAPH_JOB = "gamerec_graph"
INPUT_SENSOR = "gamerec_input_changed"
NIGHTLY_SCHEDULE = "gamerec_nightly"
NIGHTLY_CRON = "0 3 * * *"
NIGHTLY_TIMEZONE = "UTC"

SOURCE_KEY = dg.AssetKey(INPUT_FINGERPRINT)
CONSUMER_KEY = dg.AssetKey("interactions")
DATA_VERSION_TAG = "dagster/data_version"
CONSUMED_VERSION_TAG = f"dagster/input_data_version/{INPUT_FINGERPRINT}"

graph_job = dg.define_asset_job(
    GRAPH_JOB,
    selection=dg.AssetSelection.all(),
    description=(
        "The whole graph with its checks, from the input fingerprint to the published serving "
        "set: what the sensor `gamerec_input_changed` and the schedule `gamerec_nightly` start."
    ),
)


def latest_materialization_tag(
    instance: dg.DagsterInstance, key: dg.AssetKey, tag: str
) -> str | None:
    """A tag of an asset's latest materialization (its data version, its provenance)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.tags.get(tag)


def current_input_version(source: SourceResource) -> str:
    """The data version `raw_interactions` would record for the input as it is now."""
    return input_data_version(source_fingerprint(source.settings()))


def consumed_input_version(instance: dg.DagsterInstance) -> str | None:
    """The input version the graph last consumed: what `interactions` was built from."""
    return latest_materialization_tag(instance, CONSUMER_KEY, CONSUMED_VERSION_TAG)


def input_sensor(minimum_interval_seconds: int) -> dg.SensorDefinition:
    """The sensor that starts one `gamerec_graph` run per change of the input."""

    @dg.sensor(
        name=INPUT_SENSOR,
        job=graph_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Fingerprints the input file and starts one run of the whole graph when it "
            "changed (GAMEREC_INPUT_CHECK_SECONDS between checks)."
        ),
    )
    def gamerec_input_changed(context: dg.SensorEvaluationContext, source: SourceResource):
        version = current_input_version(source)
        last = context.cursor or consumed_input_version(context.instance)
        context.update_cursor(version)
        if version == last:
            return dg.SkipReason(f"input unchanged (version {version})")
        return dg.RunRequest(tags={"gamerec/input_version": version})

    return gamerec_input_changed


@dg.schedule(
    name=NIGHTLY_SCHEDULE,
    job=graph_job,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone=NIGHTLY_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="At 03:00 UTC, runs the whole graph if the input changed since it was consumed.",
)
def nightly_schedule(context: dg.ScheduleEvaluationContext, source: SourceResource):
    version = current_input_version(source)
    consumed = consumed_input_version(context.instance)
    if version == consumed:
        return dg.SkipReason(f"input unchanged since the last build (version {version})")
    return dg.RunRequest(tags={"gamerec/input_version": version})
