"""The whole graph through `dagster.materialize` on small synthetic data, and on Steam-200k."""

import base64
import json

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from gamerec_assets import Recommender
from gamerec_assets.assets import evaluation as evaluation_assets
from gamerec_assets.core.index import read_index, search
from gamerec_assets.core.manifest import MANIFEST_FILE, SERVING_FILES
from gamerec_assets.core.training.checkpoint import checkpoint_fingerprint, load_checkpoint
from gamerec_tests.conftest import (
    ALL_ASSETS,
    STEAM_200K,
    clustered_interactions,
    materialize,
    requires_steam_200k,
    small_resources,
    with_settings,
)


def materialized_keys(result) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def check_outcomes(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def built(tmp_path, instance):
    """A full successful run on small synthetic data: (resources, result)."""
    resources = small_resources(tmp_path)
    return resources, materialize(resources, instance)


def test_full_graph_materializes_every_asset_and_passes_every_check(built):
    _, result = built
    assert result.success
    assert materialized_keys(result) == {"raw_interactions", *ALL_ASSETS}
    outcomes = check_outcomes(result)
    assert len(outcomes) == 11  # the search has none: the checkpoint's checks follow it
    failed = {name for name, passed in outcomes.items() if not passed}
    assert not failed


def test_artifacts_are_real_and_consistent(built):
    resources, _ = built
    paths = resources["paths"].settings()
    interactions = pl.read_parquet(paths.interactions)
    catalog = pl.read_parquet(paths.catalog)
    train, val = pl.read_parquet(paths.train_interactions), pl.read_parquet(paths.val_interactions)
    assert catalog["item_idx"].to_list() == list(range(catalog.height))
    assert train.height + val.height == interactions.height
    assert val.join(train, on=["user_idx", "item_idx"]).height == 0

    model, checkpoint = load_checkpoint(paths.checkpoint)
    assert checkpoint["config"]["embed_dim"] == 16
    assert 1 <= checkpoint["best_epoch"] == checkpoint["epochs_run"] <= 3  # refit: best epochs
    assert len(checkpoint["tuning_ndcg"]) >= checkpoint["best_epoch"]
    embeddings = np.load(paths.item_embeddings)
    assert embeddings.shape == (catalog.height, 16) and embeddings.dtype == np.float32
    assert np.array_equal(embeddings, model.item_vectors().numpy())
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)  # cosine model

    metrics = json.loads(paths.metrics.read_text())
    assert metrics["n_eval_users"] == val.height
    for name in ("recall@20", "ndcg@20", "recall@10", "recall@50", "mrr"):
        assert 0.0 <= metrics[name] <= 1.0
        assert 0.0 <= metrics["baselines"]["popularity"][name] <= 1.0
    assert metrics["recall@10"] <= metrics["recall@20"] <= metrics["recall@50"]

    index = read_index(paths.faiss_index)
    assert index.ntotal == catalog.height and index.d == 16
    scores, ids = search(index, embeddings[:5], 10)
    brute = embeddings[:5] @ embeddings.T
    assert np.allclose(scores, -np.sort(-brute, axis=1)[:, :10], atol=1e-5)
    assert np.allclose(np.take_along_axis(brute, ids, axis=1), scores, atol=1e-5)


def test_metadata_describes_each_asset(built):
    _, result = built
    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert metadata["interactions"]["dagster/row_count"].value > 0
    assert metadata["two_tower_checkpoint"]["final_loss"].value > 0
    checkpoint = metadata["two_tower_checkpoint"]
    assert len(checkpoint["epoch_losses"].value) == checkpoint["epochs_trained"].value
    assert "popularity_recall@20" in metadata["eval_metrics"]
    assert metadata["faiss_index"]["ntotal"].value == metadata["interactions"]["n_games"].value
    assert set(metadata["serving_set"]["files"].value) == set(SERVING_FILES)
    # the training curve is an embedded PNG the UI renders
    curve = metadata["two_tower_checkpoint"]["training_curve"].value
    prefix = "![training curve](data:image/png;base64,"
    assert curve.startswith(prefix) and curve.endswith(")")
    assert base64.b64decode(curve[len(prefix) : -1]).startswith(b"\x89PNG")
    # sample recommendations name real catalog titles, none of them a game the user owns
    resources, _ = built
    paths = resources["paths"].settings()
    catalog = pl.read_parquet(paths.catalog)
    samples = metadata["serving_set"]["sample_recommendations"].value.splitlines()
    assert samples[0] == "| user_id | games | most played | top 5 recommended |"
    assert len(samples) == 2 + 3
    user_games = pl.read_parquet(paths.user_games)
    for line in samples[2:]:
        user_id, _, most_played, recommended = (cell.strip() for cell in line.strip("|").split("|"))
        titles = recommended.split(", ")
        assert len(titles) == 5 and set(titles) <= set(catalog["title"])
        owned = user_games.filter(pl.col("user_id") == int(user_id))["item_idx"]
        assert not set(titles) & set(catalog["title"].gather(owned))
        assert set(most_played.split(", ")) <= set(catalog["title"].gather(owned))


def test_training_takes_the_searched_settings_and_the_best_trials_length(built, instance):
    resources, result = built
    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    search = metadata["tuned_settings"]
    assert search["trials"].value == 2 and search["searched"].value == ["temperature", "negatives"]
    chosen = search["chosen"].value
    assert set(chosen) == {"temperature", "negatives"}
    assert search["best_tuning_ndcg"].value >= search["defaults_tuning_ndcg"].value
    history = search["trial_history"].value
    assert history.startswith("![trials](data:image/png;base64,") and "| trial | state |" in history
    paths = resources["paths"].settings()
    _, checkpoint = load_checkpoint(paths.checkpoint)
    assert {name: checkpoint["config"][name] for name in chosen} == chosen
    assert checkpoint["config"]["embed_dim"] == 16 and checkpoint["config"]["lr"] == 0.01  # fixed
    tuned = json.loads(paths.tuned_settings.read_text())
    assert metadata["two_tower_checkpoint"]["length_from_search"].value is True
    assert metadata["two_tower_checkpoint"]["model_from_search"].value is False  # refit
    assert checkpoint["epochs_run"] == tuned["best_period"]  # no selection phase of its own
    assert checkpoint["tuning_ndcg"] == tuned["tuning_curve"]
    again = materialize(resources, instance, selection=["tuned_settings"])
    repeat = again.get_asset_materialization_events()[0].materialization.metadata
    assert repeat["chosen"].value == chosen  # the study resumed with its trials done
    assert repeat["search_seconds"].value < 1.0


def test_without_a_refit_training_takes_the_search_trials_model(tmp_path, instance):
    resources = small_resources(tmp_path)
    resources["training"] = with_settings(resources["training"], refit=False)
    result = materialize(resources, instance)
    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert metadata["two_tower_checkpoint"]["model_from_search"].value is True
    paths = resources["paths"].settings()
    tuned = json.loads(paths.tuned_settings.read_text())
    assert tuned["model_path"] and tuned["split_key"]
    kept, _ = load_checkpoint(tuned["model_path"])
    trained, checkpoint = load_checkpoint(paths.checkpoint)
    for name, tensor in kept.state_dict().items():
        assert torch.equal(tensor, trained.state_dict()[name]), name
    assert checkpoint["best_epoch"] == tuned["best_epoch"]
    assert checkpoint["tuning_ndcg"] == tuned["tuning_curve"]


def test_index_alone_rebuilds_from_stored_embeddings(built, instance):
    resources, _ = built
    paths = resources["paths"].settings()
    checkpoint_bytes = paths.checkpoint.read_bytes()
    paths.faiss_index.unlink()
    result = materialize(resources, instance, selection="faiss_index")
    assert result.success
    assert materialized_keys(result) == {"faiss_index"}
    assert set(check_outcomes(result)) == {
        "faiss_index_matches_catalog",
        "faiss_index_matches_exact_search",
    }
    assert all(check_outcomes(result).values())
    assert paths.faiss_index.exists()
    assert paths.checkpoint.read_bytes() == checkpoint_bytes


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda frame: frame.rename({"user_id": "player"}), "missing required column(s) user_id"),
        (
            lambda frame: frame.with_columns(play_time_hours=pl.lit("lots")),
            "column play_time_hours: expected a number",
        ),
        (
            lambda frame: frame.with_columns(
                play_time_hours=pl.when(pl.col("user_id") == 3).then(-5.0).otherwise(1.0)
            ),
            "column play_time_hours: expected a finite number >= 0",
        ),
    ],
    ids=["missing-column", "text-hours", "negative-hours"],
)
def test_unreadable_input_fails_the_run_and_leaves_every_artifact_as_it_was(
    tmp_path, instance, corrupt, message
):
    source_file = tmp_path / "interactions.csv"
    frame = clustered_interactions()
    frame.write_csv(source_file)
    resources = small_resources(tmp_path, kind="interactions", path=str(source_file))
    assert materialize(resources, instance).success
    before = _every_file(tmp_path)

    corrupt(frame).write_csv(source_file)
    result = materialize(resources, instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert message in str(failure.event_specific_data.error) and str(source_file) in str(
        failure.event_specific_data.error
    )
    assert _every_file(tmp_path) == before  # the same files, byte for byte, and no others
    # only the fingerprint is new: the copy of the bad file that `interactions` refused
    snapshots = sorted((tmp_path / "data" / "source").iterdir(), key=lambda p: p.stat().st_mtime)
    assert snapshots[-1].read_bytes() == source_file.read_bytes()


def _every_file(tmp_path) -> dict:
    """Every file under artifacts/ and data/, except the copies of the input the fingerprint
    keeps (data/source/)."""
    folders = [tmp_path / "artifacts", tmp_path / "data"]
    source = tmp_path / "data" / "source"
    return {
        p: p.read_bytes()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file() and source not in p.parents
    }


def test_trained_model_clearly_beats_popularity_on_synthetic_data(tmp_path, instance):
    resources = small_resources(
        tmp_path, synthetic_users=3_000, synthetic_games=400, synthetic_interactions=45_000
    )
    resources["training"] = with_settings(
        resources["training"], epochs=5, embed_dim=32, batch_size=512
    )
    result = materialize(resources, instance)
    metrics = json.loads(resources["paths"].settings().metrics.read_text())
    popularity = metrics["baselines"]["popularity"]
    assert metrics["recall@20"] > 1.2 * popularity["recall@20"]
    assert metrics["ndcg@20"] > 1.2 * popularity["ndcg@20"]
    assert check_outcomes(result)["model_beats_popularity"]


@requires_steam_200k
def test_steam_200k_graph_gives_sane_numbers(tmp_path, instance):
    resources = small_resources(tmp_path, kind="steam200k", path=str(STEAM_200K))
    resources["training"] = with_settings(
        resources["training"], epochs=2, embed_dim=32, batch_size=1024, lr=1e-3
    )
    resources["evaluation"] = with_settings(resources["evaluation"], ease_l2=200.0)
    result = materialize(resources, instance)
    assert result.success
    metrics = json.loads(resources["paths"].settings().metrics.read_text())
    assert metrics["n_eval_users"] == 6_693
    assert metrics["n_games"] == 5_155
    popularity = metrics["baselines"]["popularity"]
    # Independent implementation of the same protocol: popularity R@20 0.545, NDCG@20 0.324.
    assert popularity["recall@20"] == pytest.approx(0.545, abs=0.002)
    assert popularity["ndcg@20"] == pytest.approx(0.324, abs=0.002)
    # EASE at L2 200 on this protocol, as measured by benchmarks/quality.py's grid.
    assert metrics["baselines"]["ease"]["recall@20"] == pytest.approx(0.6694, abs=0.002)
    assert metrics["baselines"]["ease"]["ndcg@20"] == pytest.approx(0.4669, abs=0.002)
    assert 0.05 < metrics["recall@20"] < 1.0
    assert torch.isfinite(torch.tensor(metrics["ndcg@20"]))


def test_ease_is_skipped_with_a_message_above_its_size_limit(tmp_path, instance, monkeypatch):
    monkeypatch.setattr(evaluation_assets, "EASE_MAX_ITEMS", 10)
    resources = small_resources(tmp_path)
    result = materialize(resources, instance)
    assert result.success
    metrics = json.loads(resources["paths"].settings().metrics.read_text())
    assert set(metrics["baselines"]) == {"popularity", "als"}
    assert "above EASE's limit of 10" in metrics["baselines_skipped"]["ease"]


def test_two_runs_on_cpu_give_identical_metrics_and_byte_identical_artifacts(built, tmp_path):
    """Same data, configuration and seed, another folder: the same answer, byte for byte."""
    resources, _ = built
    again = small_resources(tmp_path / "again")
    with dg.instance_for_test() as other_instance:
        materialize(again, other_instance)
    first, second = resources["paths"].settings(), again["paths"].settings()
    for name in ("item_embeddings", "user_tower", "faiss_index", "catalog", "user_games"):
        assert getattr(first, name).read_bytes() == getattr(second, name).read_bytes(), name
    assert json.loads(first.metrics.read_text()) == json.loads(second.metrics.read_text())
    # torch.save stamps each file with a random id; the weights and history are what must match
    assert checkpoint_fingerprint(first.checkpoint) == checkpoint_fingerprint(second.checkpoint)


def _published(paths) -> dict:
    folder = paths.published
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != ".publish.lock"  # the publishers' lock, empty
    }


def test_a_model_worse_than_popularity_leaves_the_published_set_as_it_was(built, instance):
    """The gate fails after the new checkpoint, embeddings and metrics are staged: none of
    them reaches ARTIFACTS_DIR, serving goes on from the previous set, and publishing on its
    own does not sneak the failed model in either."""
    resources, _ = built
    paths = resources["paths"].settings()
    before = _published(paths)
    assert set(before) == {*SERVING_FILES, MANIFEST_FILE}
    worse = {
        **resources,
        "training": with_settings(resources["training"], lr=1e-7, epochs=1, select_epochs=False),
    }
    result = materialize(worse, instance, raise_on_error=False)
    assert not result.success
    assert check_outcomes(result)["model_beats_popularity"] is False
    assert "serving_set" not in materialized_keys(result)  # Dagster skipped it
    assert paths.checkpoint.read_bytes() != before["two_tower.pt"]  # the new model is staged
    assert _published(paths) == before
    assert Recommender.load(paths.artifacts_dir).index.ntotal == 120

    alone = materialize(worse, instance, selection=["serving_set"], raise_on_error=False)
    assert not alone.success
    failure = next(e for e in alone.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "not publishing: model_beats_popularity on eval_metrics failed (model recall@20" in (
        message
    )
    assert _published(paths) == before


def test_training_as_a_two_process_torchrun_job_streams_into_the_run(tmp_path, instance):
    """TRAIN_NPROC=2: the checkpoint asset launches torchrun through Dagster Pipes; rank 0's
    log lines and metadata arrive in this run, and the rest of the graph runs on its output."""
    resources = small_resources(tmp_path)
    resources["training"] = with_settings(resources["training"], nproc=2)
    result = materialize(resources, instance)
    assert result.success and all(check_outcomes(result).values())
    metadata = next(
        event.materialization.metadata
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "two_tower_checkpoint"
    )
    assert metadata["world_size"].value == 2 and metadata["backend"].value == "gloo"
    assert metadata["fit_seconds"].value > 0
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("rank 0 of 2 processes (gloo)" in message for message in messages)
    assert any(message.startswith("refit epoch 1: loss") for message in messages)
    model, checkpoint = load_checkpoint(resources["paths"].settings().published / "two_tower.pt")
    assert checkpoint["extra"]["world_size"] == 2 and model.n_items == 120
    assert Recommender.load(resources["paths"].artifacts_dir).index.ntotal == 120


def test_publishing_alone_an_inconsistent_staging_is_refused(built, instance):
    """Staged embeddings that are not the staged checkpoint's (a half-finished run, a file
    copied in): publishing refuses and serving keeps the old set."""
    resources, _ = built
    paths = resources["paths"].settings()
    before = _published(paths)
    np.save(paths.item_embeddings, np.load(paths.item_embeddings) * 2.0)
    result = materialize(resources, instance, selection=["serving_set"], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "not publishing" in message
    assert "item_emb.npy is not the item tower of two_tower.pt: materialize item_embeddings" in (
        message
    )
    assert _published(paths) == before


def test_a_temporal_split_reports_the_cold_and_its_check_guards_the_cutoff(tmp_path, instance):
    from gamerec_assets.assets.splits import split_respects_cutoff

    resources = small_resources(tmp_path)
    resources["split"] = with_settings(resources["split"], strategy="temporal", cutoff="0.3")
    up_to_the_split = ["raw_interactions", "interactions", "train_interactions", "val_interactions"]
    result = materialize(resources, instance, selection=up_to_the_split)
    assert result.success and check_outcomes(result)["split_respects_cutoff"]
    val = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "val_interactions"
    )
    for name in ("cutoff", "players_first_seen_after_cutoff", "games_first_seen_after_cutoff"):
        assert name in val
    paths = resources["paths"].settings()
    train = pl.read_parquet(paths.train_interactions)
    held = pl.read_parquet(paths.val_interactions)
    assert train["timestamp"].max() < held["timestamp"].min()
    # a training row after the cut-off is what the blocking check is there to catch
    late = train.head(1).with_columns(timestamp=held["timestamp"].max())
    pl.concat([train, late]).write_parquet(paths.train_interactions)
    outcome = split_respects_cutoff(paths=resources["paths"], split=resources["split"])
    assert not outcome.passed and "training reaches" in outcome.description
