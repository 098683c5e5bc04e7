"""Each setting changes the code version of exactly the assets it affects."""

import pytest

from gamerec_assets.core.codehash import code_fingerprint
from gamerec_assets.definitions import build_definitions
from gamerec_assets.resources import resources_from_env
from gamerec_assets.versioning import declared_version_inputs, describe_version_change

TRAINING_AND_AFTER = {
    "two_tower_checkpoint",
    "item_embeddings",
    "eval_metrics",
    "faiss_index",
    "serving_set",
}
SEARCH_AND_AFTER = {"tuned_settings"} | TRAINING_AND_AFTER
EVERYTHING = {"interactions", "train_interactions", "val_interactions"} | SEARCH_AND_AFTER
STEAM = {"GAMEREC_SOURCE": "steam200k", "GAMEREC_SOURCE_PATH": "/data/steam-200k.csv.gz"}


def code_versions(environ: dict[str, str]) -> dict[str, str]:
    graph = build_definitions(resources_from_env(environ)).resolve_asset_graph()
    return {
        key.to_user_string(): graph.get(key).code_version
        for key in graph.get_all_asset_keys()
        if graph.get(key).is_materializable
    }


def changed_by(base: dict[str, str], change: dict[str, str]) -> set[str]:
    before, after = code_versions(base), code_versions({**base, **change})
    return {name for name in before if before[name] != after[name]}


@pytest.mark.parametrize(
    "change, affected",
    [
        # a searched setting given explicitly is fixed: the search space changes
        ({"LR": "0.01"}, SEARCH_AND_AFTER),
        ({"TRAIN_EPOCHS": "9"}, TRAINING_AND_AFTER),
        ({"BATCH_SIZE": "512"}, TRAINING_AND_AFTER),
        ({"EMBED_DIM": "32"}, SEARCH_AND_AFTER),
        ({"SEED": "7"}, TRAINING_AND_AFTER),  # max_playtime split and a file source ignore it
        # the index does not depend on the evaluation: only publishing follows it
        ({"VAL_K": "10"}, {"eval_metrics", "serving_set"}),
        ({"GAMEREC_EASE_BASELINE": "false"}, {"eval_metrics", "serving_set"}),
        ({"GAMEREC_TUNE_K": "10"}, SEARCH_AND_AFTER),
        ({"GAMEREC_TUNE_TRIALS": "3"}, SEARCH_AND_AFTER),
        ({"GAMEREC_TUNE_PARAMS": "lr"}, SEARCH_AND_AFTER),
        ({"GAMEREC_TEMPERATURE": "0.2"}, SEARCH_AND_AFTER),
        ({"GAMEREC_USER_TOWER": "id"}, TRAINING_AND_AFTER),
        ({"GAMEREC_INDEX": "hnsw"}, {"faiss_index", "serving_set"}),
        ({"GAMEREC_INDEX_METRIC": "cosine"}, {"faiss_index", "serving_set"}),
        ({"GAMEREC_HNSW_EF_SEARCH": "64"}, set()),  # irrelevant to the default flat index
        ({"GAMEREC_SPLIT": "random"}, EVERYTHING - {"interactions"}),
        ({"GAMEREC_SOURCE_PATH": "/data/other.csv"}, EVERYTHING | {"raw_interactions"}),
        ({"ARTIFACTS_DIR": "/elsewhere"}, EVERYTHING),
        ({"GAMEREC_DEVICE": "cpu", "GAMEREC_NUM_THREADS": "1"}, set()),
    ],
)
def test_a_setting_marks_exactly_the_assets_it_affects(change, affected):
    assert changed_by(STEAM, change) == affected


def test_a_new_value_of_a_fixed_setting_retrains_without_searching_again():
    assert changed_by({**STEAM, "LR": "0.01"}, {"LR": "0.02"}) == TRAINING_AND_AFTER
    assert changed_by({**STEAM, "EMBED_DIM": "64"}, {"EMBED_DIM": "128"}) == TRAINING_AND_AFTER


def test_hnsw_settings_matter_once_the_index_is_hnsw():
    changed = changed_by({**STEAM, "GAMEREC_INDEX": "hnsw"}, {"GAMEREC_HNSW_EF_SEARCH": "64"})
    assert changed == {"faiss_index", "serving_set"}


def test_seed_also_changes_synthetic_data_and_a_random_split():
    assert changed_by({}, {"SEED": "7"}) == EVERYTHING | {"raw_interactions"}
    assert changed_by({**STEAM, "GAMEREC_SPLIT": "random"}, {"SEED": "7"}) == EVERYTHING - {
        "interactions"
    }


def test_causes_name_the_setting_and_its_values():
    recorded = {"config": {"training.lr": 0.001, "index.kind": "flat"}, "code": {"m.trainer": "a"}}
    declared = {"config": {"training.lr": 0.01, "index.kind": "flat"}, "code": {"m.trainer": "b"}}
    assert (
        describe_version_change(recorded, declared, {"training.lr": "LR"})
        == "LR changed (0.001 -> 0.01); code changed: trainer"
    )
    assert describe_version_change(None, declared, {}) == "code version changed"


def test_each_assets_code_is_its_module_and_what_that_imports():
    """Derived from the imports, so a module the asset uses cannot be forgotten, and one it
    does not use cannot make it stale."""
    declared = declared_version_inputs(
        list(build_definitions(resources_from_env(STEAM)).assets),
        {key: resource for key, resource in resources_from_env(STEAM).items()},
    )
    training = set(declared["two_tower_checkpoint"]["code"])
    assert {
        "gamerec_assets.assets.training",
        "gamerec_assets.core.training.loop",
        "gamerec_assets.core.training.loss",
        "gamerec_assets.core.model",
        "gamerec_assets.train_worker",
    } <= training
    index_only = set(declared["faiss_index"]["code"]) - training
    assert "gamerec_assets.core.index" in index_only
    assert "gamerec_assets.core.index" not in training  # an index change does not retrain
    assert "gamerec_assets.core.training.loop" not in declared["interactions"]["code"]


def test_code_fingerprints_ignore_comments_docstrings_and_formatting_but_not_code():
    original = '''"""Module doc."""


def score(x):
    """Doc."""
    return x + 1  # a comment
'''
    reworded = '''"""Another module doc."""
# a new comment
def score( x ):
    """Other doc."""
    return x + 1
'''
    changed = original.replace("x + 1", "x + 2")
    assert code_fingerprint(original) == code_fingerprint(reworded)
    assert code_fingerprint(original) != code_fingerprint(changed)
