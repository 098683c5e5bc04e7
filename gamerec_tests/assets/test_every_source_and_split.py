"""Every source kind x every split strategy materializes the whole default graph.

Only the data and the amount of work are small (the search tries the defaults and one more
configuration; training runs at most 3 epochs of dim 32): every other setting is the default a
user gets, so a documented option that one step supports and a later step does not (as
`latest` once was: the split used the timestamps, training's tuning split could not see them)
fails here.
"""

import json

import dagster as dg
import polars as pl
import pytest

from gamerec_assets.core.settings import SOURCE_KINDS, SPLIT_STRATEGIES
from gamerec_assets.core.synthetic import SyntheticSpec, generate_synthetic_interactions
from gamerec_assets.definitions import build_definitions
from gamerec_assets.resources import resources_from_env
from gamerec_tests.conftest import ALL_ASSETS

SMALL = SyntheticSpec(n_users=300, n_games=60, n_interactions=3_000, seed=1)


def write_file(kind: str, frame: pl.DataFrame, path) -> None:
    """Interactions in the file format of a source kind."""
    if kind == "steam200k":  # user, quoted title, purchase|play, value, 0; no header
        lines = []
        for user, title, hours in frame.select("user_id", "title", "play_time_hours").rows():
            lines.append(f'{user},"{title}",purchase,1.0,0')
            if hours > 0:
                lines.append(f'{user},"{title}",play,{hours},0')
        path.write_text("\n".join(lines) + "\n")
    elif kind == "interactions-csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)


def write_source(kind: str, strategy: str, folder) -> dict[str, str]:
    """The settings that point the graph at a small input of this kind (and, for the
    predefined split, a test file of the same format: a fifth of each player's games)."""
    frame = generate_synthetic_interactions(SMALL)
    test = None
    if strategy == "predefined":
        rank = pl.int_range(pl.len()).over("user_id")
        held = (rank % 5 == 4) & (pl.len().over("user_id") >= 2)
        frame, test = frame.filter(~held), frame.filter(held)
    suffix = {"steam200k": ".csv", "interactions-csv": ".csv", "interactions-parquet": ".pq"}
    settings = {}
    if kind == "synthetic":  # the generator itself, unless a test file must come with it
        settings = {
            "GAMEREC_SYNTHETIC_USERS": str(SMALL.n_users),
            "GAMEREC_SYNTHETIC_GAMES": str(SMALL.n_games),
            "GAMEREC_SYNTHETIC_INTERACTIONS": str(SMALL.n_interactions),
            "SEED": str(SMALL.seed),
        }
        if test is not None:  # predefined: the same data from a file, so a test file fits it
            kind, settings = "interactions-parquet", {}
    if kind != "synthetic":
        source = folder / f"source{suffix[kind]}"
        write_file(kind, frame, source)
        settings = {"GAMEREC_SOURCE": kind.split("-")[0], "GAMEREC_SOURCE_PATH": str(source)}
    if test is not None:
        path = folder / f"test{suffix[kind]}"
        write_file(kind, test, path)
        settings["GAMEREC_TEST_PATH"] = str(path)
    return settings


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
        "GAMEREC_TUNE_TRIALS": "2",
        "TRAIN_EPOCHS": "3",
        "EMBED_DIM": "32",
        **write_source(kind, strategy, tmp_path),
    }
    defs = build_definitions(resources_from_env(environ))
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    if kind == "steam200k" and strategy in ("latest", "temporal"):
        # the format has no time: the split says so, and nothing is trained
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert f"split strategy {strategy!r} needs a timestamp column" in str(
            failure.event_specific_data.error
        )
        assert materialized == {"raw_interactions", "interactions"}
        return
    assert result.success
    assert materialized == {"raw_interactions", *ALL_ASSETS}
    assert all(e.passed for e in result.get_asset_check_evaluations())
    metrics = json.loads((tmp_path / "artifacts" / "metrics.json").read_text())
    assert metrics["n_eval_users"] > 100
    assert set(metrics["baselines"]) == {"popularity", "ease", "als"}
    if strategy in ("temporal", "predefined"):
        assert metrics["n_heldout_games"] > metrics["n_eval_users"]  # several games a player
