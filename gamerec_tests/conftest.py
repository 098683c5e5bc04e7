"""Fixtures shared by the whole suite: small resource sets in temporary folders."""

import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from gamerec_assets.definitions import STAGE_MODULES
from gamerec_assets.resources import (
    ComputeResource,
    EvaluationResource,
    IndexResource,
    PathsResource,
    SourceResource,
    SplitResource,
    TrainingResource,
    TuningResource,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
STEAM_200K = REPO_ROOT.parent / "shared" / "data" / "steam-200k.csv.gz"
requires_steam_200k = pytest.mark.skipif(
    not STEAM_200K.exists(), reason=f"real data set not found at {STEAM_200K}"
)
# Every materializable asset of the graph, in topological order.
ALL_ASSETS = (
    "interactions",
    "train_interactions",
    "val_interactions",
    "tuned_settings",
    "two_tower_checkpoint",
    "item_embeddings",
    "eval_metrics",
    "faiss_index",
    "serving_set",
)


GRAPH = [
    *dg.load_assets_from_modules(STAGE_MODULES),
    *dg.load_asset_checks_from_modules(STAGE_MODULES),
]
"""Every asset and check, without the code versions and automation of `definitions`."""


def materialize(resources, instance, selection=None, raise_on_error=True):
    """The whole graph (or `selection`) in this process, as `dagster.materialize` runs it."""
    return dg.materialize(
        GRAPH,
        resources=resources,
        instance=instance,
        selection=selection,
        raise_on_error=raise_on_error,
    )


def clustered_interactions(
    n_users: int = 120, n_clusters: int = 4, games_per_cluster: int = 12, per_user: int = 6
) -> pl.DataFrame:
    """Users in clusters owning games of their cluster: a model learns it, popularity cannot.

    Every game of a cluster is equally popular, so only the cluster structure tells a
    user's held-out game apart; play hours rise with the game's position in the user's list.
    """
    rows = []
    for user in range(n_users):
        cluster = user % n_clusters
        for position in range(per_user):
            game = cluster * games_per_cluster + (user // n_clusters + position) % games_per_cluster
            rows.append((user + 1, 1000 + game, float(1 + (position * 7 + user) % 13)))
    return pl.DataFrame(rows, schema=["user_id", "game_id", "play_time_hours"], orient="row")


def write_source(path: Path, scale: float = 1.0, frame: pl.DataFrame | None = None) -> None:
    """An input CSV of `frame` (default: `clustered_interactions()`) with play hours times
    `scale`; another scale gives an edited file of the same shape."""
    frame = clustered_interactions() if frame is None else frame
    frame.with_columns(play_time_hours=pl.col("play_time_hours") * scale).write_csv(path)


@pytest.fixture
def file_source(tmp_path: Path):
    """An input CSV (`write_source`), small resources that read it, and a test instance."""
    source = tmp_path / "interactions.csv"
    write_source(source)
    resources = small_resources(tmp_path, kind="interactions", path=str(source))
    with dg.instance_for_test() as instance:
        yield source, resources, instance


def project_environment(tmp_path: Path) -> dict[str, str]:
    """Settings for a run in tmp_path: its own DAGSTER_HOME and folders, quick training."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return {
        "DAGSTER_HOME": str(home),
        "DATA_DIR": str(tmp_path / "data"),
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "GAMEREC_SYNTHETIC_USERS": "500",
        "GAMEREC_SYNTHETIC_GAMES": "120",
        "GAMEREC_SYNTHETIC_INTERACTIONS": "7000",
        "TRAIN_EPOCHS": "2",
        "EMBED_DIM": "16",
        "BATCH_SIZE": "256",
        "GAMEREC_TUNE_TRIALS": "2",
        "GAMEREC_TUNE_PARAMS": "temperature,negatives",
    }


def with_settings(resource: dg.ConfigurableResource, **changes) -> dg.ConfigurableResource:
    """A copy of a resource with some fields changed.

    Build a new instance: pydantic's `model_copy(update=...)` changes the Python object but
    not the configuration Dagster initializes the resource from in a run.
    """
    return type(resource)(**{**resource.model_dump(), **changes})


def small_resources(tmp_path: Path, **source_overrides) -> dict:
    """Every resource, pointed at tmp_path, on a synthetic data set that trains in seconds."""
    source = {
        "kind": "synthetic",
        "synthetic_users": 400,
        "synthetic_games": 120,
        "synthetic_interactions": 6_000,
        **source_overrides,
    }
    return {
        "paths": PathsResource(
            data_dir=str(tmp_path / "data"), artifacts_dir=str(tmp_path / "artifacts")
        ),
        "source": SourceResource(**source),
        "split": SplitResource(),
        # the history MLP is off by default; on here, so the graph, the exported user tower
        # and the Recommender's fold-in are tested with it
        "training": TrainingResource(
            epochs=3, batch_size=256, embed_dim=16, lr=0.01, history_mlp=32
        ),
        "tuning": TuningResource(trials=2, params="temperature,negatives"),
        "evaluation": EvaluationResource(k=20),
        "index": IndexResource(),
        "compute": ComputeResource(device="cpu", num_threads=2),
    }


@pytest.fixture
def resources(tmp_path: Path) -> dict:
    return small_resources(tmp_path)
