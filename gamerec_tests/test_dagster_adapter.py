"""The private Dagster APIs the project reaches, each exercised once: an upgrade that moves
one fails here, naming it."""

import dagster as dg

from gamerec_assets import dagster_adapter
from gamerec_assets.assets import evaluation


def test_compute_module_names_the_module_defining_an_asset():
    assert dagster_adapter.compute_module(evaluation.eval_metrics) == evaluation.__name__


def test_failed_checks_reports_the_latest_execution_with_its_description():
    outcome = {"passed": False}

    @dg.asset
    def table():
        return 1

    @dg.asset_check(asset=table, blocking=True)
    def table_ok():
        passed = outcome["passed"]
        return dg.AssetCheckResult(passed=passed, description=None if passed else "too small")

    key = dg.AssetCheckKey(dg.AssetKey("table"), "table_ok")
    with dg.instance_for_test() as instance:
        assert dagster_adapter.failed_checks(instance, [key]) == {}  # never ran
        dg.materialize([table, table_ok], instance=instance, raise_on_error=False)
        assert dagster_adapter.failed_checks(instance, [key]) == {key: "too small"}
        outcome["passed"] = True
        dg.materialize([table, table_ok], instance=instance)
        assert dagster_adapter.failed_checks(instance, [key]) == {}


def test_the_stale_status_resolver_sees_a_missing_asset():
    @dg.asset
    def lonely():
        return 1

    defs = dg.Definitions(assets=[lonely])
    with dg.instance_for_test() as instance:
        resolver = dagster_adapter.stale_status_resolver(instance, defs.resolve_asset_graph())
        assert resolver.get_status(dg.AssetKey("lonely")) == dagster_adapter.StaleStatus.MISSING
