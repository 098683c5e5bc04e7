"""The optional automation fires on real changes only, evaluated without a daemon."""

import dagster as dg

from gamerec_assets.automation import SENSOR_NAME, inputs_changed
from gamerec_assets.definitions import build_definitions
from gamerec_tests.conftest import ALL_ASSETS, with_settings, write_source

SOURCE = dg.AssetKey("raw_interactions")


def requested(result) -> set[str]:
    return {key.to_user_string() for key in result._requested_partitions_by_asset_key}


def tick(defs, instance, cursor=None):
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)


def run(defs, instance, keys) -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, asset_selection=list(keys)).success


def build_everything(defs, instance):
    """Let the conditions drive, running what each tick requests, until nothing is."""
    result, built = None, []
    for _ in range(8):
        result = tick(defs, instance, None if result is None else result.cursor)
        if not requested(result):
            return result, built
        built.append(requested(result))
        run(defs, instance, [dg.AssetKey(name) for name in requested(result)])
    raise AssertionError(f"automation did not settle: {built}")


def test_the_sensor_is_off_until_switched_on(file_source):
    _, resources, _ = file_source
    sensor = build_definitions(resources).resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_from_an_empty_instance_it_builds_the_graph_once_then_rests(file_source):
    _, resources, instance = file_source
    defs = build_definitions(resources)
    _, built = build_everything(defs, instance)
    assert built[:2] == [{"raw_interactions"}, {"interactions"}]
    assert set().union(*built) == {"raw_interactions", *ALL_ASSETS}


def test_an_unchanged_rematerialization_triggers_nothing_unlike_eager(file_source):
    _, resources, instance = file_source
    defs = build_definitions(resources)
    result, _ = build_everything(defs, instance)
    run(defs, instance, [dg.AssetKey("interactions")])  # same input, same data version
    assert requested(tick(defs, instance, result.cursor)) == set()

    eager = dg.Definitions(
        assets=dg.map_asset_specs(
            lambda spec: spec.replace_attributes(
                automation_condition=dg.AutomationCondition.eager()
            ),
            [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
        ),
        resources=resources,
    )
    eager_cursor = tick(eager, instance).cursor
    run(defs, instance, [dg.AssetKey("interactions")])
    assert "train_interactions" in requested(tick(eager, instance, eager_cursor))


def test_a_changed_input_file_rebuilds_downstream(file_source):
    source, resources, instance = file_source
    defs = build_definitions(resources)
    result, _ = build_everything(defs, instance)
    write_source(source, 3.0)
    run(defs, instance, [SOURCE])
    result = tick(defs, instance, result.cursor)
    assert requested(result) == {"interactions"}
    run(defs, instance, [dg.AssetKey("interactions")])
    assert {"train_interactions", "val_interactions"} <= requested(
        tick(defs, instance, result.cursor)
    )


def test_a_new_hyperparameter_requests_training_but_not_ingestion(file_source):
    _, resources, instance = file_source
    result, _ = build_everything(build_definitions(resources), instance)
    resources["training"] = with_settings(resources["training"], lr=0.05)
    assert requested(tick(build_definitions(resources), instance, result.cursor)) == {
        "two_tower_checkpoint",
        "item_embeddings",
        "eval_metrics",
        "faiss_index",
        "serving_set",
    }


def test_the_condition_is_labelled_for_the_ui():
    assert inputs_changed.get_label() == "inputs_changed"
