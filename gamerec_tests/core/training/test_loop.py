"""The training loop: batches, learning, determinism, epoch selection, sparse updates."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from gamerec_assets.core.model import TwoTower, UserHistory
from gamerec_assets.core.training import loop as loop_module
from gamerec_assets.core.training.loop import (
    Schedule,
    TrainingPairs,
    TuningSet,
    make_optimizer,
    shuffled_batches,
    train_model,
)
from gamerec_assets.core.training.loss import playtime_weights
from gamerec_assets.core.training.optim import RowAdam
from gamerec_tests.core.training.helpers import (
    ALL_OPTIONS,
    FAST,
    assert_same_weights,
    clusters_with_hours,
    own_cluster_scores_highest,
    quiet,
    train_all_options,
    train_clusters,
    two_clusters,
)

# --- batches ------------------------------------------------------------------------------------


def test_shuffled_batches_cover_every_row_once_per_epoch():
    generator = torch.Generator().manual_seed(0)
    epochs = [list(shuffled_batches(23, 5, generator)) for _ in range(3)]
    for batches in epochs:
        assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
        assert sorted(torch.cat(batches).tolist()) == list(range(23))
    assert not torch.equal(torch.cat(epochs[0]), torch.cat(epochs[1]))  # reshuffled each epoch


def test_shuffled_batches_same_seed_same_batches():
    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return [torch.cat(list(shuffled_batches(40, 7, generator))) for _ in range(2)]

    first, again, other = run(11), run(11), run(12)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_batch_size_above_rows_gives_one_batch():
    batches = list(shuffled_batches(4, 100, torch.Generator().manual_seed(0)))
    assert len(batches) == 1 and sorted(batches[0].tolist()) == [0, 1, 2, 3]


# --- training ------------------------------------------------------------------------------------


def test_training_lowers_loss_and_logs_each_epoch():
    lines: list[str] = []
    result = train_clusters(log=lines.append)
    assert lines == [
        f"train epoch {epoch}: loss {loss:.4f}"
        for epoch, loss in enumerate(result.epoch_losses, start=1)
    ]
    assert len(result.epoch_losses) == FAST.epochs
    assert result.epoch_losses[-1] < result.epoch_losses[0] - 0.1
    assert result.config == FAST and not result.model.training


def test_training_learns_the_clusters():
    model = train_clusters(replace(FAST, epochs=15, seed=0)).model
    assert own_cluster_scores_highest(model.user_vectors() @ model.item_vectors().T)


def test_same_seed_gives_bit_identical_weights_and_other_seed_differs():
    first, again, other = train_clusters(), train_clusters(), train_clusters(replace(FAST, seed=4))
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
        assert not torch.equal(tensor, other.model.state_dict()[name]), name
    assert first.epoch_losses == again.epoch_losses


def test_training_rejects_mismatched_or_empty_pairs():
    with pytest.raises(ValueError, match="3 rows but items has 2"):
        TrainingPairs(np.array([0, 1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="training split is empty"):
        TrainingPairs(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


def test_history_tower_with_every_option_trains_and_is_deterministic():
    first, again = train_all_options(), train_all_options()
    other = train_all_options(replace(ALL_OPTIONS, seed=4))
    losses = first.epoch_losses
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.5
    state, again_state, other_state = (r.model.state_dict() for r in (first, again, other))
    layers = {f"history_layers.{i}.{kind}" for i in (0, 2) for kind in ("weight", "bias")}
    assert set(state) == {"item_embedding.weight", "history_embedding.weight", *layers}
    for name, tensor in state.items():
        assert torch.equal(tensor, again_state[name]), name
        assert not torch.equal(tensor, other_state[name]), name
    assert first.epoch_losses == again.epoch_losses
    users, items, hours = clusters_with_hours()
    history = UserHistory.from_pairs(users, items, 20, playtime_weights(hours))
    assert own_cluster_scores_highest(
        first.model.user_vectors(history) @ first.model.item_vectors().T
    )


def test_weighting_without_hours_raises():
    users, items, _ = clusters_with_hours()
    for config in (
        replace(FAST, playtime_weighting=True),
        replace(FAST, user_tower="history", history_weighting=True),
    ):
        with pytest.raises(ValueError, match="needs the play hours"):
            train_model(TrainingPairs(users, items), 20, 10, config, log=quiet, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_history_weighting_trains_on_cuda():
    from gamerec_assets.core.training.world import World

    result = train_all_options(
        replace(ALL_OPTIONS, epochs=1), world=World(device=torch.device("cuda"))
    )
    assert np.isfinite(result.epoch_losses[0])


# --- epoch selection on a tuning set -------------------------------------------------------------


def tuning_data():
    """Two clusters of 6 games each; one game per user held out for tuning."""
    users, items, hours = clusters_with_hours(20, 6)
    held = np.zeros(len(users), dtype=bool)
    for user in range(20):
        held[np.flatnonzero(users == user)[user % 6]] = True
    pairs = TrainingPairs(users[~held], items[~held], hours[~held])
    return pairs, TuningSet(users[held], items[held], k=3)


def test_tuning_keeps_the_best_epoch_and_stops_early():
    pairs, tuning = tuning_data()
    config = replace(FAST, epochs=30, lr=0.5, seed=0, patience=2)
    lines: list[str] = []
    result = train_model(pairs, 20, 12, config, tuning=tuning, log=lines.append, progress=False)
    curve = result.tuning_ndcg
    assert [line.split("NDCG@3 ")[1].split(" ")[0] for line in lines] == [
        f"{score:.4f}" for score in curve
    ]
    assert all("tuning NDCG@3" in line for line in lines)
    assert len(curve) == len(result.epoch_losses)
    assert result.best_epoch == int(np.argmax(curve)) + 1
    assert len(curve) == result.best_period + config.patience < config.epochs  # stopped early
    assert max(curve[result.best_period :]) <= curve[result.best_period - 1]
    history = UserHistory.from_pairs(pairs.users, pairs.items, 20)
    assert tuning.score(result.model, history)[0] == pytest.approx(max(curve), abs=1e-12)
    assert curve[-1] < max(curve)  # so the last epoch's weights would score differently


def test_tuning_restores_the_best_epochs_weights(monkeypatch):
    scripted = iter([0.1, 0.5, 0.3, 0.5, 0.2, 0.9, 0.9])
    states = []
    real_score = TuningSet.score

    def scripted_score(self, model, history, world):
        real_score(self, model, history, world)  # still runs, on the model as it is
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted), 0.01

    monkeypatch.setattr(loop_module.TuningSet, "score", scripted_score)
    pairs, tuning = tuning_data()
    config = replace(FAST, epochs=10, seed=0, patience=3)
    result = train_model(pairs, 20, 12, config, tuning=tuning, log=quiet, progress=False)
    # epoch 4 ties epoch 2 (not better), so epochs 3, 4, 5 make three without improvement
    assert result.tuning_ndcg == [0.1, 0.5, 0.3, 0.5, 0.2]
    assert result.best_epoch == 2 and len(result.epoch_losses) == 5
    final_state = result.model.state_dict()
    for name, tensor in states[1].items():
        assert torch.equal(final_state[name], tensor), name
        assert not torch.equal(states[4][name], tensor), name


def test_without_tuning_best_epoch_is_the_last():
    result = train_clusters(replace(FAST, epochs=3, seed=0, patience=1))
    assert result.tuning_ndcg == [] and result.best_epoch == 3 and len(result.epoch_losses) == 3


# --- sparse gradients ----------------------------------------------------------------------------


def test_sparse_training_uses_row_adam_and_leaves_untouched_rows_alone():
    """With sparse gradients an optimizer step changes only the rows in the batch."""
    users, items = two_clusters()
    config = replace(FAST, sparse_gradients=True, epochs=1, batch_size=len(users))
    torch.manual_seed(config.seed)  # the same initial weights train_model starts from
    before = TwoTower(20, 12, config.embed_dim).state_dict()  # items 10, 11 are in no pair
    result = train_model(TrainingPairs(users, items), 20, 12, config, log=quiet, progress=False)
    after = result.model.state_dict()["item_embedding.weight"]
    assert torch.equal(after[10:], before["item_embedding.weight"][10:])
    assert not torch.equal(after[:10], before["item_embedding.weight"][:10])
    assert isinstance(make_optimizer(result.model, config), RowAdam)
    assert isinstance(make_optimizer(result.model, FAST), torch.optim.AdamW)


def test_sparse_training_learns_the_clusters_and_is_deterministic():
    config = replace(ALL_OPTIONS, sparse_gradients=True, epochs=10)
    first, again = train_all_options(config), train_all_options(config)
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    assert first.epoch_losses[-1] < first.epoch_losses[0] - 0.5
    users, items, _ = clusters_with_hours()
    history = UserHistory.from_pairs(users, items, 20)
    assert own_cluster_scores_highest(
        first.model.user_vectors(history) @ first.model.item_vectors().T
    )


# --- periods shorter than an epoch, and the history sample ----------------------------------------


def test_a_period_is_an_epoch_or_the_given_number_of_pairs():
    assert Schedule.of(1000, 100).period_steps == 10
    long_epochs = Schedule.of(1000, 100, period_pairs=250)
    assert (long_epochs.period_steps, long_epochs.periods_per_epoch) == (3, 4)
    assert long_epochs.epochs(6) == 1.5
    assert Schedule.of(1000, 100, period_pairs=5000).period_steps == 10  # never above an epoch


def test_an_epoch_a_little_longer_than_a_period_is_cut_in_equal_halves():
    schedule = Schedule.of(4_631_192, 1024, period_pairs=4_000_000)  # the 5M scale run's
    assert schedule.periods_per_epoch == 2
    last = schedule.steps_per_epoch - schedule.period_steps
    assert schedule.period_steps - last <= 1  # not 4M pairs and then 0.6M
    assert schedule.period_steps * 1024 <= 4_000_000


def test_tuning_scores_periods_inside_an_epoch_and_a_refit_trains_as_many_periods():
    pairs, tuning = tuning_data()
    config = replace(FAST, epochs=3, seed=0, patience=2)
    lines: list[str] = []
    result = train_model(
        pairs, 20, 12, config, tuning=tuning, log=lines.append, period_pairs=40
    )  # 100 pairs an epoch, batches of 16: periods of 3 steps, 3 periods an epoch
    assert lines[0].startswith("train epoch 0.333: loss") and "NDCG@3" in lines[0]
    assert len(result.tuning_ndcg) == len(result.epoch_losses) == len(lines)
    assert result.best_epoch == pytest.approx(result.best_period / 3, abs=1e-3)
    again = train_model(pairs, 20, 12, config, log=quiet, period_pairs=40, periods=4)
    assert len(again.epoch_losses) == 4 and again.best_period == 4


@pytest.mark.parametrize("sparse_gradients", [False, True], ids=["AdamW", "RowAdam"])
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, sparse_gradients):
    users, items, hours = clusters_with_hours()
    pairs = TrainingPairs(users, items, hours)
    config = replace(ALL_OPTIONS, epochs=2, history_sample=2, sparse_gradients=sparse_gradients)
    uninterrupted = train_model(pairs, 20, 10, config, log=quiet, period_pairs=40)

    def stop(message: str) -> None:
        if message.startswith("train epoch 0.667"):  # the second of three periods
            raise RuntimeError("killed")

    state = tmp_path / "train.pt"
    with pytest.raises(RuntimeError, match="killed"):
        train_model(pairs, 20, 10, config, log=stop, state_path=state, period_pairs=40)
    lines: list[str] = []
    resumed = train_model(
        pairs, 20, 10, config, log=lines.append, state_path=state, period_pairs=40
    )
    assert "epoch 0.667 of at most 2 was complete" in lines[0]
    assert resumed.epoch_losses == uninterrupted.epoch_losses
    assert_same_weights(resumed.model, uninterrupted.model)


def test_each_training_pair_pools_at_most_the_history_sample(monkeypatch):
    sizes: list[int] = []
    real_pool = TwoTower.pool_history

    def recording_pool(self, bags):
        counts = torch.diff(torch.cat([bags.offsets, torch.tensor([len(bags.items)])]))
        if self.training:
            sizes.extend(counts.tolist())
        return real_pool(self, bags)

    monkeypatch.setattr(TwoTower, "pool_history", recording_pool)
    config = replace(ALL_OPTIONS, epochs=1, history_sample=3, history_dropout=0.0)  # 4 others
    train_all_options(config)
    assert sizes and max(sizes) == 3
    sizes.clear()
    train_all_options(replace(config, history_sample=0))  # 0: every other game
    assert set(sizes) == {4}
    sizes.clear()
    train_all_options(replace(config, history_sample=0, history_dropout=0.5))
    assert set(sizes) <= {1, 2, 3, 4} and 1 in sizes and 4 in sizes  # dropped, never empty
