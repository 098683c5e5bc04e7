import math
import pickle

import numpy as np
import pytest
import torch

from gamerec_assets.core.model import TwoTower
from gamerec_assets.core.trainer import (
    CHECKPOINT_FORMAT,
    TrainConfig,
    TrainResult,
    in_batch_softmax_loss,
    load_checkpoint,
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
    return train_two_tower(users, items, 20, 10, config, progress=False, **kwargs)


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
    assert model.model_args() == {"n_users": 6, "n_items": 9, "embed_dim": 4}
    assert model.user_vectors().shape == (6, 4) and model.item_vectors().shape == (9, 4)
    assert not model.user_vectors().requires_grad


# --- training ------------------------------------------------------------------------------------


def test_training_lowers_loss_and_reports_each_epoch():
    calls = []
    result = _train(on_epoch_end=lambda epoch, loss: calls.append((epoch, loss)))
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
    with pytest.raises(ValueError, match="3 rows but item_idx has 2"):
        train_two_tower(np.array([0, 1, 2]), np.array([0, 1]), 3, 2, FAST, progress=False)
    with pytest.raises(ValueError, match="training split is empty"):
        train_two_tower(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 3, 2, FAST)


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
    assert payload["model_args"] == {"n_users": 20, "n_items": 10, "embed_dim": 8}
    assert payload["config"] == {
        "epochs": 2,
        "batch_size": 16,
        "embed_dim": 8,
        "lr": 0.05,
        "seed": 1,
    }
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
