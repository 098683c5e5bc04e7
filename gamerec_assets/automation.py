"""Optional automation: keep the graph up to date by itself when the sensor is switched on.

`AutomationCondition.eager()` fires on any upstream materialization, even one that produced
the same data version. `inputs_changed` fires only when an input's data version really
changed, the asset's code version changed (new code or configuration, see `versioning`), or
the asset went missing, and never while its inputs are missing or in flight. The input
fingerprint `raw_interactions` is re-taken every 5 minutes. The sensor
starts STOPPED: switch it on under Automation in the UI (it needs `dagster dev`'s daemon).
"""

import dagster as dg

SENSOR_NAME = "gamerec_automation"
INPUT_FINGERPRINT = "raw_interactions"
INPUT_CHECK_CRON = "*/5 * * * *"

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

# The raw input is external: fingerprint it on a schedule so a changed file is noticed.
check_input = (
    (
        dg.AutomationCondition.cron_tick_passed(INPUT_CHECK_CRON)
        | (dg.AutomationCondition.missing() & dg.AutomationCondition.initial_evaluation())
    )
    & ~dg.AutomationCondition.in_progress()
).with_label("fingerprint the input every 5 minutes")

automation_sensor = dg.AutomationConditionSensorDefinition(
    SENSOR_NAME,
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Materializes assets whose inputs, code or configuration really changed.",
)


def with_automation(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Attach `check_input` to the input fingerprint and `inputs_changed` to the rest."""
    return dg.map_asset_specs(
        lambda spec: spec.replace_attributes(
            automation_condition=check_input
            if spec.key == dg.AssetKey(INPUT_FINGERPRINT)
            else inputs_changed
        ),
        assets,
    )
