"""Tiny builders shared by the core tests, and one small published run for the serving ones."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from gamerec_tests.conftest import GRAPH, small_resources


@dataclass(frozen=True)
class PublishedRun:
    artifacts: Path
    run_id: str


@pytest.fixture(scope="session")
def published_run(tmp_path_factory) -> PublishedRun:
    """The whole graph on small synthetic data, once per session. Read it, do not change it:
    copy it first (tests that damage artifacts work on a copy)."""
    folder = tmp_path_factory.mktemp("published")
    result = dg.materialize(
        GRAPH, resources=small_resources(folder), instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    return PublishedRun(folder / "artifacts", result.run_id)


def raw_frame(users, games, hours=None, titles=None, timestamps=None) -> pl.DataFrame:
    """A canonical raw interactions frame (the readers' output) from parallel lists."""
    columns = {
        "user_id": users,
        "game_id": games,
        "title": titles if titles is not None else [None if g is None else str(g) for g in games],
        "play_time_hours": hours if hours is not None else [1.0] * len(users),
    }
    if timestamps is not None:
        columns["timestamp"] = timestamps
    overrides = {"title": pl.String, "play_time_hours": pl.Float64}
    return pl.DataFrame(columns, schema_overrides=overrides)
