"""The automatic search: defaults first, fixed settings kept, a resumable study, and a result
a training run can take its settings and its length from."""

import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import optuna
import polars as pl
import pytest

from gamerec_assets.core.settings import SEARCH_SPACE, SettingError, TrainConfig, Tuning
from gamerec_assets.core.training.job import fit_two_tower
from gamerec_assets.core.tuning import (
    a_trial_fits,
    read_result,
    reusable_length,
    search,
    time_left,
    write_result,
)
from gamerec_tests.core.training.helpers import assert_same_weights, quiet, train_frame

SMALL = replace(
    TrainConfig(), epochs=3, batch_size=16, embed_dim=8, patience=1, negatives=0, seed=1
)
TUNING = Tuning(trials=3, budget=1000.0, minutes=0, params="lr,temperature,negatives")


def run_search(tmp_path, tuning=TUNING, fixed=frozenset(), name="study", config=SMALL, train=None):
    return search(
        train_frame() if train is None else train,
        20,
        12,
        config,
        tuning,
        "max_playtime",
        None,
        tmp_path / "study.journal",
        name,
        fixed=fixed,
        log=quiet,
    )


def test_the_search_starts_from_the_defaults_and_returns_the_best_trial(tmp_path):
    result = run_search(tmp_path)
    assert result is not None and len(result.trials) == 3
    first = result.trials[0]
    assert first["params"] == {"lr": SMALL.lr, "temperature": SMALL.temperature, "negatives": 0}
    finished = [t for t in result.trials if t["state"] == "complete"]
    assert result.tuning_ndcg == max(t["value"] for t in finished)
    assert set(result.params) == {"lr", "temperature", "negatives"}
    lo, hi = SEARCH_SPACE["lr"][1]
    assert all(lo <= t["params"]["lr"] <= hi for t in result.trials[1:])
    assert result.best_period >= 1 and len(result.tuning_curve) >= result.best_period


def test_fixed_settings_are_not_searched(tmp_path):
    result = run_search(tmp_path, fixed={"lr", "negatives"})
    assert set(result.params) == {"temperature"}
    assert all(t["params"].keys() == {"temperature"} for t in result.trials)
    assert result.trial_config["lr"] == SMALL.lr


def test_a_study_resumes_with_its_trials_and_runs_no_more_than_the_budget(tmp_path):
    first = run_search(tmp_path)
    again = run_search(tmp_path)  # the same study, its 3 trials done: nothing is trained
    assert [t["value"] for t in again.trials] == [t["value"] for t in first.trials]
    more = run_search(tmp_path, replace(TUNING, trials=4))
    assert len(more.trials) == 4 and more.trials[:3] == first.trials


def test_nothing_to_search_gives_no_result(tmp_path):
    assert run_search(tmp_path, replace(TUNING, trials=0)) is None
    assert run_search(tmp_path, fixed={"lr", "temperature", "negatives"}) is None


def test_the_result_survives_its_file_and_gives_its_length_to_the_same_config(tmp_path):
    result = run_search(tmp_path)
    write_result(tmp_path / "tuned.json", result)
    assert read_result(tmp_path / "tuned.json") == result
    tuned = result.apply(SMALL)
    length = reusable_length(result, tuned)
    assert length is not None and length.periods == result.best_period
    assert reusable_length(result, replace(tuned, epochs=7)) is None  # trained otherwise
    fit = fit_two_tower(train_frame(), 20, 12, tuned, known_length=length, log=quiet)
    assert fit.tuning is None  # no selection phase: the search's trial was it
    assert len(fit.final.epoch_losses) == length.periods
    assert fit.final.tuning_ndcg == result.tuning_curve
    assert result.model_path is None  # a refit follows this tuning split: no model is kept


def test_a_final_trial_model_is_kept_and_training_takes_it_as_it_would_have_trained_it(
    tmp_path,
):
    no_refit = replace(SMALL, refit=False)  # the tuned model is final, as on large data
    result = run_search(tmp_path, config=no_refit)
    kept = list((tmp_path / "tuning_models").glob("*/trial_*.pt"))
    assert [str(path) for path in kept] == [result.model_path]
    tuned = result.apply(no_refit)
    messages = []
    taken = fit_two_tower(
        train_frame(),
        20,
        12,
        tuned,
        known_length=reusable_length(result, tuned),
        log=messages.append,
    )
    assert any("taking the search's model" in m for m in messages) and taken.tuning is None
    trained = fit_two_tower(train_frame(), 20, 12, tuned, log=quiet)
    assert_same_weights(taken.final.model, trained.final.model)
    assert taken.final.epoch_losses == trained.final.epoch_losses
    assert taken.final.best_period == trained.final.best_period


def test_a_kept_model_of_other_data_is_not_taken_and_a_new_study_drops_old_models(tmp_path):
    no_refit = replace(SMALL, refit=False)
    result = run_search(tmp_path, config=no_refit)
    tuned = result.apply(no_refit)
    other = train_frame().filter(pl.col("item_idx") != 0)
    messages = []
    fit = fit_two_tower(
        other, 20, 12, tuned, known_length=reusable_length(result, tuned), log=messages.append
    )
    assert any("another tuning split" in m for m in messages) and fit.tuning is not None
    again = run_search(tmp_path, config=no_refit, name="another")
    assert Path(again.model_path).exists() and not Path(result.model_path).exists()


def test_only_searchable_settings_may_be_listed():
    with pytest.raises(SettingError, match="GAMEREC_TUNE_PARAMS='lr,epochs'.*epochs cannot"):
        Tuning(params="lr,epochs")
    assert Tuning(params="lr, temperature").searched({"lr"}) == ["temperature"]


def test_a_budget_of_zero_runs_the_defaults_trial_alone(tmp_path):
    result = run_search(tmp_path, replace(TUNING, budget=0.0))
    assert len(result.trials) == 1 and result.trials[0]["params"]["lr"] == SMALL.lr


def finished(*seconds):
    state = optuna.trial.TrialState.COMPLETE
    trials = [SimpleNamespace(state=state, user_attrs={"seconds": s}) for s in seconds]
    return SimpleNamespace(trials=trials)


def test_the_time_left_is_a_multiple_of_the_defaults_trial_within_the_minutes():
    tuning = Tuning(budget=2.0, minutes=0)
    assert time_left(finished(), tuning) == 0.0  # nothing measured yet
    assert time_left(finished(30.0), tuning) == 60.0
    assert time_left(finished(30.0, 25.0, 10.0), tuning) == 25.0
    assert time_left(finished(30.0, 50.0, 20.0), tuning) < 0  # spent: no trial starts
    assert time_left(finished(600.0), Tuning(budget=2.0, minutes=15)) == 300.0  # the cap


def test_a_trial_starts_only_while_the_time_left_holds_one_as_long_as_the_defaults():
    tuning = Tuning(budget=1.5, minutes=0)
    assert not a_trial_fits(finished(), tuning)  # nothing measured yet
    assert a_trial_fits(finished(30.0), tuning)  # 45 s left
    assert not a_trial_fits(finished(30.0, 30.0), tuning)  # 15 s: the deadline would cut it
    assert a_trial_fits(finished(30.0, 10.0), tuning)  # a quicker trial leaves 35 s
    assert not a_trial_fits(finished(600.0), Tuning(budget=1.5, minutes=15))  # the cap
    assert not a_trial_fits(finished(30.0), Tuning(budget=0.9, minutes=0))  # below 1
    assert not a_trial_fits(finished(0.0), tuning)  # no time left: nothing fits


def test_the_search_stops_once_no_trial_fits(tmp_path, monkeypatch):
    from gamerec_assets.core import tuning as tuning_module

    def time_left(study, tuning):  # room for the defaults' trial and one more
        return 1e9 if len(tuning_module._finished(study)) < 2 else 0.0

    monkeypatch.setattr(tuning_module, "time_left", time_left)
    result = run_search(tmp_path, replace(TUNING, trials=5))
    assert [t["state"] for t in result.trials] == ["complete", "complete"]


def test_the_second_trial_flips_playtime_weighting_when_it_is_searched(tmp_path):
    tuning = replace(TUNING, trials=2, params="lr,playtime_weighting")
    result = run_search(tmp_path, tuning)
    first, second = (trial["params"] for trial in result.trials)
    assert first == {"lr": SMALL.lr, "playtime_weighting": SMALL.playtime_weighting}
    assert second == {"lr": SMALL.lr, "playtime_weighting": not SMALL.playtime_weighting}


def test_play_time_weighting_is_not_searched_when_play_times_do_not_differ(tmp_path):
    train = train_frame().with_columns(play_time_hours=pl.lit(1.0))  # e.g. check-ins
    config = replace(SMALL, playtime_weighting=False)  # nothing to weight by
    tuning = replace(TUNING, trials=2, params="lr,playtime_weighting")
    result = run_search(tmp_path, tuning, config=config, train=train)
    assert all(trial["params"].keys() == {"lr"} for trial in result.trials)


def test_the_id_tower_does_not_search_the_settings_only_a_history_reads(tmp_path):
    config = replace(SMALL, user_tower="id")
    tuning = replace(TUNING, trials=2, params="lr,history_dropout,history_sample,history_mlp")
    result = run_search(tmp_path, tuning, config=config)
    assert all(trial["params"].keys() == {"lr"} for trial in result.trials)


def test_a_trial_running_when_the_time_is_spent_stops_at_its_next_score(tmp_path, monkeypatch):
    from gamerec_assets.core import tuning as tuning_module

    real_train = tuning_module.train_model

    def slow_scores(*args, on_score, **kwargs):  # each score comes 0.6 s after the last
        def later(period, score):
            time.sleep(0.6)
            on_score(period, score)

        return real_train(*args, on_score=later, **kwargs)

    monkeypatch.setattr(tuning_module, "train_model", slow_scores)
    monkeypatch.setattr(tuning_module, "time_left", lambda study, tuning: 0.5)
    monkeypatch.setattr(tuning_module, "a_trial_fits", lambda study, tuning: True)
    result = run_search(tmp_path, replace(TUNING, trials=2))
    assert [t["state"] for t in result.trials] == ["complete", "pruned"]
    assert result.params["lr"] == SMALL.lr  # the defaults' trial is the only complete one
