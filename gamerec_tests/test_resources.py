"""Settings come from the seed's env vars, are validated up front, and load real sources."""

import polars as pl
import pytest

from gamerec_assets.core.settings import SettingError, Source
from gamerec_assets.core.sources import InteractionsFileError, load_source
from gamerec_assets.resources import resources_from_env
from gamerec_tests.conftest import STEAM_200K, requires_steam_200k


def test_defaults_are_the_tuned_model_under_the_seeds_names():
    resources = resources_from_env({})
    config = resources["training"].settings()
    assert (config.epochs, config.batch_size, config.embed_dim, config.lr) == (20, 1024, 256, 3e-3)
    assert (config.user_tower, config.normalize, config.temperature) == ("history", True, 0.15)
    assert config.logq_correction and config.mask_accidental_hits and config.playtime_weighting
    assert config.select_epochs and config.refit and not config.history_weighting
    assert resources["evaluation"].k == 20
    assert resources["source"].kind == "synthetic"
    assert resources["split"].strategy == "max_playtime"
    assert (resources["paths"].data_dir, resources["paths"].artifacts_dir) == ("data", "artifacts")
    assert resources["training"].epoch_checkpoints is True


@pytest.mark.parametrize(
    "variable, value", [("GAMEREC_EPOCH_CHECKPOINTS", "false"), ("TRAIN_NPROC", "2")]
)
def test_how_training_runs_is_not_part_of_the_models_version(variable, value):
    """Epoch checkpoints and the number of processes change no weight (beyond float
    rounding), so changing them must not make the checkpoint stale."""
    default = resources_from_env({})["training"]
    changed = resources_from_env({variable: value})["training"]
    assert changed != default
    assert default.version_fields() == changed.version_fields()
    assert default.settings().model_dict() == changed.settings().model_dict()


def test_env_vars_override_every_setting():
    resources = resources_from_env(
        {
            "TRAIN_EPOCHS": "7",
            "BATCH_SIZE": "256",
            "EMBED_DIM": "32",
            "LR": "0.01",
            "VAL_K": "10",
            "SEED": "42",
            "GAMEREC_SOURCE": "steam200k",
            "GAMEREC_SOURCE_PATH": "/x/steam.csv",
            "GAMEREC_SPLIT": "random",
            "DATA_DIR": "/d",
            "ARTIFACTS_DIR": "/a",
            "GAMEREC_DEVICE": "cpu",
            "GAMEREC_USER_TOWER": "id",
            "GAMEREC_NORMALIZE": "false",
            "GAMEREC_REFIT": "0",
            "GAMEREC_EVAL_USERS": "500",
            "GAMEREC_SPARSE_GRADIENTS": "false",
            "GAMEREC_EPOCH_CHECKPOINTS": "false",
            "TRAIN_NPROC": "4",
        }
    )
    config = resources["training"].settings()
    assert (config.user_tower, config.normalize, config.refit) == ("id", False, False)
    training = resources["training"]
    assert (training.epochs, training.batch_size, training.embed_dim, training.lr) == (
        7,
        256,
        32,
        0.01,
    )
    assert training.seed == resources["split"].seed == resources["source"].synthetic_seed == 42
    assert resources["evaluation"].seed == 42 and resources["evaluation"].sample_users == 500
    assert config.sparse_gradients is False
    assert training.epoch_checkpoints is False and training.nproc == 4
    assert resources["evaluation"].k == 10
    assert (resources["source"].kind, resources["source"].path) == ("steam200k", "/x/steam.csv")
    assert resources["split"].strategy == "random"
    assert str(resources["paths"].settings().checkpoint) == "/a/staging/two_tower.pt"
    assert str(resources["paths"].settings().published / "two_tower.pt") == "/a/two_tower.pt"
    assert str(resources["paths"].settings().interactions) == "/d/interactions.parquet"
    assert resources["compute"].device == "cpu"


@pytest.mark.parametrize(
    "variable, value",
    [
        ("EMBED_DIM", "0"),
        ("TRAIN_EPOCHS", "-1"),
        ("LR", "0"),
        ("BATCH_SIZE", "abc"),
        ("GAMEREC_SOURCE", "kafka"),
        ("GAMEREC_SPLIT", "oldest"),
        ("GAMEREC_DEVICE", "tpu"),
        ("TRAIN_NPROC", "0"),
        ("LR", "inf"),
        ("BATCH_SIZE", "1.5"),
        ("GAMEREC_NORMALIZE", "maybe"),
    ],
)
def test_bad_values_are_rejected_before_anything_runs(variable, value):
    with pytest.raises(SettingError, match=f"^{variable}=") as caught:
        resources_from_env({variable: value})
    assert "\n" not in str(caught.value)  # one line


def test_file_sources_need_a_path():
    with pytest.raises(SettingError, match="GAMEREC_SOURCE_PATH"):
        resources_from_env({"GAMEREC_SOURCE": "steam200k"})


def test_missing_file_error_names_the_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(InteractionsFileError, match="nope.csv: file not found"):
        load_source(Source(kind="interactions", path=str(missing)))


def test_synthetic_source_honours_its_size_knobs():
    raw = load_source(Source(synthetic_users=200, synthetic_games=50, synthetic_interactions=2_000))
    assert raw.frame["user_id"].n_unique() == 200
    assert raw.frame["game_id"].n_unique() <= 50
    assert abs(raw.frame.height - 2_000) <= 200


@requires_steam_200k
def test_steam_source_reads_the_real_file():
    raw = load_source(Source(kind="steam200k", path=str(STEAM_200K)))
    assert raw.frame.height == 128_804
    assert raw.stats["duplicate_rows_dropped"] == 707
    assert raw.frame.schema["play_time_hours"] == pl.Float64
