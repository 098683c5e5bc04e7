"""Every setting declared once: validated in one line, read from the environment, documented
in the README from the same declaration."""

import re
from dataclasses import fields, replace

import pytest

from gamerec_assets.core.settings import (
    GROUPS,
    IndexSettings,
    SettingError,
    Source,
    TrainConfig,
    env_variable_names,
    settings_from_env,
    settings_table,
    spec_of,
)
from gamerec_assets.resources import RESOURCE_CLASSES
from gamerec_tests.conftest import REPO_ROOT


def test_the_defaults_are_the_tuned_model_not_the_seeds():
    config = TrainConfig()
    assert (config.epochs, config.batch_size, config.embed_dim, config.lr) == (20, 1024, 256, 3e-3)
    assert (config.user_tower, config.normalize, config.temperature) == ("history", True, 0.15)
    assert config.logq_correction and config.playtime_weighting and config.sparse_gradients


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"embed_dim": 0}, "EMBED_DIM=0 (training.embed_dim): expected an integer > 0"),
        ({"lr": float("inf")}, "LR=inf (training.lr): expected a finite number > 0"),
        ({"lr": float("nan")}, "LR=nan (training.lr): expected a finite number > 0"),
        ({"epochs": 2.5}, "TRAIN_EPOCHS=2.5 (training.epochs): expected an integer > 0"),
        ({"normalize": 1}, "GAMEREC_NORMALIZE=1 (training.normalize): expected true or false"),
        ({"weight_decay": -1e-4}, "expected a finite number >= 0"),
        (
            {"user_tower": "users"},
            "GAMEREC_USER_TOWER='users' (training.user_tower): expected one of id, history, "
            "history+id",
        ),
        (
            {"history_dropout": 1.0},
            "GAMEREC_HISTORY_DROPOUT=1.0 (training.history_dropout): expected a share in [0, 1)",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_what_is_allowed(changes, message):
    with pytest.raises(SettingError) as caught:
        replace(TrainConfig(), **changes)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_environment_text_is_parsed_by_type_with_the_same_messages():
    environ = {"LR": "0.01", "GAMEREC_NORMALIZE": "no", "TRAIN_EPOCHS": " 7 ", "SEED": "3"}
    assert settings_from_env(TrainConfig, environ) == {
        "lr": 0.01,
        "normalize": False,
        "epochs": 7,
        "seed": 3,
    }
    with pytest.raises(SettingError, match=r"^BATCH_SIZE='1\.5' \(training\.batch_size\)"):
        settings_from_env(TrainConfig, {"BATCH_SIZE": "1.5"})
    assert settings_from_env(TrainConfig, {"LR": ""}) == {}  # empty means unset


def test_one_variable_may_set_several_fields():
    assert {name for name, env in env_variable_names().items() if env == "SEED"} == {
        "source.synthetic_seed",
        "split.seed",
        "training.seed",
        "evaluation.seed",
    }


def test_every_setting_is_declared_with_a_variable_and_a_doc():
    seen = set()
    for group in GROUPS:
        for item in fields(group):
            spec = spec_of(item)
            assert re.fullmatch(r"[A-Z][A-Z0-9_]+", spec.env), item.name
            assert len(spec.doc) > 5, item.name
            assert (group.group, item.name) not in seen
            seen.add((group.group, item.name))


def test_each_group_is_one_resource_with_the_same_fields_defaults_and_docs():
    assert list(RESOURCE_CLASSES) == [group.group for group in GROUPS]
    for group in GROUPS:
        resource = RESOURCE_CLASSES[group.group]
        for item in fields(group):
            field = resource.model_fields[item.name]
            assert field.default == item.default
            assert field.description.startswith(f"{spec_of(item).env}: ")
        assert resource().settings() == group()


def test_conditional_settings_count_for_versions_only_where_they_matter():
    assert "index.hnsw_m" not in IndexSettings().version_fields()
    assert "index.hnsw_m" in IndexSettings(kind="hnsw").version_fields()
    assert "training.nproc" not in TrainConfig().version_fields()  # how, not what
    assert Source(kind="steam200k", path="x.csv").version_fields()["source.kind"] == "steam200k"
    with pytest.raises(SettingError, match="needs a file: set GAMEREC_SOURCE_PATH"):
        Source(kind="interactions")


def test_the_readme_configuration_table_is_the_declared_one():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme, (
        "README.md's configuration table differs from the declarations in "
        "gamerec_assets/core/settings.py; paste the output of `gamerec settings` there"
    )
