"""The training state: a killed run resumes to the same weights; nothing else resumes."""

from dataclasses import replace

import pytest

from gamerec_assets.core.training.job import fit_two_tower
from gamerec_assets.core.training.loop import TrainingPairs, train_model
from gamerec_tests.core.training.helpers import (
    FAST,
    FIT,
    assert_same_weights,
    quiet,
    train_clusters,
    train_frame,
    two_clusters,
)


class Interrupted(Exception):
    pass


def stop_at(line_start: str, collected: list[str] | None = None):
    """A log that raises once training logs `line_start`: the run dies right after that epoch
    (whose state was saved before the line was logged)."""

    def log(message: str) -> None:
        if collected is not None:
            collected.append(message)
        if message.startswith(line_start):
            raise Interrupted(message)

    return log


RESUMABLE = [
    pytest.param(replace(FAST, epochs=5, seed=1), id="adamw"),
    pytest.param(
        replace(
            FAST,
            epochs=5,
            seed=1,
            user_tower="history",
            sparse_gradients=True,
            logq_correction=True,
            mask_accidental_hits=True,
        ),
        id="sparse-history",
    ),
]


@pytest.mark.parametrize("config", RESUMABLE)
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, config):
    """Stopped after epoch 2, the rerun trains epochs 3-5 only and ends bit-identical to an
    uninterrupted run: weights, optimizer moments and batch order all come back."""
    uninterrupted = train_clusters(config)
    state = tmp_path / "train.pt"
    with pytest.raises(Interrupted):
        train_clusters(config, state_path=state, log=stop_at("train epoch 2:"))
    lines: list[str] = []
    resumed = train_clusters(config, state_path=state, log=lines.append)
    assert "resuming" in lines[0] and "epoch 2 " in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == [f"train epoch {e}" for e in (3, 4, 5)]
    assert resumed.epoch_losses == uninterrupted.epoch_losses
    assert_same_weights(resumed.model, uninterrupted.model)
    assert [p.name for p in tmp_path.iterdir()] == ["train.pt"]  # no temporary left


def test_epoch_state_of_another_configuration_or_data_is_not_resumed(tmp_path):
    state = tmp_path / "train.pt"
    with pytest.raises(Interrupted):
        train_clusters(FAST, state_path=state, log=stop_at("train epoch 2:"))
    other_lr = replace(FAST, lr=0.01)
    lines: list[str] = []
    result = train_clusters(other_lr, state_path=state, log=lines.append)
    assert "not resuming" in lines[0]
    assert len(lines) == 1 + FAST.epochs  # every epoch trained again
    assert_same_weights(result.model, train_clusters(other_lr).model)
    lines.clear()
    users, items = two_clusters()
    pairs = TrainingPairs(users[1:], items[1:])  # other data: one pair fewer
    train_model(pairs, 20, 10, other_lr, state_path=state, log=lines.append, progress=False)
    assert "not resuming" in lines[0]


def test_unreadable_epoch_state_is_ignored_with_a_message(tmp_path):
    (tmp_path / "train.pt").write_bytes(b"not a torch file")
    lines: list[str] = []
    result = train_clusters(state_path=tmp_path / "train.pt", log=lines.append)
    assert len(result.epoch_losses) == FAST.epochs
    assert "unreadable" in lines[0]


@pytest.mark.parametrize("stop_phase", ["tune", "refit"])
def test_fit_interrupted_in_either_phase_resumes_to_the_same_model(tmp_path, stop_phase):
    frame = train_frame()
    config = replace(FIT, select_epochs=True, refit=True)
    uninterrupted = fit_two_tower(frame, 20, 12, config, log=quiet, progress=False)
    with pytest.raises(Interrupted):
        fit_two_tower(
            frame, 20, 12, config, log=stop_at(f"{stop_phase} epoch 2:"), state_dir=tmp_path
        )
    lines: list[str] = []
    resumed = fit_two_tower(frame, 20, 12, config, log=lines.append, state_dir=tmp_path)
    epochs = [line.split(":")[0] for line in lines if " epoch " in line and "resum" not in line]
    assert f"{stop_phase} epoch 1" not in epochs and f"{stop_phase} epoch 3" in epochs
    assert any("resuming" in line for line in lines)
    assert_same_weights(resumed.final.model, uninterrupted.final.model)
    assert resumed.final.epoch_losses == uninterrupted.final.epoch_losses
    assert resumed.final.best_epoch == uninterrupted.final.best_epoch
    assert resumed.tuning.tuning_ndcg == uninterrupted.tuning.tuning_ndcg
