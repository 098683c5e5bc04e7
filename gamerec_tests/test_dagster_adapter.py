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


def test_mark_run_failed_ends_an_unfinished_run_with_the_reason():
    @dg.asset
    def thing():
        return 1

    job = dg.Definitions(assets=[thing]).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(job_def=job)
        assert run.status == dg.DagsterRunStatus.NOT_STARTED
        dagster_adapter.mark_run_failed(instance, run, "its process is gone")
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        messages = [entry.message for entry in instance.all_logs(run.run_id)]
        assert any("its process is gone" in message for message in messages)


def test_the_one_line_logger_shows_a_failed_step_without_its_stack(capsys):
    @dg.asset
    def broken(context: dg.AssetExecutionContext):
        context.log.info("first line\nsecond line")
        raise ValueError("bad input\nmore detail")

    defs = dg.Definitions(
        assets=[broken], loggers={"console": dagster_adapter.one_line_console_logger}
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            raise_on_error=False,  # a logger is used once run config names it
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    assert not result.success
    err = capsys.readouterr().err
    assert "INFO    broken: first line\n" in err and "second line" not in err
    assert 'ERROR   broken: Execution of step "broken" failed.\n' in err
    assert "Traceback" not in err and "Stack Trace" not in err and "more detail" not in err
