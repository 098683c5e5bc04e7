"""The self-describing checkpoint: round trip, no unpickling, atomic writes, format checks."""

import pickle
from dataclasses import replace

import pytest
import torch

from gamerec_assets.core.model import TwoTower, UserHistory
from gamerec_assets.core.training.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_config,
    load_checkpoint,
    save_checkpoint,
)
from gamerec_assets.core.training.loss import playtime_weights
from gamerec_tests.core.training.helpers import (
    ALL_OPTIONS,
    FAST,
    clusters_with_hours,
    train_all_options,
    train_clusters,
)

HISTORY = {"epochs_run": 1, "best_epoch": 1, "epoch_losses": [1.0], "tuning_ndcg": []}


class NotAPlainType:
    pass


def only_plain_types(value) -> bool:
    if isinstance(value, torch.Tensor) or value is None:
        return True
    if isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(only_plain_types(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and only_plain_types(v) for k, v in value.items())
    return False


def save(path, result, extra=None):
    history = {
        "epochs_run": len(result.epoch_losses),
        "best_epoch": result.best_epoch,
        "epoch_losses": result.epoch_losses,
        "tuning_ndcg": result.tuning_ndcg,
    }
    save_checkpoint(path, result.model, result.config, history, extra)


def test_checkpoint_round_trip(tmp_path):
    result = train_clusters(replace(FAST, epochs=2, seed=1))
    path = tmp_path / "model.pt"
    save(path, result, extra={"split": "max_playtime", "n_val": 20})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]

    model, payload = load_checkpoint(path)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert not model.training
    assert payload["format"] == CHECKPOINT_FORMAT
    assert payload["model_args"] == result.model.model_args()
    assert payload["model_args"]["n_users"] == 20 and payload["model_args"]["n_items"] == 10
    assert payload["config"] == result.config.model_dict()
    assert "nproc" not in payload["config"]  # how training ran is not part of the model
    assert checkpoint_config(payload) == result.config
    assert payload["config"]["lr"] == 0.05 and payload["config"]["seed"] == 1
    assert payload["epochs_run"] == 2 and payload["epoch_losses"] == result.epoch_losses
    assert payload["extra"] == {"split": "max_playtime", "n_val": 20}
    assert only_plain_types(torch.load(path, weights_only=True))


def test_checkpoint_is_loaded_without_unpickling_objects(tmp_path):
    path = tmp_path / "evil.pt"
    save_checkpoint(path, TwoTower(2, 2, 2), FAST, HISTORY, extra={"object": NotAPlainType()})
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)


def test_failed_checkpoint_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, TwoTower(2, 2, 2), FAST, HISTORY)
    before = path.read_bytes()

    def failing_save(payload, target):
        open(target, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("gamerec_assets.core.training.checkpoint.torch.save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, TwoTower(3, 3, 3), FAST, HISTORY)
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


def test_history_model_checkpoint_round_trip(tmp_path):
    result = train_all_options(replace(ALL_OPTIONS, epochs=2, user_tower="history+id"))
    path = tmp_path / "history.pt"
    save(path, result)
    model, payload = load_checkpoint(path)
    assert payload["model_args"]["user_tower"] == "history+id"
    assert payload["model_args"]["normalize"] is True
    assert payload["config"]["history_weighting"] is True
    assert model.user_tower == "history+id" and model.normalize
    users, items, hours = clusters_with_hours()
    history = UserHistory.from_pairs(users, items, 20, playtime_weights(hours))
    assert torch.equal(model.item_vectors(), result.model.item_vectors())
    assert torch.equal(model.user_vectors(history), result.model.user_vectors(history))
    new_players = UserHistory.from_item_lists([[0, 3], [7]])
    assert torch.equal(model.fold_in(new_players), result.model.fold_in(new_players))
