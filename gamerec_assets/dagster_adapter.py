"""The few private Dagster APIs the project uses, reached through this one module.

Dagster 1.13 has no public API for these: the staleness of an asset and its causes (what the
UI shows, used by `gamerec materialize`), the latest evaluation of an asset check (used by
publishing to refuse a set whose checks failed in an earlier run), and the module an asset's
function lives in (for code versions). If an upgrade moves them, this is the file to fix;
`gamerec_tests/test_dagster_adapter.py` exercises each.
"""

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import (
    CachingStaleStatusResolver,
    StaleCauseCategory,
    StaleStatus,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._time import get_current_datetime

__all__ = [
    "StaleCauseCategory",
    "StaleStatus",
    "compute_module",
    "failed_checks",
    "stale_status_resolver",
]


def compute_module(assets_def: dg.AssetsDefinition) -> str:
    """The module that defines an asset's compute function."""
    return assets_def.op.compute_fn.decorated_fn.__module__


def stale_status_resolver(instance: dg.DagsterInstance, graph) -> CachingStaleStatusResolver:
    """What the UI uses to say whether an asset is fresh, stale (and why) or missing."""
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    return CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def failed_checks(
    instance: dg.DagsterInstance, checks: list[dg.AssetCheckKey]
) -> dict[dg.AssetCheckKey, str]:
    """Of `checks`, those whose latest execution failed, each with its description."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(checks)
    failed = {}
    for check in checks:
        record = latest.get(check)
        if record is not None and record.status == AssetCheckExecutionRecordStatus.FAILED:
            evaluation = record.event.dagster_event.event_specific_data if record.event else None
            failed[check] = getattr(evaluation, "description", None) or "failed"
    return failed
