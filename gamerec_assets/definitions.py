"""The one `Definitions` object of the project: every asset, check and resource.

Load with `dg dev` / `dg launch --assets '*'` (pyproject's [tool.dg]), or
`dagster dev -w workspace.yaml`.
"""

import warnings
from collections.abc import Mapping

import dagster as dg

from gamerec_assets.assets import publishing
from gamerec_assets.automation import automation_sensor, with_automation
from gamerec_assets.resources import resources_from_env
from gamerec_assets.retraining import graph_job, input_sensor, nightly_schedule
from gamerec_assets.versioning import with_declared_code_versions

# Dagster's own parser of the selection `*` passes a beta parameter to itself and warns about
# it (`dg launch --assets '*'`); nothing a user of this project can act on.
warnings.filterwarnings("ignore", message="Parameter `include_sources`", category=dg.BetaWarning)

STAGE_MODULES = (*publishing.UPSTREAM_STAGES, publishing)


def build_definitions(
    resources: Mapping[str, dg.ConfigurableResource],
    loggers: Mapping[str, dg.LoggerDefinition] | None = None,
) -> dg.Definitions:
    """The project's definitions with the given resources (tests pass temporary folders), and
    `loggers` instead of Dagster's console logger when given (`gamerec materialize`).

    The graph is a chain, so steps run in one process: a subprocess per step would re-import
    torch, FAISS and polars each time for no parallelism. It also means nothing forks after
    FAISS's OpenMP pool has started (a known hang in the child); anything that needs processes
    must start them with `spawn` or a fresh interpreter, as the benchmarks do.
    """
    assets = with_declared_code_versions(dg.load_assets_from_modules(STAGE_MODULES), resources)
    check_seconds = resources["source"].settings().input_check_seconds
    return dg.Definitions(
        assets=with_automation(assets),
        jobs=[graph_job],
        sensors=[automation_sensor, input_sensor(check_seconds)],
        schedules=[nightly_schedule],
        asset_checks=dg.load_asset_checks_from_modules(STAGE_MODULES),
        resources=dict(resources),
        executor=dg.in_process_executor,
        loggers=dict(loggers) if loggers else None,
    )


defs = build_definitions(resources_from_env())
