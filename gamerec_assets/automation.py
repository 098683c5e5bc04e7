"""Optional automation: keep the graph up to date by itself when the sensor is switched on.

`AutomationCondition.eager()` fires on any upstream materialization, even one that produced
the same data version. `inputs_changed` fires only when an input's data version really
changed, the asset's code version changed (new code or configuration, see `versioning`), or
the asset went missing, and never while its inputs are missing or in flight. The sensor
starts STOPPED: switch it on under Automation in the UI (it needs `dagster dev`'s daemon).
"""

import dagster as dg

SENSOR_NAME = "gamerec_automation"
OBSERVE_SOURCE_CRON = "*/5 * * * *"

inputs_changed = (
    (
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
        | dg.AutomationCondition.code_version_changed()
        | dg.AutomationCondition.newly_missing()
        | (dg.AutomationCondition.missing() & dg.AutomationCondition.initial_evaluation())
    ).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("inputs_changed")

# The raw input is external: observe it on a schedule so a changed file is noticed.
observe_source = dg.AutomationCondition.cron_tick_passed(OBSERVE_SOURCE_CRON).with_label(
    "observe every 5 minutes"
)

automation_sensor = dg.AutomationConditionSensorDefinition(
    SENSOR_NAME,
    target=dg.AssetSelection.all() | dg.AssetSelection.assets("raw_interactions"),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Materializes assets whose inputs, code or configuration really changed.",
)


def with_automation(
    assets: list[dg.AssetsDefinition | dg.SourceAsset],
) -> list[dg.AssetsDefinition | dg.SourceAsset]:
    """Attach `inputs_changed` to every computed asset."""
    computed = [a for a in assets if isinstance(a, dg.AssetsDefinition)]
    others = [a for a in assets if not isinstance(a, dg.AssetsDefinition)]
    return [
        *dg.map_asset_specs(
            lambda spec: spec.replace_attributes(automation_condition=inputs_changed), computed
        ),
        *others,
    ]
