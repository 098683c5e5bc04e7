import math
import pickle
from dataclasses import asdict

import numpy as np
import pytest
import torch

from gamerec_assets.core.model import TwoTower
from gamerec_assets.core.trainer import (
    CHECKPOINT_FORMAT,
    EpochCheckpoints,
    TrainConfig,
    TrainingPairs,
    TrainResult,
    in_batch_softmax_loss,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    shuffled_batches,
    train_two_tower,
)

FAST = TrainConfig(epochs=6, batch_size=16, embed_dim=8, lr=0.05, seed=3)


def _two_clusters():
    """Users 0-9 play items 0-4, users 10-19 play items 5-9: a structure the model can learn."""
    users, items = [], []
    for user in range(20):
        own = range(0, 5) if user < 10 else range(5, 10)
        for item in own:
            users.append(user)
            items.append(item)
    return np.array(users), np.array(items)


def _train(config=FAST, **kwargs):
    users, items = _two_clusters()
    return train_two_tower(TrainingPairs(users, items), 20, 10, config, progress=False, **kwargs)


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["epochs", "batch_size", "embed_dim"])
@pytest.mark.parametrize("value", [0, -1])
def test_config_rejects_non_positive_integers(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be a positive integer"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
def test_config_rejects_bad_lr(lr):
    with pytest.raises(ValueError, match="^lr must be a positive finite number"):
        TrainConfig(lr=lr)


def test_config_accepts_minimal_values():
    config = TrainConfig(epochs=1, batch_size=1, embed_dim=1, lr=1e-9)
    assert (config.epochs, config.batch_size, config.embed_dim) == (1, 1, 1)


# --- batches and loss ----------------------------------------------------------------------------


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
    assert len(batches) == 1
    assert sorted(batches[0].tolist()) == [0, 1, 2, 3]


def test_in_batch_softmax_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.0, 3.0], [0.0, 0.0, 0.0]])
    by_hand = []
    for row in range(3):
        values = logits[row].tolist()
        log_denominator = math.log(sum(math.exp(v) for v in values))
        by_hand.append(-(values[row] - log_denominator))
    expected = sum(by_hand) / 3
    assert in_batch_softmax_loss(logits).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((0.16985 + 2.19673 + math.log(3)) / 3, abs=1e-4)


def test_in_batch_softmax_loss_of_one_pair_is_zero():
    assert in_batch_softmax_loss(torch.tensor([[5.0]])).item() == 0.0


# --- model ---------------------------------------------------------------------------------------


def test_two_tower_forward_is_user_times_item_transpose():
    torch.manual_seed(0)
    model = TwoTower(n_users=6, n_items=9, embed_dim=4)
    users, items = torch.tensor([5, 0, 2]), torch.tensor([8, 8, 1])
    logits = model(users, items)
    assert logits.shape == (3, 3)
    expected = model.user_embedding.weight[users] @ model.item_embedding.weight[items].T
    assert torch.allclose(logits, expected)
    assert logits[1, 2].item() == pytest.approx(
        torch.dot(model.user_vectors()[0], model.item_vectors()[1]).item(), rel=1e-6
    )
    assert model.model_args() == {
        "n_users": 6,
        "n_items": 9,
        "embed_dim": 4,
        "user_tower": "id",
        "normalize": False,
    }
    assert model.user_vectors().shape == (6, 4) and model.item_vectors().shape == (9, 4)
    assert not model.user_vectors().requires_grad


# --- training ------------------------------------------------------------------------------------


def test_training_lowers_loss_and_reports_each_epoch():
    calls = []
    result = _train(on_epoch_end=lambda epoch, loss, score: calls.append((epoch, loss)))
    assert [epoch for epoch, _ in calls] == list(range(1, FAST.epochs + 1))
    assert [loss for _, loss in calls] == result.epoch_losses
    assert len(result.epoch_losses) == FAST.epochs
    assert result.epoch_losses[-1] < result.epoch_losses[0] - 0.1
    assert result.config == FAST and not result.model.training


def test_training_learns_the_clusters():
    model = _train(TrainConfig(epochs=15, batch_size=16, embed_dim=8, lr=0.05, seed=0)).model
    scores = model.user_vectors() @ model.item_vectors().T
    own = torch.cat([scores[:10, :5], scores[10:, 5:]], dim=1)
    other = torch.cat([scores[:10, 5:], scores[10:, :5]], dim=1)
    assert (own.min(dim=1).values > other.max(dim=1).values).all()


def test_same_seed_gives_bit_identical_weights_and_other_seed_differs():
    first, again = _train(), _train()
    other = _train(TrainConfig(epochs=6, batch_size=16, embed_dim=8, lr=0.05, seed=4))
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
        assert not torch.equal(tensor, other.model.state_dict()[name]), name
    assert first.epoch_losses == again.epoch_losses


def test_training_rejects_mismatched_or_empty_pairs():
    with pytest.raises(ValueError, match="3 rows but items has 2"):
        TrainingPairs(np.array([0, 1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="training split is empty"):
        TrainingPairs(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


# --- checkpoints ---------------------------------------------------------------------------------


class NotAPlainType:
    pass


def _only_plain_types(value) -> bool:
    if isinstance(value, torch.Tensor) or value is None:
        return True
    if isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_only_plain_types(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_plain_types(v) for k, v in value.items())
    return False


def test_checkpoint_round_trip(tmp_path):
    result = _train(TrainConfig(epochs=2, batch_size=16, embed_dim=8, lr=0.05, seed=1))
    path = tmp_path / "model.pt"
    save_checkpoint(path, result, extra={"split": "max_playtime", "n_val": 20})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]

    model, payload = load_checkpoint(path)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert not model.training
    assert payload["format"] == CHECKPOINT_FORMAT
    assert payload["model_args"] == result.model.model_args()
    assert payload["model_args"]["n_users"] == 20 and payload["model_args"]["n_items"] == 10
    assert payload["config"] == asdict(result.config)
    assert payload["config"]["lr"] == 0.05 and payload["config"]["seed"] == 1
    assert payload["epochs_run"] == 2
    assert payload["epoch_losses"] == result.epoch_losses
    assert payload["extra"] == {"split": "max_playtime", "n_val": 20}

    raw = torch.load(path, weights_only=True)
    assert _only_plain_types(raw)


def test_checkpoint_is_loaded_without_unpickling_objects(tmp_path):
    result = TrainResult(model=TwoTower(2, 2, 2), config=FAST, epoch_losses=[1.0])
    path = tmp_path / "evil.pt"
    save_checkpoint(path, result, extra={"object": NotAPlainType()})
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)


def test_failed_checkpoint_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, TrainResult(model=TwoTower(2, 2, 2), config=FAST, epoch_losses=[1.0]))
    before = path.read_bytes()

    def failing_save(payload, target):
        open(target, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("gamerec_assets.core.trainer.torch.save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, TrainResult(model=TwoTower(3, 3, 3), config=FAST))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.parametrize(
    "payload", [{"format": CHECKPOINT_FORMAT + 1}, {"weights": torch.zeros(2)}]
)
def test_wrong_format_checkpoint_raises(tmp_path, payload):
    path = tmp_path / "old.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="not a gamerec checkpoint") as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("payload", [torch.zeros(2), [1, 2]], ids=["tensor", "list"])
def test_non_dict_checkpoint_raises_value_error(tmp_path, payload):
    path = tmp_path / "not_a_checkpoint.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="not a gamerec checkpoint"):
        load_checkpoint(path)


# --- accidental hits, logQ, weights --------------------------------------------------------------

from dataclasses import replace  # noqa: E402

import polars as pl  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gamerec_assets.core import trainer as trainer_module  # noqa: E402
from gamerec_assets.core.model import UserHistory  # noqa: E402
from gamerec_assets.core.splits import leave_one_out_split  # noqa: E402
from gamerec_assets.core.trainer import (  # noqa: E402
    ACCIDENTAL_HIT_LOGIT,
    TuningSet,
    batch_logits,
    fit_two_tower,
    item_log_frequencies,
    mask_accidental_hits,
    pairs_from_frame,
    playtime_weights,
)


def test_mask_accidental_hits_masks_only_off_diagonal_copies():
    logits = torch.tensor([[1.0, 0.5, 2.0], [0.3, -1.0, 0.7], [1.5, 0.2, 0.4]])
    masked = mask_accidental_hits(logits, torch.tensor([4, 7, 4]))
    assert masked[0, 2].item() == ACCIDENTAL_HIT_LOGIT
    assert masked[2, 0].item() == ACCIDENTAL_HIT_LOGIT
    keep = torch.ones(3, 3, dtype=torch.bool)
    keep[0, 2] = keep[2, 0] = False
    assert torch.equal(masked[keep], logits[keep])  # diagonal and every other entry unchanged
    assert torch.equal(logits[0, 2], torch.tensor(2.0))  # the input is not modified in place


def test_masked_cross_entropy_drops_the_copies_from_the_negatives():
    logits = torch.tensor([[1.0, 0.5, 2.0], [0.3, -1.0, 0.7], [1.5, 0.2, 0.4]])
    masked = mask_accidental_hits(logits, torch.tensor([4, 7, 4]))
    losses = F.cross_entropy(masked, torch.arange(3), reduction="none")
    expected = torch.stack(
        [
            -torch.log_softmax(logits[0, [0, 1]], dim=0)[0],  # column 2 removed
            -torch.log_softmax(logits[1], dim=0)[1],  # nothing to remove
            -torch.log_softmax(logits[2, [1, 2]], dim=0)[1],  # column 0 removed
        ]
    )
    assert torch.allclose(losses, expected, atol=1e-5)
    assert in_batch_softmax_loss(masked).item() == pytest.approx(expected.mean().item(), abs=1e-5)
    unmasked = F.cross_entropy(logits, torch.arange(3), reduction="none")
    assert unmasked[0] - losses[0] > 0.1 and unmasked[2] - losses[2] > 0.1


def test_mask_accidental_hits_without_duplicates_is_identity():
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask_accidental_hits(logits, torch.tensor([3, 1, 2, 0])), logits)


def test_item_log_frequencies_values():
    log_q = item_log_frequencies(np.array([0, 0, 0, 2, 2, 4]), n_items=6)
    assert log_q.dtype == torch.float32 and log_q.shape == (6,)
    expected = np.log(np.array([3, 1, 2, 1, 1, 1]) / 6.0)  # unseen items 1, 3, 5: log(1/6)
    assert np.allclose(log_q.numpy(), expected, atol=1e-6)


def _set_embeddings(model, users, items):
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.tensor(users))
        model.item_embedding.weight.copy_(torch.tensor(items))


def test_batch_logits_logq_subtracts_each_columns_log_frequency():
    model = TwoTower(n_users=3, n_items=4, embed_dim=2)
    user_table = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    item_table = [[0.5, 0.5], [1.0, -1.0], [2.0, 0.0], [0.0, 0.3]]
    _set_embeddings(model, user_table, item_table)
    log_q = item_log_frequencies(np.array([0] * 8 + [1, 2]), n_items=4)  # item 0 frequent
    config = TrainConfig(temperature=0.5, logq_correction=True)
    users, items = torch.tensor([0, 1, 2]), torch.tensor([0, 2, 3])
    logits = batch_logits(model, users, items, None, config, log_q)
    scores = torch.tensor(user_table)[users] @ torch.tensor(item_table)[items].T
    expected = scores / 0.5 - torch.tensor(np.log([0.8, 0.1, 0.1]), dtype=torch.float32)[None, :]
    assert torch.allclose(logits, expected, atol=1e-5)
    without = batch_logits(model, users, items, None, replace(config, logq_correction=False), None)
    assert torch.allclose(without, scores / 0.5, atol=1e-6)


def test_logq_with_equal_scores_lifts_rare_columns_by_their_log_ratio():
    model = TwoTower(n_users=2, n_items=3, embed_dim=2)
    _set_embeddings(model, [[0.0, 0.0]] * 2, [[0.0, 0.0]] * 3)  # every score is 0
    log_q = item_log_frequencies(np.array([0] * 9 + [1]), n_items=3)  # item 0: 0.9, item 1: 0.1
    config = TrainConfig(logq_correction=True)
    logits = batch_logits(model, torch.tensor([0, 1]), torch.tensor([0, 1]), None, config, log_q)
    # logits = score / temperature - log_q[item]: log_q < 0, so every column is raised, the rare
    # item's most: -log(0.9) for column 0, -log(0.1) for column 1, the same in every row
    assert torch.allclose(logits[:, 0], torch.full((2,), -np.log(0.9)), atol=1e-6)
    assert torch.allclose(logits[:, 1], torch.full((2,), -np.log(0.1)), atol=1e-6)
    assert (logits[:, 1] > logits[:, 0]).all()


def test_batch_logits_masks_after_the_logq_shift():
    model = TwoTower(n_users=3, n_items=2, embed_dim=2)
    _set_embeddings(model, [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]])
    log_q = item_log_frequencies(np.array([0, 0, 1]), n_items=2)
    config = TrainConfig(logq_correction=True, mask_accidental_hits=True, temperature=2.0)
    items = torch.tensor([0, 1, 0])
    logits = batch_logits(model, torch.tensor([0, 1, 2]), items, None, config, log_q)
    assert (
        logits[0, 2].item() == ACCIDENTAL_HIT_LOGIT and logits[2, 0].item() == ACCIDENTAL_HIT_LOGIT
    )
    assert logits[0, 0].item() == pytest.approx(1.0 / 2.0 - np.log(2 / 3), abs=1e-6)
    assert logits[2, 1].item() == pytest.approx(1.0 / 2.0 - np.log(1 / 3), abs=1e-6)


def test_playtime_weights_properties():
    hours = np.array([0.0, 1.0, 10.0, 100.0, np.nan, -5.0])
    weights = playtime_weights(hours)
    assert weights.dtype == torch.float32 and weights.shape == (6,)
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert weights[0] < weights[1] < weights[2] < weights[3]
    assert weights[0] > 0
    assert weights[4] == weights[0]  # NaN hours count as zero hours
    assert weights[5] == weights[0]  # negative hours too
    assert weights.min() == weights[0]
    raw = 1.0 + np.log1p(np.array([0.0, 1.0, 10.0, 100.0, 0.0, 0.0]))
    assert np.allclose(weights.numpy(), raw / raw.mean(), atol=1e-6)


def test_playtime_weights_of_equal_hours_are_all_one():
    assert torch.allclose(playtime_weights(np.full(4, 7.0)), torch.ones(4))


def test_weighted_in_batch_loss_is_weighted_mean_of_row_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.0, 3.0], [0.0, 0.0, 0.0]])
    weights = torch.tensor([1.0, 2.0, 0.5])
    rows = []
    for row in range(3):
        values = logits[row].tolist()
        rows.append(-(values[row] - math.log(sum(math.exp(v) for v in values))))
    expected = sum(w * r for w, r in zip(weights.tolist(), rows)) / 3.5
    assert in_batch_softmax_loss(logits, weights).item() == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(sum(rows) / 3, rel=1e-3)
    # equal weights of any scale give the unweighted loss
    assert in_batch_softmax_loss(logits, torch.full((3,), 4.0)).item() == pytest.approx(
        in_batch_softmax_loss(logits).item(), rel=1e-6
    )


# --- training with every option ------------------------------------------------------------------


def _clusters_with_hours(n_users=20, per_cluster=5):
    """Two clusters of users and games, with play hours varying by (user, game)."""
    users, items, hours = [], [], []
    for user in range(n_users):
        own = range(per_cluster) if user < n_users // 2 else range(per_cluster, 2 * per_cluster)
        for item in own:
            users.append(user)
            items.append(item)
            hours.append(float((user * 7 + item * 3) % 11))
    return np.array(users), np.array(items), np.array(hours)


ALL_OPTIONS = TrainConfig(
    epochs=6,
    batch_size=16,
    embed_dim=8,
    lr=0.05,
    seed=3,
    user_tower="history",
    normalize=True,
    temperature=0.1,
    logq_correction=True,
    mask_accidental_hits=True,
    playtime_weighting=True,
    history_weighting=True,
    weight_decay=0.01,
)


def _train_all_options(config=ALL_OPTIONS):
    users, items, hours = _clusters_with_hours()
    return train_two_tower(TrainingPairs(users, items, hours), 20, 10, config, progress=False)


def test_history_tower_with_every_option_trains_and_is_deterministic():
    first, again = _train_all_options(), _train_all_options()
    other = _train_all_options(replace(ALL_OPTIONS, seed=4))
    losses = first.epoch_losses
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.5
    state, again_state, other_state = (r.model.state_dict() for r in (first, again, other))
    assert set(state) == {"item_embedding.weight", "history_embedding.weight"}
    for name, tensor in state.items():
        assert torch.equal(tensor, again_state[name]), name
        assert not torch.equal(tensor, other_state[name]), name
    assert first.epoch_losses == again.epoch_losses
    # and it learned the clusters: every user's own games outscore the other cluster's
    users, items, hours = _clusters_with_hours()
    history = UserHistory.from_pairs(users, items, 20, playtime_weights(hours))
    scores = first.model.user_vectors(history) @ first.model.item_vectors().T
    own = torch.cat([scores[:10, :5], scores[10:, 5:]])
    other_cluster = torch.cat([scores[:10, 5:], scores[10:, :5]])
    assert (own.min(dim=1).values > other_cluster.max(dim=1).values).all()


def test_weighting_without_hours_raises():
    users, items, _ = _clusters_with_hours()
    for config in (
        replace(FAST, playtime_weighting=True),
        replace(FAST, user_tower="history", history_weighting=True),
    ):
        with pytest.raises(ValueError, match="needs the play hours"):
            train_two_tower(TrainingPairs(users, items), 20, 10, config, progress=False)


# --- epoch selection on a tuning set -------------------------------------------------------------


def _tuning_data():
    """Two clusters of 6 games each; one game per user held out for tuning."""
    users, items, hours = _clusters_with_hours(20, 6)
    held = np.zeros(len(users), dtype=bool)
    for user in range(20):
        held[np.flatnonzero(users == user)[user % 6]] = True
    pairs = TrainingPairs(users[~held], items[~held], hours[~held])
    return pairs, TuningSet(users[held], items[held], k=3)


def test_tuning_keeps_the_best_epoch_and_stops_early():
    pairs, tuning = _tuning_data()
    config = TrainConfig(epochs=30, batch_size=16, embed_dim=8, lr=0.5, seed=0, patience=2)
    scores = []
    result = train_two_tower(
        pairs,
        20,
        12,
        config,
        tuning=tuning,
        progress=False,
        on_epoch_end=lambda epoch, loss, score: scores.append(score),
    )
    curve = result.tuning_ndcg
    assert scores == curve
    assert len(curve) == len(result.epoch_losses)
    assert result.best_epoch == int(np.argmax(curve)) + 1
    assert len(curve) == result.best_epoch + config.patience < config.epochs  # stopped early
    assert max(curve[result.best_epoch :]) <= curve[result.best_epoch - 1]
    history = UserHistory.from_pairs(pairs.users, pairs.items, 20)
    recomputed = trainer_module.tuning_ndcg(result.model, history, tuning)
    assert recomputed == pytest.approx(max(curve), abs=1e-12)
    assert curve[-1] < max(curve)  # so the last epoch's weights would score differently


def test_tuning_restores_the_best_epochs_weights(monkeypatch):
    scripted = iter([0.1, 0.5, 0.3, 0.5, 0.2, 0.9, 0.9])
    states = []
    real_tuning_ndcg = trainer_module.tuning_ndcg

    def scripted_ndcg(model, history, tuning):
        real_tuning_ndcg(model, history, tuning)  # still runs, on the model as it is
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(trainer_module, "tuning_ndcg", scripted_ndcg)
    pairs, tuning = _tuning_data()
    config = TrainConfig(epochs=10, batch_size=16, embed_dim=8, lr=0.05, seed=0, patience=3)
    result = train_two_tower(pairs, 20, 12, config, tuning=tuning, progress=False)
    # epoch 4 ties epoch 2 (not better), so epochs 3, 4, 5 make three without improvement
    assert result.tuning_ndcg == [0.1, 0.5, 0.3, 0.5, 0.2]
    assert result.best_epoch == 2 and len(result.epoch_losses) == 5
    final_state = result.model.state_dict()
    for name, tensor in states[1].items():
        assert torch.equal(final_state[name], tensor), name
        assert not torch.equal(states[4][name], tensor), name


def test_without_tuning_best_epoch_is_the_last():
    result = _train(TrainConfig(epochs=3, batch_size=16, embed_dim=8, lr=0.05, seed=0, patience=1))
    assert result.tuning_ndcg == [] and result.best_epoch == 3 and len(result.epoch_losses) == 3


# --- fit_two_tower -------------------------------------------------------------------------------


def _train_frame():
    users, items, hours = _clusters_with_hours(20, 6)
    return pl.DataFrame(
        {"user_idx": users, "item_idx": items, "play_time_hours": hours},
        schema={"user_idx": pl.Int64, "item_idx": pl.Int64, "play_time_hours": pl.Float64},
    )


FIT = TrainConfig(epochs=8, batch_size=16, embed_dim=8, lr=0.5, seed=0, patience=2)


def _assert_same_weights(first, second):
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


def test_fit_selects_epochs_then_refits_on_all_rows():
    frame = _train_frame()
    phases = []
    fit = fit_two_tower(
        frame,
        20,
        12,
        replace(FIT, select_epochs=True, refit=True),
        on_epoch_end=lambda phase, epoch, loss, score: phases.append((phase, epoch, score)),
        progress=False,
    )
    tuned, final = fit.tuning, fit.final
    assert tuned is not None and final is not tuned
    assert 1 <= tuned.best_epoch <= len(tuned.tuning_ndcg) <= FIT.epochs
    # The final result keeps the configuration as given; best_epoch says how long it trained.
    assert final.config == replace(FIT, select_epochs=True, refit=True)
    assert final.best_epoch == tuned.best_epoch == len(final.epoch_losses)
    assert final.tuning_ndcg == tuned.tuning_ndcg
    final.tuning_ndcg.append(0.0)
    assert len(tuned.tuning_ndcg) == len(final.tuning_ndcg) - 1  # a copy, not the same list
    assert [p for p, _, _ in phases] == ["tune"] * len(tuned.tuning_ndcg) + ["refit"] * len(
        final.epoch_losses
    )
    assert all(score is None for phase, _, score in phases if phase == "refit")
    assert fit.seconds == pytest.approx(final.seconds + tuned.seconds)

    # the tuning run trained on the carved rows, the refit on every row of the frame
    carved = leave_one_out_split(frame, "max_playtime", FIT.seed)
    tuning_set = TuningSet(carved.val["user_idx"].to_numpy(), carved.val["item_idx"].to_numpy())
    expected_tuned = train_two_tower(
        pairs_from_frame(carved.train),
        20,
        12,
        replace(FIT, select_epochs=True, refit=True),
        tuning=tuning_set,
        progress=False,
    )
    _assert_same_weights(tuned.model, expected_tuned.model)
    assert tuned.tuning_ndcg == expected_tuned.tuning_ndcg
    expected_final = train_two_tower(
        pairs_from_frame(frame), 20, 12, replace(FIT, epochs=tuned.best_epoch), progress=False
    )
    _assert_same_weights(final.model, expected_final.model)


def test_fit_without_epoch_selection_trains_configured_epochs():
    frame = _train_frame()
    fit = fit_two_tower(frame, 20, 12, replace(FIT, epochs=3), progress=False)
    assert fit.tuning is None
    assert len(fit.final.epoch_losses) == 3 and fit.final.tuning_ndcg == []
    expected = train_two_tower(
        pairs_from_frame(frame), 20, 12, replace(FIT, epochs=3), progress=False
    )
    _assert_same_weights(fit.final.model, expected.model)


def test_fit_without_refit_returns_the_tuning_model():
    fit = fit_two_tower(
        _train_frame(), 20, 12, replace(FIT, select_epochs=True, refit=False), progress=False
    )
    assert fit.tuning is not None and fit.final is fit.tuning
    assert fit.final.best_epoch == int(np.argmax(fit.final.tuning_ndcg)) + 1


def test_fit_with_no_tuning_pairs_trains_without_selection():
    frame = pl.DataFrame(  # every user has one game: nothing to carve a tuning split from
        {"user_idx": [0, 1, 2], "item_idx": [0, 1, 0], "play_time_hours": [1.0, 2.0, 3.0]}
    )
    fit = fit_two_tower(
        frame, 3, 2, replace(FIT, epochs=2, select_epochs=True, refit=True), progress=False
    )
    assert fit.tuning is None and len(fit.final.epoch_losses) == 2


# --- config validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"weight_decay": float("inf")}, "weight_decay"),
        ({"user_tower": "users"}, "user_tower"),
        ({"user_tower": "History"}, "user_tower"),
        ({"patience": 0}, "patience"),
        ({"patience": -2}, "patience"),
    ],
)
def test_config_rejects_bad_options_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        TrainConfig(**overrides)


def test_config_accepts_every_user_tower_and_zero_weight_decay():
    for tower in ("id", "history", "history+id"):
        assert TrainConfig(user_tower=tower, weight_decay=0.0, patience=1).user_tower == tower


# --- checkpoint of a history model ---------------------------------------------------------------


def test_history_model_checkpoint_round_trip(tmp_path):
    result = _train_all_options(replace(ALL_OPTIONS, epochs=2, user_tower="history+id"))
    path = tmp_path / "history.pt"
    save_checkpoint(path, result)
    model, payload = load_checkpoint(path)
    assert payload["model_args"]["user_tower"] == "history+id"
    assert payload["model_args"]["normalize"] is True
    assert payload["config"]["history_weighting"] is True
    assert model.user_tower == "history+id" and model.normalize
    users, items, hours = _clusters_with_hours()
    history = UserHistory.from_pairs(users, items, 20, playtime_weights(hours))
    assert torch.equal(model.item_vectors(), result.model.item_vectors())
    assert torch.equal(model.user_vectors(history), result.model.user_vectors(history))
    new_players = UserHistory.from_item_lists([[0, 3], [7]])
    assert torch.equal(model.fold_in(new_players), result.model.fold_in(new_players))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_history_weighting_trains_on_cuda():
    users, items, hours = _clusters_with_hours()
    result = train_two_tower(
        TrainingPairs(users, items, hours),
        20,
        10,
        replace(ALL_OPTIONS, epochs=1),
        device=torch.device("cuda"),
        progress=False,
    )
    assert np.isfinite(result.epoch_losses[0])


# --- sparse gradients ----------------------------------------------------------------------------


def test_sparse_training_uses_sparse_adam_and_leaves_untouched_rows_alone():
    """With sparse gradients an optimizer step changes only the rows in the batch."""
    users, items = _two_clusters()
    config = replace(FAST, sparse_gradients=True, epochs=1, batch_size=len(users))
    torch.manual_seed(config.seed)  # the same initial weights train_two_tower starts from
    before = TwoTower(20, 12, config.embed_dim).state_dict()  # items 10, 11 are in no pair
    result = train_two_tower(TrainingPairs(users, items), 20, 12, config, progress=False)
    after = result.model.state_dict()["item_embedding.weight"]
    assert torch.equal(after[10:], before["item_embedding.weight"][10:])
    assert not torch.equal(after[:10], before["item_embedding.weight"][:10])
    assert isinstance(make_optimizer(result.model, config), torch.optim.SparseAdam)
    assert isinstance(make_optimizer(result.model, FAST), torch.optim.AdamW)


def test_sparse_training_learns_the_clusters_and_is_deterministic():
    config = replace(ALL_OPTIONS, sparse_gradients=True, weight_decay=0.0, epochs=10)
    first, again = _train_all_options(config), _train_all_options(config)
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    assert first.epoch_losses[-1] < first.epoch_losses[0] - 0.5
    users, items, hours = _clusters_with_hours()
    scores = first.model.user_vectors(UserHistory.from_pairs(users, items, 20)) @ (
        first.model.item_vectors().T
    )
    own = torch.cat([scores[:10, :5], scores[10:, 5:]])
    other_cluster = torch.cat([scores[:10, 5:], scores[10:, :5]])
    assert (own.min(dim=1).values > other_cluster.max(dim=1).values).all()


def test_sparse_gradients_with_weight_decay_are_rejected_up_front():
    with pytest.raises(ValueError, match="weight_decay needs dense gradients"):
        TrainConfig(sparse_gradients=True, weight_decay=0.01)


# --- epoch checkpoints and resuming ------------------------------------------------------------


class _Interrupted(Exception):
    pass


def _stop_after(epoch_to_stop: int):
    def on_epoch_end(epoch, loss, score):
        if epoch == epoch_to_stop:
            raise _Interrupted(f"stopped after epoch {epoch}")

    return on_epoch_end


RESUMABLE = [
    pytest.param(TrainConfig(epochs=5, batch_size=16, embed_dim=8, lr=0.05, seed=1), id="adamw"),
    pytest.param(
        TrainConfig(
            epochs=5,
            batch_size=16,
            embed_dim=8,
            lr=0.05,
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
    users, items = _two_clusters()
    pairs = TrainingPairs(users, items)
    uninterrupted = train_two_tower(pairs, 20, 10, config, progress=False)

    messages: list[str] = []
    checkpoints = EpochCheckpoints(tmp_path / "train.pt", messages.append)
    with pytest.raises(_Interrupted):
        train_two_tower(
            pairs,
            20,
            10,
            config,
            progress=False,
            checkpoints=checkpoints,
            on_epoch_end=_stop_after(2),
        )
    assert messages == []
    epochs_run = []
    resumed = train_two_tower(
        pairs,
        20,
        10,
        config,
        progress=False,
        checkpoints=checkpoints,
        on_epoch_end=lambda epoch, loss, score: epochs_run.append(epoch),
    )
    assert epochs_run == [3, 4, 5]
    assert len(messages) == 1 and "resuming" in messages[0] and "epoch 2 " in messages[0]
    assert resumed.epoch_losses == uninterrupted.epoch_losses
    _assert_same_weights(resumed.model, uninterrupted.model)
    assert [p.name for p in tmp_path.iterdir()] == ["train.pt"]  # no temporary left


def test_epoch_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    users, items = _two_clusters()
    pairs = TrainingPairs(users, items)
    messages: list[str] = []
    checkpoints = EpochCheckpoints(tmp_path / "train.pt", messages.append)
    with pytest.raises(_Interrupted):
        train_two_tower(
            pairs,
            20,
            10,
            FAST,
            progress=False,
            checkpoints=checkpoints,
            on_epoch_end=_stop_after(2),
        )
    other_lr = replace(FAST, lr=0.01)
    epochs_run = []
    result = train_two_tower(
        pairs,
        20,
        10,
        other_lr,
        progress=False,
        checkpoints=checkpoints,
        on_epoch_end=lambda epoch, loss, score: epochs_run.append(epoch),
    )
    assert epochs_run == list(range(1, FAST.epochs + 1))
    assert len(messages) == 1 and "not resuming" in messages[0]
    _assert_same_weights(
        result.model, train_two_tower(pairs, 20, 10, other_lr, progress=False).model
    )
    # other data: one pair fewer
    messages.clear()
    train_two_tower(
        TrainingPairs(users[1:], items[1:]),
        20,
        10,
        other_lr,
        progress=False,
        checkpoints=checkpoints,
    )
    assert len(messages) == 1 and "not resuming" in messages[0]


def test_unreadable_epoch_checkpoint_is_ignored_with_a_message(tmp_path):
    (tmp_path / "train.pt").write_bytes(b"not a torch file")
    messages: list[str] = []
    result = _train(checkpoints=EpochCheckpoints(tmp_path / "train.pt", messages.append))
    assert len(result.epoch_losses) == FAST.epochs
    assert len(messages) == 1 and "unreadable" in messages[0]


@pytest.mark.parametrize("stop_phase", ["tune", "refit"])
def test_fit_interrupted_in_either_phase_resumes_to_the_same_model(tmp_path, stop_phase):
    frame = _train_frame()
    config = replace(FIT, select_epochs=True, refit=True)
    uninterrupted = fit_two_tower(frame, 20, 12, config, progress=False)

    def stop(phase, epoch, loss, score):
        if phase == stop_phase and epoch == 2:
            raise _Interrupted(phase)

    messages: list[str] = []
    with pytest.raises(_Interrupted):
        fit_two_tower(
            frame,
            20,
            12,
            config,
            progress=False,
            on_epoch_end=stop,
            state_dir=tmp_path,
            log=messages.append,
        )
    phases_run = []
    resumed = fit_two_tower(
        frame,
        20,
        12,
        config,
        progress=False,
        state_dir=tmp_path,
        log=messages.append,
        on_epoch_end=lambda phase, epoch, loss, score: phases_run.append((phase, epoch)),
    )
    assert (stop_phase, 1) not in phases_run and (stop_phase, 3) in phases_run
    assert any("resuming" in message for message in messages)
    _assert_same_weights(resumed.final.model, uninterrupted.final.model)
    assert resumed.final.epoch_losses == uninterrupted.final.epoch_losses
    assert resumed.final.best_epoch == uninterrupted.final.best_epoch
    assert resumed.tuning.tuning_ndcg == uninterrupted.tuning.tuning_ndcg
