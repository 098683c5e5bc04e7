"""Every source kind x every split strategy materializes the whole default graph.

Only the data is small: every other setting is the default a user gets, so a documented
option that one step supports and a later step does not (as `latest` once was: the split
used the timestamps, training's tuning split could not see them) fails here.
"""

import dagster as dg
import polars as pl
import pytest

from gamerec_assets.core.settings import SOURCE_KINDS, SPLIT_STRATEGIES
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions
from gamerec_assets.definitions import build_definitions
from gamerec_assets.resources import resources_from_env
from gamerec_tests.conftest import ALL_ASSETS

SMALL = SyntheticSpec(n_users=300, n_games=60, n_interactions=3_000, seed=1)


def write_source(kind: str, folder) -> dict[str, str]:
    """The settings that point the graph at a small input of this kind."""
    if kind == "synthetic":
        return {
            "GAMEREC_SYNTHETIC_USERS": str(SMALL.n_users),
            "GAMEREC_SYNTHETIC_GAMES": str(SMALL.n_games),
            "GAMEREC_SYNTHETIC_INTERACTIONS": str(SMALL.n_interactions),
        }
    frame = generate_synthetic_interactions(SMALL)
    if kind == "steam200k":  # user, quoted title, purchase|play, value, 0; no header
        path = folder / "steam.csv"
        lines = []
        for user, title, hours in frame.select("user_id", "title", "play_time_hours").rows():
            lines.append(f'{user},"{title}",purchase,1.0,0')
            if hours > 0:
                lines.append(f'{user},"{title}",play,{hours},0')
        path.write_text("\n".join(lines) + "\n")
    elif kind == "interactions-csv":
        path = folder / "interactions.csv"
        frame.write_csv(path)
    else:
        path = folder / "interactions.parquet"
        frame.write_parquet(path)
    return {"GAMEREC_SOURCE": kind.split("-")[0], "GAMEREC_SOURCE_PATH": str(path)}


KINDS = ["synthetic", "steam200k", "interactions-csv", "interactions-parquet"]
assert {kind.split("-")[0] for kind in KINDS} == set(SOURCE_KINDS)


@pytest.mark.parametrize("strategy", SPLIT_STRATEGIES)
@pytest.mark.parametrize("kind", KINDS)
def test_the_default_graph_runs_on_every_source_with_every_split(tmp_path, kind, strategy):
    environ = {
        "DATA_DIR": str(tmp_path / "data"),
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "GAMEREC_SPLIT": strategy,
        "GAMEREC_NUM_THREADS": "2",
        **write_source(kind, tmp_path),
    }
    defs = build_definitions(resources_from_env(environ))
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    if kind == "steam200k" and strategy == "latest":
        # the format has no time: the split says so, and nothing is trained
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "split strategy 'latest' needs a timestamp column" in str(
            failure.event_specific_data.error
        )
        assert materialized == {"raw_interactions", "interactions"}
        return
    assert result.success
    assert materialized == {"raw_interactions", *ALL_ASSETS}
    assert all(e.passed for e in result.get_asset_check_evaluations())
    metrics = pl.read_json(tmp_path / "artifacts" / "metrics.json")
    assert metrics["n_eval_users"][0] > 100
