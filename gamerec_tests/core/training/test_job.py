"""One training job: selection and refit, its JSON form, and the run both launch paths call."""

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from gamerec_assets.core.io import file_sha256
from gamerec_assets.core.settings import TrainConfig, Tuning
from gamerec_assets.core.splits import leave_one_out_split, tuning_split
from gamerec_assets.core.training.checkpoint import checkpoint_config, load_checkpoint
from gamerec_assets.core.training.job import (
    TrainingJob,
    fit_two_tower,
    pairs_from_frame,
    run_training,
)
from gamerec_assets.core.training.loop import TuningSet, train_model
from gamerec_tests.core.training.helpers import FIT, assert_same_weights, quiet, train_frame


def test_fit_selects_epochs_then_refits_on_all_rows():
    frame = train_frame()
    config = replace(FIT, select_epochs=True, refit=True)
    lines: list[str] = []
    fit = fit_two_tower(frame, 20, 12, config, log=lines.append, progress=False)
    tuned, final = fit.tuning, fit.final
    assert tuned is not None and final is not tuned
    assert 1 <= tuned.best_epoch <= len(tuned.tuning_ndcg) <= FIT.epochs
    # The final result keeps the configuration as given; best_epoch says how long it trained.
    assert final.config == config
    assert final.best_epoch == tuned.best_epoch == len(final.epoch_losses)
    assert final.tuning_ndcg == tuned.tuning_ndcg
    final.tuning_ndcg.append(0.0)
    assert len(tuned.tuning_ndcg) == len(final.tuning_ndcg) - 1  # a copy, not the same list
    phases = [line.split(" ")[0] for line in lines]
    assert phases == ["tune"] * len(tuned.tuning_ndcg) + ["refit"] * len(final.epoch_losses)
    assert all("NDCG" not in line for line in lines if line.startswith("refit"))
    assert fit.seconds == pytest.approx(final.seconds + tuned.seconds)

    # the tuning run trained on the carved rows, the refit on every row of the frame
    carved = leave_one_out_split(frame, "max_playtime", FIT.seed)
    tuning_set = TuningSet(carved.val["user_idx"].to_numpy(), carved.val["item_idx"].to_numpy())
    expected_tuned = train_model(
        pairs_from_frame(carved.train), 20, 12, config, tuning=tuning_set, log=quiet
    )
    assert_same_weights(tuned.model, expected_tuned.model)
    assert tuned.tuning_ndcg == expected_tuned.tuning_ndcg
    expected_final = train_model(
        pairs_from_frame(frame), 20, 12, FIT, periods=tuned.best_period, log=quiet
    )
    assert_same_weights(final.model, expected_final.model)


def test_fit_without_epoch_selection_trains_configured_epochs():
    frame = train_frame()
    fit = fit_two_tower(frame, 20, 12, replace(FIT, epochs=3), log=quiet)
    assert fit.tuning is None
    assert len(fit.final.epoch_losses) == 3 and fit.final.tuning_ndcg == []
    expected = train_model(pairs_from_frame(frame), 20, 12, replace(FIT, epochs=3), log=quiet)
    assert_same_weights(fit.final.model, expected.model)


def test_fit_without_refit_returns_the_tuning_model():
    fit = fit_two_tower(train_frame(), 20, 12, replace(FIT, select_epochs=True), log=quiet)
    assert fit.tuning is not None and fit.final is fit.tuning
    assert fit.final.best_epoch == int(np.argmax(fit.final.tuning_ndcg)) + 1


def test_fit_with_no_tuning_pairs_trains_without_selection():
    frame = pl.DataFrame(  # every user has one game: nothing to carve a tuning split from
        {"user_idx": [0, 1, 2], "item_idx": [0, 1, 0], "play_time_hours": [1.0, 2.0, 3.0]}
    )
    config = replace(FIT, epochs=2, select_epochs=True, refit=True)
    fit = fit_two_tower(frame, 3, 2, config, log=quiet)
    assert fit.tuning is None and len(fit.final.epoch_losses) == 2


def test_the_tuning_split_of_latest_uses_the_timestamps():
    """The `latest` strategy carves its tuning split by time: the tuning set holds each user's
    most recent training game, whatever its hours or id."""
    frame = train_frame().with_columns(
        timestamp=pl.Series(np.arange(120)[::-1].copy()).cast(pl.Datetime("us"))
    )  # each user's first row (smallest item) is the latest
    config = replace(FIT, select_epochs=True, refit=False, epochs=2)
    lines: list[str] = []
    fit = fit_two_tower(frame, 20, 12, config, "latest", log=lines.append)
    assert fit.tuning is not None and all("tuning NDCG@20" in line for line in lines)
    carved = leave_one_out_split(frame, "latest", config.seed)
    first_games = frame.group_by("user_idx").agg(pl.col("item_idx").first()).sort("user_idx")
    assert carved.val.sort("user_idx")["item_idx"].to_list() == first_games["item_idx"].to_list()


def test_a_job_survives_its_json_form():
    job = TrainingJob(
        train_path="/d/train.parquet",
        n_users=3,
        n_items=4,
        checkpoint_path="/a/two_tower.pt",
        config=replace(TrainConfig(), lr=0.01, nproc=2),
        split_strategy="latest",
        tuning=Tuning(k=10, sample_users=100, every_pairs=5000),
        input_paths=("/a/catalog.parquet",),
        state_dir="/a/state",
        device="cpu",
        num_threads=1,
    )
    assert TrainingJob.from_json(job.to_json()) == job


def test_run_training_writes_a_checkpoint_that_records_its_inputs(tmp_path):
    train = tmp_path / "train_interactions.parquet"
    train_frame().write_parquet(train)
    config = replace(FIT, select_epochs=True, refit=True)
    job = TrainingJob(
        train_path=str(train),
        n_users=20,
        n_items=12,
        checkpoint_path=str(tmp_path / "two_tower.pt"),
        config=config,
        input_paths=(str(train),),
    )
    lines: list[str] = []
    fit = run_training(job, log=lines.append)
    model, payload = load_checkpoint(job.checkpoint_path)
    assert_same_weights(model, fit.final.model)
    assert checkpoint_config(payload) == config
    assert payload["extra"]["inputs"] == {train.name: file_sha256(train)}
    assert payload["extra"]["world_size"] == 1
    assert payload["extra"]["tuning_epoch_losses"] == fit.tuning.epoch_losses
    assert payload["tuning_ndcg"] == fit.tuning.tuning_ndcg
    assert lines[-1].startswith(f"wrote {job.checkpoint_path} after")


def test_the_tuning_split_holds_out_for_a_sample_of_users_only():
    frame = train_frame()
    whole = tuning_split(frame, "max_playtime", 0)
    sampled = tuning_split(frame, "max_playtime", 0, n_users=5)
    assert whole.val.height == 20 and sampled.val.height == 5
    assert sampled.train.height + sampled.val.height == frame.height
    assert sampled.val.join(whole.val, on=["user_idx", "item_idx"]).height == 5  # same games
    others = sampled.train.filter(~pl.col("user_idx").is_in(sampled.val["user_idx"].implode()))
    assert others.group_by("user_idx").len()["len"].min() == 6  # the rest keep every game
    assert tuning_split(frame, "max_playtime", 0, n_users=5).val.equals(sampled.val)  # seeded
    assert not tuning_split(frame, "max_playtime", 1, n_users=5).val.equals(sampled.val)


def test_no_refit_when_the_tuning_split_is_a_tiny_share_of_the_pairs():
    frame = train_frame()  # 120 pairs: one tuning user holds out 0.8%
    lines: list[str] = []
    tuning = Tuning(sample_users=1)
    config = replace(FIT, select_epochs=True, refit=True)
    fit = fit_two_tower(frame, 20, 12, config, tuning=tuning, log=lines.append)
    assert fit.final is fit.tuning
    assert lines[-1].startswith("no refit: the tuning split held out 0.83% of the training pairs")
    refit = fit_two_tower(frame, 20, 12, config, tuning=Tuning(sample_users=2), log=quiet)
    assert refit.final is not refit.tuning  # 1.7%: refit
