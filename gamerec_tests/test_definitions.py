"""The graph's shape is deliberate: a change to keys, dependencies or groups fails here."""

import dagster as dg

from gamerec_assets.definitions import build_definitions, defs
from gamerec_assets.resources import resources_from_env

EXPECTED_GRAPH = {
    "raw_interactions": ("ingestion", set(), {"file"}),
    "interactions": ("ingestion", {"raw_interactions"}, {"polars", "parquet"}),
    "train_interactions": ("splits", {"interactions"}, {"polars", "parquet"}),
    "val_interactions": ("splits", {"interactions"}, {"polars", "parquet"}),
    "tuned_settings": (
        "training",
        {"train_interactions", "val_interactions", "interactions"},
        {"optuna"},
    ),
    "two_tower_checkpoint": (
        "training",
        {"train_interactions", "interactions", "tuned_settings"},
        {"pytorch"},
    ),
    "item_embeddings": ("training", {"two_tower_checkpoint"}, {"numpy"}),
    "eval_metrics": (
        "evaluation",
        {"item_embeddings", "two_tower_checkpoint", "train_interactions", "val_interactions"},
        {"pytorch"},
    ),
    # the index depends on the embeddings alone: a VAL_K change never rebuilds it
    "faiss_index": ("serving", {"item_embeddings"}, {"faiss"}),
    # publishing is gated by every blocking check upstream
    "serving_set": ("serving", {"faiss_index", "eval_metrics"}, {"file"}),
}
EXPECTED_CHECKS = {
    ("interactions", "interactions_not_empty", True),
    ("interactions", "interactions_keys_not_null", True),
    ("interactions", "interactions_hours_valid", True),
    ("train_interactions", "split_no_leakage", True),
    ("train_interactions", "split_eval_users_have_train_data", True),
    ("train_interactions", "split_respects_cutoff", True),
    ("two_tower_checkpoint", "checkpoint_weights_finite", True),
    ("item_embeddings", "item_embeddings_match_catalog", True),
    ("eval_metrics", "model_beats_popularity", True),
    ("faiss_index", "faiss_index_matches_catalog", True),
    ("faiss_index", "faiss_index_matches_exact_search", False),
}


def test_every_asset_key_dependency_and_group_is_as_designed():
    graph = defs.resolve_asset_graph()
    actual = {
        key.to_user_string(): (
            graph.get(key).group_name,
            {parent.to_user_string() for parent in graph.get(key).parent_keys},
            set(graph.get(key).kinds),
        )
        for key in graph.get_all_asset_keys()
    }
    assert actual == EXPECTED_GRAPH
    for key in graph.get_all_asset_keys():  # every asset explains itself in the UI
        assert len(graph.get(key).description or "") > 40, key


def test_every_check_is_attached_with_its_blocking_flag():
    graph = defs.resolve_asset_graph()
    actual = {
        (key.asset_key.to_user_string(), key.name, graph.get_check_spec(key).blocking)
        for key in graph.asset_check_keys
    }
    assert actual == EXPECTED_CHECKS


def test_definitions_load_and_use_the_in_process_executor(tmp_path):
    built = build_definitions(resources_from_env({"DATA_DIR": str(tmp_path)}))
    dg.Definitions.validate_loadable(built)
    job = built.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == dg.in_process_executor.name
