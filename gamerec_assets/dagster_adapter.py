"""The few private Dagster APIs the project uses, reached through this one module.

Dagster 1.13 has no public API for these: the staleness of an asset and its causes (what the
UI shows, used by `gamerec materialize`), the latest evaluation of an asset check (used by
publishing to refuse a set whose checks failed in an earlier run), the module an asset's
function lives in (for code versions), marking a run failed from outside it (what the daemon's
run monitoring does; `gamerec materialize` does it for runs whose process is gone), and the
fields of a Dagster log record (for `gamerec materialize`'s one-line log). If an upgrade moves
them, this is the file to fix; `gamerec_tests/test_dagster_adapter.py` exercises each.
"""

import logging
import sys
from datetime import datetime

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
    "mark_run_failed",
    "one_line_console_logger",
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


def mark_run_failed(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> None:
    """Record that `run` failed, from outside it (its process is gone), as run monitoring does."""
    instance.report_run_failed(run, message)


class OneLineFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL step: message`, the message cut at its first line: a step's failure
    shows as one line (its error is summed up after the run), never as a stack trace."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        message = str(meta.get("orig_message") or record.getMessage()).strip()
        first = message.splitlines()[0] if message else ""
        step = meta.get("step_key")
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        return f"{when} {record.levelname:<7} {f'{step}: ' if step else ''}{first}"


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="One line per event on stderr, without stack traces.",
)
def one_line_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """Dagster uses it for the runs of a `Definitions` whose `loggers` name it as `console`,
    once run config configures it (`loggers: {console: {config: {log_level: INFO}}}`)."""
    level = logging.getLevelName(str(init_context.logger_config["log_level"]).upper())
    logger = logging.Logger("gamerec", level=level if isinstance(level, int) else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter())
    logger.addHandler(handler)
    return logger
