"""Automatic per-data-set tuning: an Optuna study of the settings that matter, on the tuning
split carved from the training data (never the evaluation hold-out).

Each trial trains the model with some settings on the tuning split's training part and
scores it after every period; the trial's value is its best tuning NDCG (its length chosen as
the graph chooses it), and TPE proposes the next settings from the trials so far. Trials that
score below the median of earlier trials at the same period are pruned early. The first trial
is the declared defaults, so the search can only return something at least as good on the
tuning split. The study lives in a journal file, so a killed search resumes with the trials it
had, and the result records the best settings, the length they trained for, and every trial.
"""

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import polars as pl
from optuna.trial import TrialState

from gamerec_assets.core.io import write_json_atomic
from gamerec_assets.core.settings import SEARCH_SPACE, TrainConfig, Tuning
from gamerec_assets.core.splits import tuning_split
from gamerec_assets.core.training.checkpoint import save_checkpoint
from gamerec_assets.core.training.job import (
    KnownLength,
    pairs_from_frame,
    tuned_model_is_final,
    tuning_split_key,
)
from gamerec_assets.core.training.loop import TrainResult, TuningSet, train_model
from gamerec_assets.core.training.world import SINGLE_PROCESS, World


def play_time_varies(train: pl.DataFrame) -> bool:
    """Whether the pairs' play times differ: without that, weighting by them changes nothing
    and a trial of it would repeat another."""
    if "play_time_hours" not in train.columns:
        return False
    return train["play_time_hours"].drop_nulls().n_unique() > 1


HISTORY_PARAMS = ("history_dropout", "history_sample", "history_mlp")
"""Settings that only the history user towers read."""


def searched_params(
    tuning: Tuning,
    fixed: set[str] | frozenset[str],
    train: pl.DataFrame,
    config: TrainConfig,
    log: Callable,
) -> list[str]:
    """The settings to search: `tuning.searched(fixed)`, without play-time weighting when
    every pair has the same play time, and without the history settings for the `id` tower
    (a trial of them would repeat another)."""
    params = tuning.searched(fixed)
    if "playtime_weighting" in params and not play_time_varies(train):
        params.remove("playtime_weighting")
        log("every pair has the same play time (or none): playtime_weighting is not searched")
    if config.user_tower == "id":
        dropped = [name for name in params if name in HISTORY_PARAMS]
        params = [name for name in params if name not in HISTORY_PARAMS]
        if dropped:
            log(f"the 'id' user tower pools no history: {', '.join(dropped)} not searched")
    return params


def suggest(trial: optuna.Trial, name: str) -> Any:
    """A value of setting `name` from its range in `SEARCH_SPACE`."""
    kind, values = SEARCH_SPACE[name]
    if kind == "choice":
        return trial.suggest_categorical(name, list(values))
    return trial.suggest_float(name, values[0], values[1], log=kind == "log")


def flip_playtime_weighting(config: TrainConfig) -> dict[str, Any]:
    """The defaults with play-time weighting the other way: the setting that depends most on
    the protocol (on Steam-200k's tuning split, off is 8% worse when the most-played game is
    held out and 6% better when a random one is)."""
    return {"playtime_weighting": not config.playtime_weighting}


PRIOR_TRIALS: tuple[tuple[str, Callable[[TrainConfig], dict[str, Any]]], ...] = (
    ("playtime_weighting", flip_playtime_weighting),
)
"""Changes of the defaults tried right after them (when their setting is searched), before
TPE proposes anything."""


@dataclass(frozen=True)
class TuningResult:
    """What a search found: the best settings, how long they trained, and every trial."""

    params: dict[str, Any]
    best_period: int
    best_epoch: float
    tuning_ndcg: float
    trial_config: dict[str, Any]
    """Every training setting of the best trial (searched and fixed), to tell whether a
    training run can reuse its length without choosing it again."""
    tuning_curve: list[float]
    """The best trial's tuning NDCG after each period."""
    trials: list[dict[str, Any]]
    seconds: float
    model_path: str | None = None
    """The best trial's model, kept when it is the final model (`tuned_model_is_final`)."""
    split_key: str | None = None
    """`tuning_split_key` of the split the trials trained and scored on."""

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "TuningResult":
        return cls(**values)

    def apply(self, config: TrainConfig) -> TrainConfig:
        """`config` with the searched settings replaced by the best ones found."""
        return replace(config, **self.params)


def search(
    train: pl.DataFrame,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    tuning: Tuning,
    split_strategy: str,
    heldout: pl.DataFrame | None,
    study_path: Path,
    study_name: str,
    fixed: set[str] | frozenset[str] = frozenset(),
    log: Callable[[str], None] = print,
    world: World = SINGLE_PROCESS,
) -> TuningResult | None:
    """Run (or resume) the study of `tuning.params` but the `fixed` ones: the defaults' trial,
    then others within `tuning.trials` trials while the time left (`time_left`) holds one as
    long as the defaults' (`a_trial_fits`); None when there is nothing to search or tune on."""
    params = searched_params(tuning, fixed, train, config, log)
    carved = tuning_split(train, split_strategy, config.seed, tuning.sample_users, heldout)
    if not params or tuning.trials == 0 or carved.val.height == 0:
        return None
    pairs = pairs_from_frame(carved.train)
    tuning_set = TuningSet.of(carved.val, tuning.k)
    study = _study(study_path, study_name, config, params)
    final = tuned_model_is_final(carved, config)
    split_key = tuning_split_key(carved, n_users, n_items, tuning) if final else None
    models = ModelKeeper(study_path.parent / "tuning_models", study, split_key)
    started = time.perf_counter()
    deadline = [float("inf")]  # set once the defaults' trial has measured the budget

    def objective(trial: optuna.Trial) -> float:
        trial_config = replace(config, **{name: suggest(trial, name) for name in params})
        trial_started = time.perf_counter()

        def report(period: int, score: float) -> None:
            trial.report(score, period)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after period {period}")
            if trial.number > 0 and time.perf_counter() > deadline[0]:
                raise optuna.TrialPruned(f"the search's time was spent at period {period}")

        try:
            result = train_model(
                pairs,
                n_users,
                n_items,
                trial_config,
                world=world,
                tuning=tuning_set,
                log=log,
                phase=f"trial {trial.number}",
                period_pairs=tuning.every_pairs,
                on_score=report,
                progress=False,
            )
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - trial_started)
        _record(trial, result)
        models.offer(trial.number, result)
        return max(result.tuning_ndcg)

    def optimize(n_trials: int) -> None:
        callbacks = [_log_trial(log), _stop_unless_a_trial_fits(tuning, deadline)]
        study.optimize(objective, n_trials=n_trials, callbacks=callbacks)

    log(f"searching {', '.join(params)}: at most {tuning.trials} trial(s), the defaults first")
    if not _finished(study):
        optimize(1)  # the defaults' trial, whatever the budget: training reuses it
    remaining = tuning.trials - len(_finished(study))
    seconds_left = time_left(study, tuning)
    if remaining > 0 and a_trial_fits(study, tuning):
        log(f"{remaining} more trial(s) for at most {seconds_left / 60:.1f} min")
        deadline[0] = time.perf_counter() + seconds_left  # a trial still running then stops
        optimize(remaining)
    elif remaining > 0:
        log(f"no more trials: {max(seconds_left, 0) / 60:.1f} min left, fewer than one takes")
    return _result(study, time.perf_counter() - started, models)


class ModelKeeper:
    """Keeps the model of the best trial so far, when trained models are final ones (a tuning
    split too small for a refit; `split_key` is then that split's `tuning_split_key`, else
    None and nothing is kept): training then takes it rather than train it again, which on
    large data halves the graph's cost."""

    def __init__(self, parent: Path, study: optuna.Study, split_key: str | None) -> None:
        self.folder, self.study, self.split_key = parent / study.study_name, study, split_key
        for other in parent.glob("*/trial_*.pt"):  # models of earlier studies
            if other.parent != self.folder:
                other.unlink()

    def path(self, number: int) -> Path:
        return self.folder / f"trial_{number}.pt"

    def offer(self, number: int, result: TrainResult) -> None:
        best = [t.value for t in self.study.trials if t.state == TrialState.COMPLETE]
        if self.split_key is None or (best and max(best) >= max(result.tuning_ndcg)):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        history = {
            "epoch_losses": list(result.epoch_losses),
            "tuning_ndcg_error": list(result.tuning_ndcg_error),
        }
        save_checkpoint(self.path(number), result.model, result.config, history)
        for other in self.folder.glob("trial_*.pt"):
            if other != self.path(number):
                other.unlink()

    def kept(self, number: int) -> str | None:
        path = self.path(number)
        return str(path) if self.split_key is not None and path.exists() else None


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [trial for trial in study.trials if trial.state.is_finished()]


def time_left(study: optuna.Study, tuning: Tuning) -> float:
    """Seconds the search may still spend after the defaults' trial: `tuning.budget` times
    that trial's time, within `tuning.minutes` for the whole search, less what the other
    trials took. So the search costs in proportion to what training costs on this data."""
    seconds = [trial.user_attrs.get("seconds", 0.0) for trial in _finished(study)]
    if not seconds:
        return 0.0
    allowed = tuning.budget * seconds[0]
    if tuning.minutes:
        allowed = min(allowed, tuning.minutes * 60 - seconds[0])
    return allowed - sum(seconds[1:])


def _record(trial: optuna.Trial, result: TrainResult) -> None:
    """What training needs of a trial beside its settings: its length, its whole
    configuration and its tuning curve."""
    trial.set_user_attr("best_period", result.best_period)
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("trial_config", result.config.model_dict())
    trial.set_user_attr("tuning_ndcg", result.tuning_ndcg)


def a_trial_fits(study: optuna.Study, tuning: Tuning) -> bool:
    """Whether the time left holds a trial as long as the defaults' (one the deadline would
    stop before it finished would be time spent for nothing: an unfinished trial is not
    compared)."""
    left = time_left(study, tuning)  # 0 before the defaults' trial
    return left > 0 and left >= defaults_seconds(study)


def _stop_unless_a_trial_fits(tuning: Tuning, deadline: list[float]) -> Callable:
    """An Optuna callback that stops the study when no trial fits on either clock: the
    trials' own times (`time_left`), or the `deadline[0]`, which also counts the work between
    trials (sampling, saving a kept model)."""

    def callback(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        until_deadline = deadline[0] - time.perf_counter()
        if not a_trial_fits(study, tuning) or until_deadline < defaults_seconds(study):
            study.stop()

    return callback


def defaults_seconds(study: optuna.Study) -> float:
    """How long the defaults' trial took (infinite when not recorded: no trial is then known
    to fit)."""
    finished = _finished(study)
    return finished[0].user_attrs.get("seconds", math.inf) if finished else math.inf


def _study(path: Path, name: str, config: TrainConfig, params: list[str]) -> optuna.Study:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the journal storage is flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path))
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        load_if_exists=True,
    )
    if not study.trials:  # the declared defaults first: the search starts from them
        defaults = {name: getattr(config, name) for name in params}
        study.enqueue_trial(defaults)
        for name, change in PRIOR_TRIALS:
            if name in params:
                study.enqueue_trial({**defaults, **change(config)})
    return study


def _log_trial(log: Callable[[str], None]) -> Callable[[optuna.Study, Any], None]:
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        value = "pruned" if trial.value is None else f"tuning NDCG {trial.value:.4f}"
        log(f"trial {trial.number}: {value} ({shown}); best so far {study.best_value:.4f}")

    return callback


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _result(study: optuna.Study, seconds: float, models: ModelKeeper) -> TuningResult | None:
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    best = max(complete, key=lambda trial: trial.value)
    trials = [
        {
            "number": trial.number,
            "state": trial.state.name.lower(),
            "value": trial.value,
            "params": trial.params,
            "last_score": max(trial.intermediate_values.values(), default=None),
            "best_epoch": trial.user_attrs.get("best_epoch"),
            "seconds": trial.user_attrs.get("seconds"),
        }
        for trial in study.trials
    ]
    return TuningResult(
        params=dict(best.params),
        best_period=best.user_attrs["best_period"],
        best_epoch=best.user_attrs["best_epoch"],
        tuning_ndcg=best.value,
        trial_config=best.user_attrs["trial_config"],
        tuning_curve=best.user_attrs["tuning_ndcg"],
        trials=trials,
        seconds=seconds,
        model_path=models.kept(best.number),
        split_key=models.split_key,
    )


def write_result(path: Path, result: TuningResult | None) -> None:
    write_json_atomic(path, None if result is None else result.to_json())


def read_result(path: Path) -> TuningResult | None:
    values = json.loads(path.read_text(encoding="utf-8"))
    return None if values is None else TuningResult.from_json(values)


def reusable_length(result: TuningResult | None, config: TrainConfig) -> KnownLength | None:
    """The best trial's length when `config` is exactly what that trial trained with (nothing
    was set differently since): a training run may then skip choosing it again."""
    if result is None or config.model_dict() != result.trial_config or not result.best_period:
        return None
    curve = list(result.tuning_curve)
    return KnownLength(
        result.best_period, result.best_epoch, curve, result.model_path, result.split_key
    )
