"""One training run, described once: what the in-process asset and each torchrun worker run.

`TrainingJob` says what to train on and where to write; it is serialised to JSON for the
torchrun workers, so both launch paths take the same description, and `run_training` is the
one entry point both call. `fit_two_tower` is the selection protocol: with `select_epochs`, a
tuning split (a second hold-out of the same strategy) is carved from the training data, the
model trains on the rest while each epoch is scored on it, and the best epoch count is refit
on all the training data. The evaluation hold-out is never seen.
"""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from gamerec_assets.core.io import file_sha256
from gamerec_assets.core.settings import TrainConfig, Tuning
from gamerec_assets.core.splits import Split, read_split_frame, tuning_split
from gamerec_assets.core.training.checkpoint import load_checkpoint, save_checkpoint
from gamerec_assets.core.training.loop import TrainingPairs, TrainResult, TuningSet, train_model
from gamerec_assets.core.training.state import run_key
from gamerec_assets.core.training.world import SINGLE_PROCESS, World, backend_for


@dataclass(frozen=True)
class KnownLength:
    """How long to train, known from a search trial that trained this very configuration on
    this very tuning split (`core.tuning`): the selection phase need not run again."""

    periods: int
    best_epoch: float
    tuning_ndcg: list[float]
    model_path: str | None = None
    """The trial's model, kept when it is the final one (no refit follows a tuning split this
    small, see `tuned_model_is_final`): training then takes it instead of training again."""
    split_key: str | None = None
    """`tuning_split_key` of what that model trained and was scored on."""


@dataclass(frozen=True)
class TrainingJob:
    """What one training run needs; `to_json`/`from_json` carry it to torchrun workers."""

    train_path: str
    n_users: int
    n_items: int
    checkpoint_path: str
    config: TrainConfig = field(default_factory=TrainConfig)
    split_strategy: str = "max_playtime"
    heldout_path: str | None = None
    """The evaluation hold-out, read only for its shape: a temporal or predefined tuning split
    holds out the same share of the training data."""
    tuning: Tuning = field(default_factory=Tuning)
    input_paths: tuple[str, ...] = ()
    """Files the model depends on; their hashes go into the checkpoint."""
    state_dir: str | None = None
    """Where each phase saves its state after every epoch, so a killed run resumes."""
    device: str = "cpu"
    """The device setting (`auto`, `cpu`, `cuda`); each torchrun worker takes its own GPU."""
    num_threads: int = 0
    """torch threads per process of a torchrun job (0: torch's default)."""
    known_length: KnownLength | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainingJob":
        values = json.loads(text)
        values["config"] = TrainConfig(**values["config"])
        values["tuning"] = Tuning(**values.get("tuning", {}))
        values["input_paths"] = tuple(values["input_paths"])
        if values.get("known_length"):
            values["known_length"] = KnownLength(**values["known_length"])
        return cls(**values)


@dataclass
class FitResult:
    """The final model and, when epochs were selected, the run on the tuning split."""

    final: TrainResult
    tuning: TrainResult | None = None
    from_search: bool = False
    """The final model is a search trial's, taken as it was (no training here)."""

    @property
    def seconds(self) -> float:
        return self.final.seconds + (self.tuning.seconds if self.tuning else 0.0)


def pairs_from_frame(frame: pl.DataFrame) -> TrainingPairs:
    hours = frame["play_time_hours"].to_numpy() if "play_time_hours" in frame.columns else None
    return TrainingPairs(frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy(), hours)


MIN_REFIT_SHARE = 0.01
"""Refit only when the tuning split held out at least this share of the training pairs: below
it the tuned model has seen (nearly) all of them, and a refit would double the cost."""


def tuned_model_is_final(carved: Split, config: TrainConfig) -> bool:
    """Whether the model trained on the tuning split's training part is the final model."""
    share = carved.val.height / max(carved.train.height + carved.val.height, 1)
    return not config.refit or share < MIN_REFIT_SHARE


def tuning_split_key(carved: Split, n_users: int, n_items: int, tuning: Tuning) -> str:
    """Hash of a tuning split (both parts) and the table sizes: a search trial's model may stand
    in for training only when training would train and score on exactly this."""
    pairs = pairs_from_frame(carved.train)
    arrays = [pairs.users, pairs.items, pairs.hours]
    arrays += [carved.val[c].to_numpy() for c in ("user_idx", "item_idx")]
    settings = {"n_users": n_users, "n_items": n_items, "period_pairs": tuning.every_pairs}
    return run_key(arrays, {**settings, "k": tuning.k})


def fit_two_tower(
    train: pl.DataFrame,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    split_strategy: str = "max_playtime",
    world: World = SINGLE_PROCESS,
    log: Callable[[str], None] = print,
    state_dir: str | Path | None = None,
    tuning: Tuning = Tuning(),
    progress: bool | None = None,
    heldout: pl.DataFrame | None = None,
    known_length: KnownLength | None = None,
) -> FitResult:
    """Train on an indexed training split, selecting its length on a tuning split carved from it
    (or taking `known_length`, when a search trial already selected it).

    With `state_dir`, each phase (tune, refit or train) saves its state there after every
    period (`<phase>.pt`), and a rerun on the same data and configuration resumes from it.
    """

    def phase(name: str) -> dict[str, Any]:
        state = None if state_dir is None else Path(state_dir) / f"{name}.pt"
        return dict(
            world=world,
            log=log,
            progress=progress,
            state_path=state,
            phase=name,
            period_pairs=tuning.every_pairs,
        )

    carved = None
    if config.select_epochs:
        carved = tuning_split(train, split_strategy, config.seed, tuning.sample_users, heldout)
    if carved is None or carved.val.height == 0:
        final = train_model(pairs_from_frame(train), n_users, n_items, config, **phase("train"))
        return FitResult(final=final)
    if known_length is not None:
        known_length = _usable(known_length, carved, n_users, n_items, config, tuning, log)
    if known_length is not None and known_length.model_path:
        log(f"taking the search's model ({known_length.model_path}): it is the final one")
        return FitResult(final=_searched_model(known_length, config, world), from_search=True)
    tuned = None
    if known_length is None:
        tuning_set = TuningSet.of(carved.val, tuning.k)
        tuned = train_model(
            pairs_from_frame(carved.train),
            n_users,
            n_items,
            config,
            tuning=tuning_set,
            **phase("tune"),
        )
        if tuned_model_is_final(carved, config):
            if config.refit:
                log(
                    f"no refit: the tuning split held out {carved.val.height / train.height:.2%}"
                    " of the training pairs, so the tuned model is the final one"
                )
            return FitResult(final=tuned, tuning=tuned)
        known_length = KnownLength(tuned.best_period, tuned.best_epoch, list(tuned.tuning_ndcg))
    else:
        log(f"training for epoch {known_length.best_epoch:g}, the length the search chose")
    final = train_model(
        pairs_from_frame(train),
        n_users,
        n_items,
        replace(config, select_epochs=False),
        periods=known_length.periods,
        **phase("refit"),
    )
    final = _as_selected(final, config, known_length)
    if tuned is not None:
        final.tuning_ndcg_error = list(tuned.tuning_ndcg_error)
    return FitResult(final=final, tuning=tuned)


def _usable(
    length: KnownLength,
    carved: Split,
    n_users: int,
    n_items: int,
    config: TrainConfig,
    tuning: Tuning,
    log: Callable[[str], None],
) -> KnownLength | None:
    """`length` when this run may take it: a kept model only if it trained on this very tuning
    split; a bare length only for a refit (without one, the tuned model is trained here)."""
    if length.model_path:
        if tuning_split_key(carved, n_users, n_items, tuning) == length.split_key:
            return length
        log("the search's model was trained on another tuning split; training again")
        return None
    return length if config.refit else None


def _searched_model(length: KnownLength, config: TrainConfig, world: World) -> TrainResult:
    """The model a search trial trained and kept, as this run's result."""
    model, payload = load_checkpoint(length.model_path, world.device)
    return TrainResult(
        model=model,
        config=config,
        epoch_losses=list(payload["epoch_losses"]),
        tuning_ndcg=list(length.tuning_ndcg),
        tuning_ndcg_error=list(payload["tuning_ndcg_error"]),
        best_epoch=length.best_epoch,
        best_period=length.periods,
    )


def _as_selected(final: TrainResult, config: TrainConfig, length: KnownLength) -> TrainResult:
    """A refit's result, recording the selection it followed: the configuration as given
    (its length is `best_epoch`) and the tuning scores that chose the length."""
    final.tuning_ndcg = list(length.tuning_ndcg)
    final.best_epoch, final.best_period = length.best_epoch, length.periods
    final.config = config
    return final


def run_training(
    job: TrainingJob, world: World = SINGLE_PROCESS, log: Callable[[str], None] = print
) -> FitResult:
    """Train as `job` says; rank 0 writes the checkpoint. Every process of a job calls this."""
    log = log if world.is_main else _quiet
    train = read_split_frame(job.train_path)
    heldout = read_split_frame(job.heldout_path) if job.heldout_path else None
    if world.size > 1:
        log(
            f"rank 0 of {world.size} processes ({backend_for(world.device)}): {train.height} "
            f"pairs, global batch {job.config.batch_size} "
            f"({job.config.batch_size // world.size} per process)"
        )
    fit = fit_two_tower(
        train,
        job.n_users,
        job.n_items,
        job.config,
        job.split_strategy,
        world=world,
        log=log,
        state_dir=job.state_dir,
        tuning=job.tuning,
        heldout=heldout,
        known_length=job.known_length,
    )
    if world.is_main:
        final = fit.final
        save_checkpoint(
            job.checkpoint_path,
            final.model,
            final.config,
            history={
                "epochs_run": len(final.epoch_losses),
                "best_epoch": final.best_epoch,
                "epoch_losses": list(final.epoch_losses),
                "tuning_ndcg": list(final.tuning_ndcg),
                "tuning_ndcg_error": list(final.tuning_ndcg_error),
            },
            extra={
                "inputs": {Path(path).name: file_sha256(path) for path in job.input_paths},
                "world_size": world.size,
                "tuning_epoch_losses": list(fit.tuning.epoch_losses) if fit.tuning else [],
                "model_from_search": fit.from_search,
            },
        )
        log(f"wrote {job.checkpoint_path} after {fit.seconds:.1f}s of training")
    return fit


def _quiet(message: str) -> None:
    del message
