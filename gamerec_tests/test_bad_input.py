"""Bad input the graph must refuse early and clearly (reader-level cases: core/test_sources.py).

Each run here reads a tiny CSV through the real `interactions` source and fails at the first
step that can see the problem, with a message that names what was expected; nothing after
that step runs, so no artifact is touched.
"""

import logging
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from gamerec_assets.core.evaluation import cutoff_warning, require_cutoff_below_catalog
from gamerec_assets.core.metrics import TrainItems, evaluate_scorer
from gamerec_assets.definitions import STAGE_MODULES
from gamerec_tests.conftest import clustered_interactions, small_resources, with_settings

GRAPH = [
    *dg.load_assets_from_modules(STAGE_MODULES),
    *dg.load_asset_checks_from_modules(STAGE_MODULES),
]


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def csv_source_resources(tmp_path: Path, frame: pl.DataFrame) -> dict:
    """Small resources reading `frame`, written to tmp_path/interactions.csv."""
    source_file = tmp_path / "interactions.csv"
    frame.write_csv(source_file)
    return small_resources(tmp_path, kind="interactions", path=str(source_file))


def failed_run(
    resources: dict, instance, run_config: dict | None = None, selection: list[str] | None = None
):
    """Materialize the graph (or `selection`), expecting failure: (materialized keys, error
    text)."""
    result = dg.materialize(
        GRAPH,
        resources=resources,
        instance=instance,
        run_config=run_config,
        selection=selection,
        raise_on_error=False,
    )
    assert not result.success
    keys = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    errors = [
        str(e.event_specific_data.error)
        for e in result.all_events
        if getattr(e.event_specific_data, "error", None) is not None
    ]
    return keys, "\n".join(errors)


# --- core: the evaluation cut-off against the catalog size ---------------------------------


def test_recall_at_catalog_minus_one_is_one_for_any_scorer():
    """Why the bound is n_items - 2: a held-out rank can never reach n_items - 1."""
    n_items, n_users = 5, 200
    rng = np.random.default_rng(0)
    owned = [
        rng.choice(n_items, size=int(rng.integers(2, n_items)), replace=False)
        for _ in range(n_users)
    ]
    users = np.repeat(np.arange(n_users), [len(games) - 1 for games in owned])
    items = np.concatenate([games[1:] for games in owned])
    metrics = evaluate_scorer(
        lambda chunk: torch.from_numpy(rng.random((len(chunk), n_items))).float(),
        n_items,
        TrainItems.from_pairs(users, items, n_users),
        np.arange(n_users),
        np.array([games[0] for games in owned]),
        (n_items - 2, n_items - 1),
    )
    ranks = np.rint(1 / metrics.values["mrr"] - 1)
    assert ranks.max() == n_items - 2  # reached, never passed: Recall@(n_items - 1) is 1
    assert metrics.mean()[f"recall@{n_items - 1}"] == 1.0


def test_cutoff_too_large_for_the_catalog_is_an_error_naming_both():
    with pytest.raises(ValueError) as caught:
        require_cutoff_below_catalog(20, 5)
    assert str(caught.value) == (
        "VAL_K=20 is too large for a catalog of 5 games: a held-out game ranks among at most 4 "
        "candidates (the user's training games are masked), so Recall@20 would be 1 for any "
        "model; set VAL_K to at most 3 or use a larger catalog"
    )
    with pytest.raises(ValueError, match="VAL_K=4 is too large"):
        require_cutoff_below_catalog(4, 5)
    require_cutoff_below_catalog(3, 5)


@pytest.mark.parametrize("n_items", [1, 2])
def test_catalog_under_three_games_cannot_be_evaluated(n_items):
    with pytest.raises(ValueError, match=f"catalog of {n_items} game.* needs at least 3 games"):
        require_cutoff_below_catalog(1, n_items)


# --- graph: the run stops at the first step that can see the problem -----------------------


def test_every_user_with_one_game_fails_at_the_split_before_training(tmp_path, instance):
    frame = pl.DataFrame({"user_id": [1, 2, 3, 4], "game_id": [10, 11, 12, 10]})
    resources = csv_source_resources(tmp_path, frame)
    keys, error = failed_run(resources, instance)
    assert keys == {"raw_interactions", "interactions"}
    assert "nothing to evaluate: each of the 4 users has a single game" in error
    assert "users with >= 2 games" in error
    paths = resources["paths"].settings()
    assert not paths.train_interactions.exists() and not paths.val_interactions.exists()


def test_catalog_smaller_than_val_k_fails_at_the_split_before_training(tmp_path, instance):
    users = np.arange(40)
    frame = pl.DataFrame(
        {
            "user_id": np.repeat(users, 2),
            "game_id": np.stack([users % 5, (users + 1) % 5], axis=1).ravel(),
            "play_time_hours": np.tile([2.0, 1.0], len(users)),
        }
    )
    resources = csv_source_resources(tmp_path, frame)
    keys, error = failed_run(resources, instance)  # small_resources has VAL_K = 20
    assert keys == {"raw_interactions", "interactions"}
    assert "VAL_K=20 is too large for a catalog of 5 games" in error
    assert "set VAL_K to at most 3" in error
    assert not resources["paths"].settings().checkpoint.exists()


@pytest.mark.parametrize("bad", [-5.0, float("nan"), float("inf")], ids=["negative", "nan", "inf"])
def test_invalid_hours_fail_at_ingestion_naming_file_row_and_column(tmp_path, instance, bad):
    frame = clustered_interactions().with_columns(
        play_time_hours=pl.when(pl.int_range(pl.len()) == 6).then(bad).otherwise(1.0)
    )
    resources = csv_source_resources(tmp_path, frame)
    keys, error = failed_run(resources, instance)
    assert keys == {"raw_interactions"}
    expected = (
        f"{tmp_path / 'interactions.csv'}: data row 7 (line 8), column play_time_hours: "
        f"expected a finite number >= 0 (hours played), got {bad!r} (1 such row)"
    )
    assert expected in error
    assert not resources["paths"].settings().interactions.exists()


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("epochs", 0, "> 0"),
        ("embed_dim", -1, "> 0"),
        ("lr", 0.0, "> 0"),
        ("batch_size", 0, ">= 2"),
        ("batch_size", 1, ">= 2 (a batch of one pair has no in-batch negative: its softmax is 1"),
    ],
)
def test_bad_hyperparameters_fail_the_run_before_any_asset(
    tmp_path, instance, field, value, allowed
):
    """Run config reaches the resources when the run starts (the graph runs in one process)."""
    resources = small_resources(tmp_path)
    run_config = {"resources": {"training": {"config": {field: value}}}}
    keys, error = failed_run(resources, instance, run_config)
    assert keys == set()
    assert f"(training.{field}): expected" in error and allowed in error
    assert not Path(resources["paths"].data_dir).exists()


def test_batch_larger_than_the_training_set_trains_one_batch_per_epoch(tmp_path, instance):
    """Awkward but valid input end to end: wide and negative ids, titles in any script,
    duplicate rows (merged and counted), and a batch above the number of training pairs."""
    frame = clustered_interactions(n_users=40)
    games = sorted(frame["game_id"].unique())
    titles = {game: f'Tom "{game}" ポケモン, 🎮' for game in games}
    frame = frame.with_columns(
        user_id=pl.col("user_id") * 2**56 - 2**62,
        title=pl.col("game_id").replace_strict(titles),
    )
    resources = csv_source_resources(tmp_path, pl.concat([frame, frame.head(3)]))
    resources["training"] = with_settings(resources["training"], batch_size=100_000)
    result = dg.materialize(GRAPH, resources=resources, instance=instance)
    assert result.success
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert 0 < metadata["train_interactions"]["dagster/row_count"].value < 100_000
    assert metadata["two_tower_checkpoint"]["epochs_trained"].value >= 1
    assert np.isfinite(metadata["eval_metrics"]["recall@20"].value)
    assert metadata["interactions"]["n_users"].value == 40
    assert metadata["interactions"]["source_duplicate_rows_merged"].value == 3
    catalog = pl.read_parquet(resources["paths"].settings().catalog)
    assert catalog.select("game_id", "title").rows() == list(titles.items())
    assert "ポケモン, 🎮" in metadata["serving_set"]["sample_recommendations"].value


def test_a_cutoff_near_the_catalog_size_is_warned_about():
    assert cutoff_warning(19, 40) is None
    assert cutoff_warning(20, 40) == (
        "VAL_K=20 is 51% of the 39 games a held-out game ranks among: a random ranking scores "
        "Recall@20 of about 0.51, so the metric tells little between models; set VAL_K to at "
        "most 19"
    )


def test_the_split_warns_in_the_run_log_when_val_k_is_near_the_catalog(tmp_path, instance):
    frame = clustered_interactions(n_clusters=4, games_per_cluster=10)  # 40 games, VAL_K 20
    resources = csv_source_resources(tmp_path, frame)
    selection = ["raw_interactions", "interactions", "train_interactions", "val_interactions"]
    result = dg.materialize(GRAPH, resources=resources, instance=instance, selection=selection)
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING
    ]
    assert any(message.startswith("VAL_K=20 is 51% of the 39 games") for message in warnings)


def test_interactions_alone_before_any_fingerprint_says_what_to_run(tmp_path, instance):
    resources = csv_source_resources(tmp_path, clustered_interactions())
    keys, error = failed_run(resources, instance, selection=["interactions"])
    assert keys == set()
    assert "has not been fingerprinted yet: materialize raw_interactions first" in error
