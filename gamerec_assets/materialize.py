"""`gamerec materialize`: rebuild what is stale or missing, and everything downstream of it.

It rebuilds only what is stale or missing. It fingerprints the raw input
(`raw_interactions`, a hash of the file), asks Dagster's own staleness machinery (the one the
UI uses) which assets are stale and why, prints the plan, and materializes those assets and
everything downstream of them in one run, with their asset checks, in the persistent instance
under DAGSTER_HOME.

Its runs are tagged with the process that runs them, so that the next `gamerec materialize`
can tell a run whose process was killed (it would stay STARTED forever) and mark it failed.
The log is one line per event without stack traces; the summary after the run says why a step
failed, which check failed and why, and whether anything was published. `gamerec --debug
materialize` shows Dagster's full log instead.
"""

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from gamerec_assets.automation import INPUT_FINGERPRINT
from gamerec_assets.core.artifact_sets import current_set_name
from gamerec_assets.core.processes import identity_is_running, process_identity
from gamerec_assets.core.settings import env_variable_names
from gamerec_assets.dagster_adapter import (
    StaleCauseCategory,
    StaleStatus,
    mark_run_failed,
    one_line_console_logger,
    stale_status_resolver,
)
from gamerec_assets.definitions import build_definitions
from gamerec_assets.instance_config import require_instance_variables
from gamerec_assets.resources import resources_from_env
from gamerec_assets.retraining import DATA_VERSION_TAG, latest_materialization_tag
from gamerec_assets.versioning import (
    declared_version_inputs,
    describe_version_change,
    recorded_version_inputs,
)

SOURCE_KEY = dg.AssetKey(INPUT_FINGERPRINT)
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
DEFAULT_DAGSTER_HOME = Path("dagster_home")
CHECK_FAILED_ERROR = "DagsterAssetCheckFailedError"
PROCESS_TAG = "gamerec/process"
"""Tag on each run `gamerec materialize` starts: the identity of the process running it."""
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class PlanRow:
    asset: str
    status: str  # fresh | stale | missing
    cause: str
    run: bool


def resolve_instance() -> dg.DagsterInstance:
    """The persistent instance: DAGSTER_HOME, or ./dagster_home when that is unset; a folder
    that does not exist yet is created (with telemetry off), a file there is refused."""
    configured = os.environ.get("DAGSTER_HOME")
    home = Path(configured).resolve() if configured else DEFAULT_DAGSTER_HOME.resolve()
    if home.exists() and not home.is_dir():
        raise NotADirectoryError(
            f"DAGSTER_HOME={home}: a file, not a folder; point DAGSTER_HOME at the folder that "
            "keeps the run history (it is created when missing)"
        )
    if configured and not home.exists():
        print(f"DAGSTER_HOME {home} does not exist; creating it")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    if not configured:
        print(f"DAGSTER_HOME is not set; using {home}")
    os.environ["DAGSTER_HOME"] = str(home)
    require_instance_variables(home)
    return dg.DagsterInstance.get()


def latest_data_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    return latest_materialization_tag(instance, key, DATA_VERSION_TAG)


def parse_selection(expressions: Sequence[str] | None, graph) -> set[dg.AssetKey] | None:
    """Dagster selection syntax (`faiss_index`, `two_tower_checkpoint*`, `group:serving`),
    several expressions or comma-separated ones united."""
    if not expressions:
        return None
    keys: set[dg.AssetKey] = set()
    for expression in expressions:
        for part in filter(None, (p.strip() for p in expression.split(","))):
            keys |= dg.AssetSelection.from_string(part).resolve(graph)
    return keys


def build_plan(
    defs: dg.Definitions,
    resources: dict,
    instance: dg.DagsterInstance,
    selection: set[dg.AssetKey] | None = None,
    force_all: bool = False,
) -> list[PlanRow]:
    """Each materializable asset with its status, cause, and whether this run rebuilds it."""
    graph = defs.resolve_asset_graph()
    resolver = stale_status_resolver(instance, graph)
    keys = [
        k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable and k != SOURCE_KEY
    ]
    declared = declared_version_inputs(list(defs.assets), resources)
    env_names = env_variable_names()

    rows: dict[dg.AssetKey, PlanRow] = {}
    for key in keys:
        name = key.to_user_string()
        status = resolver.get_status(key)
        if status == StaleStatus.MISSING:
            state, cause = "missing", "never materialized"
        elif status == StaleStatus.STALE:
            state = "stale"
            reasons = []
            for stale_cause in resolver.get_stale_causes(key):
                if stale_cause.key.asset_key != key:
                    continue
                if stale_cause.category == StaleCauseCategory.CODE:
                    reasons.append(
                        describe_version_change(
                            recorded_version_inputs(instance, name), declared[name], env_names
                        )
                    )
                elif stale_cause.dependency is not None:
                    reasons.append(
                        f"{stale_cause.dependency.asset_key.to_user_string()} {stale_cause.reason}"
                    )
                else:
                    reasons.append(stale_cause.reason)
            cause = "; ".join(dict.fromkeys(reasons)) or "stale"
        else:
            state, cause = "fresh", ""
        upstream_rebuilt = [p for p in graph.get(key).parent_keys if p in rows and rows[p].run]
        if state == "fresh" and upstream_rebuilt:
            cause = f"downstream of {upstream_rebuilt[0].to_user_string()}"
        in_selection = selection is None or key in selection
        run = in_selection and (force_all or state != "fresh" or bool(upstream_rebuilt))
        if force_all and in_selection and state == "fresh":
            cause = "forced (--all)"
        rows[key] = PlanRow(asset=name, status=state, cause=cause, run=run)
    return list(rows.values())


def with_whole_multi_assets(defs: dg.Definitions, keys: list[dg.AssetKey]) -> list[dg.AssetKey]:
    """Add the siblings of any multi-asset output (the split writes train and val together)."""
    wanted = set(keys)
    for key in keys:
        wanted |= set(defs.resolve_assets_def(key).keys)
    graph = defs.resolve_asset_graph()
    return [key for key in graph.toposorted_asset_keys if key in wanted]


def format_plan(rows: Sequence[PlanRow]) -> str:
    header = ("asset", "status", "action", "cause")
    table = [header] + [(r.asset, r.status, "run" if r.run else "-", r.cause) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in table
    ).rstrip()


def fail_runs_of_dead_processes(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every unfinished run of this command whose process is gone (killed, out of
    memory, a machine that stopped); one line for each, saying so."""
    lines = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)):
        identity = run.tags.get(PROCESS_TAG)
        if identity is None or identity_is_running(identity) is not False:
            continue  # not ours, still running, or on another machine
        pid = identity.split(":")[-2]
        message = (
            f"its process (pid {pid}) is gone, killed before the run ended; marked failed by "
            "the next gamerec materialize"
        )
        mark_run_failed(instance, run, message)
        lines.append(f"Run {run.run_id} was left {run.status.value}: {message}")
    return lines


def materialize_command(args: argparse.Namespace) -> int:
    """Run `gamerec materialize` (the caller has loaded `.env`); returns the exit code."""
    instance = resolve_instance()
    for line in fail_runs_of_dead_processes(instance):
        print(line, flush=True)
    resources = resources_from_env()
    debug = getattr(args, "debug", False)
    defs = build_definitions(resources, None if debug else {"console": one_line_console_logger})
    job = defs.resolve_implicit_global_asset_job_def()
    tags = {PROCESS_TAG: process_identity()}

    old_version = latest_data_version(instance, SOURCE_KEY)
    fingerprinted = job.execute_in_process(
        run_config=RUN_CONFIG,
        instance=instance,
        asset_selection=[SOURCE_KEY],
        raise_on_error=False,
        tags=tags,
    )
    if not fingerprinted.success:
        for step, message in step_failures(fingerprinted):
            print(f"  {step} failed: {message}")
        print("Could not fingerprint the raw input (raw_interactions): nothing was run.")
        return 1
    new_version = latest_data_version(instance, SOURCE_KEY)
    change = (
        "first fingerprint"
        if old_version is None
        else ("unchanged" if old_version == new_version else f"changed (was {old_version})")
    )
    print(f"Input fingerprint {new_version}: {change}")

    graph = defs.resolve_asset_graph()
    rows = build_plan(defs, resources, instance, parse_selection(args.select, graph), args.all)
    print(format_plan(rows))
    to_run = with_whole_multi_assets(defs, [dg.AssetKey(r.asset) for r in rows if r.run])
    if not to_run:
        print("\nNothing to materialize: every selected asset is up to date.")
        return 0
    names = ", ".join(key.to_user_string() for key in to_run)
    if args.dry_run:
        print(f"\nDry run: would materialize {len(to_run)} asset(s) in one run: {names}")
        return 0

    print(f"\nMaterializing {len(to_run)} asset(s) in one run: {names}")
    result = job.execute_in_process(
        run_config=RUN_CONFIG,
        instance=instance,
        asset_selection=to_run,
        raise_on_error=False,
        tags=tags,
    )
    for line in run_summary(result, to_run, Path(resources["paths"].artifacts_dir)):
        print(line)
    return 0 if result.success else 1


def run_summary(
    result: dg.ExecuteInProcessResult, to_run: Sequence[dg.AssetKey], artifacts: Path
) -> list[str]:
    """What the run did, in a few lines: counts, each failed check and step with its reason,
    and whether the serving set was published (or which set still serves, and why)."""
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    checks = result.get_asset_check_evaluations()
    failed = [c for c in checks if not c.passed]
    lines = [
        f"Run {result.run_id} {'succeeded' if result.success else 'FAILED'}: "
        f"{len(materialized)} asset(s) materialized, {len(checks) - len(failed)} of "
        f"{len(checks)} checks passed"
    ]
    for check in failed:
        blocking = "blocking" if check.blocking else check.severity.value
        reason = f": {check.description}" if check.description else ""
        lines.append(
            f"  check {check.check_name} on {check.asset_key.to_user_string()} failed "
            f"({blocking}){reason}"
        )
    failures = step_failures(result)
    lines += [f"  {step} failed: {message}" for step, message in failures]
    publishing = dg.AssetKey("serving_set")
    if publishing in to_run and publishing not in materialized:
        serving = current_set_name(artifacts)
        why = "a blocking check failed" if any(c.blocking for c in failed) else "a step failed"
        still = (
            f"set {serving} in {artifacts} still serves"
            if serving
            else f"nothing is published in {artifacts} yet"
        )
        lines.append(f"  nothing was published ({why}); {still}")
    elif publishing in materialized:
        lines.append(f"  published set {current_set_name(artifacts)} to {artifacts}")
    return lines


def step_failures(result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    """(step, the user's error message, one line) of each failed step: the exception the
    asset raised, without Dagster's wrapping or what it was raised from."""
    failures = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE" or event.event_specific_data.error is None:
            continue
        error = event.event_specific_data.error
        if error.cls_name == CHECK_FAILED_ERROR:
            continue  # the failed check is summed up with its reason already
        while error.cls_name.startswith("Dagster") and error.cause is not None:
            error = error.cause  # Dagster's wrapper around the asset's exception
        text = " ".join(error.message.split())
        prefix, _, rest = text.partition(": ")
        if prefix.endswith(error.cls_name) and rest:  # "module.ErrorClass: message"
            text = rest
        failures.append((event.step_key, text))
    return failures
