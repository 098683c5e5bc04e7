"""The retraining job, sensor and schedule, evaluated without a daemon (test_deployment.py runs
the sensor in a real daemon), and the training pool that keeps training runs one at a time."""

import dagster as dg

from gamerec_assets.assets.tuning import TRAINING_POOL
from gamerec_assets.definitions import build_definitions
from gamerec_assets.retraining import (
    GRAPH_JOB,
    INPUT_SENSOR,
    NIGHTLY_SCHEDULE,
    consumed_input_version,
    current_input_version,
)
from gamerec_tests.conftest import ALL_ASSETS, materialize, write_source


def ingest(resources, instance) -> None:
    """What the graph consumes of the input: its fingerprint, then `interactions`."""
    materialize(resources, instance, selection=["raw_interactions", "interactions"])


def tick_sensor(resources, instance, cursor=None):
    sensor = build_definitions(resources).resolve_sensor_def(INPUT_SENSOR)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return sensor(context), context.cursor


def tick_schedule(resources, instance):
    schedule = build_definitions(resources).resolve_schedule_def(NIGHTLY_SCHEDULE)
    with dg.build_schedule_context(instance=instance, resources=resources) as context:
        return schedule(context)


def test_the_job_is_the_whole_graph_and_both_triggers_start_stopped(file_source):
    _, resources, _ = file_source
    defs = build_definitions(resources)
    job = defs.resolve_job_def(GRAPH_JOB)
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert keys == {"raw_interactions", *ALL_ASSETS}
    every_check = defs.resolve_asset_graph().asset_check_keys
    assert job.asset_layer.asset_graph.asset_check_keys == every_check and len(every_check) == 11
    sensor = defs.resolve_sensor_def(INPUT_SENSOR)
    schedule = defs.resolve_schedule_def(NIGHTLY_SCHEDULE)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert (sensor.job_name, schedule.job_name) == (GRAPH_JOB, GRAPH_JOB)
    assert sensor.minimum_interval_seconds == resources["source"].input_check_seconds == 60


def test_only_the_steps_that_train_are_in_the_training_pool(file_source):
    _, resources, _ = file_source
    graph = build_definitions(resources).resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    assert pools.pop("two_tower_checkpoint") == {TRAINING_POOL}
    assert pools.pop("tuned_settings") == {TRAINING_POOL}
    assert not any(pools.values()), pools


def test_the_sensor_starts_one_run_per_change_of_the_input(file_source):
    source, resources, instance = file_source
    first, cursor = tick_sensor(resources, instance)
    assert isinstance(first, dg.RunRequest)  # nothing consumed yet: build it
    ingest(resources, instance)
    again, cursor = tick_sensor(resources, instance, cursor)
    assert isinstance(again, dg.SkipReason) and "unchanged" in again.skip_message

    write_source(source, 3.0)
    changed, cursor = tick_sensor(resources, instance, cursor)
    assert isinstance(changed, dg.RunRequest)
    assert cursor == current_input_version(resources["source"])
    # the run it requested has not consumed the input yet: still no second request
    still, _ = tick_sensor(resources, instance, cursor)
    assert isinstance(still, dg.SkipReason)


def test_with_no_cursor_the_sensor_compares_with_what_the_graph_consumed(file_source):
    source, resources, instance = file_source
    ingest(resources, instance)
    assert isinstance(tick_sensor(resources, instance)[0], dg.SkipReason)
    write_source(source, 3.0)
    assert isinstance(tick_sensor(resources, instance)[0], dg.RunRequest)


def test_the_schedule_runs_only_when_the_input_changed_since_it_was_consumed(file_source):
    source, resources, instance = file_source
    assert isinstance(tick_schedule(resources, instance), dg.RunRequest)  # never built
    ingest(resources, instance)
    assert consumed_input_version(instance) == current_input_version(resources["source"])
    assert isinstance(tick_schedule(resources, instance), dg.SkipReason)

    write_source(source, 3.0)
    # a fingerprint alone (`gamerec materialize --dry-run`, the automation's 5-minute check) is
    # not a rebuild: the change is still pending
    materialize(resources, instance, selection=["raw_interactions"])
    assert isinstance(tick_schedule(resources, instance), dg.RunRequest)
    ingest(resources, instance)
    assert isinstance(tick_schedule(resources, instance), dg.SkipReason)
