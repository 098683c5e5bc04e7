"""Versions that make Dagster's staleness follow code and configuration, not just data.

Every asset's code version is a hash of its *version inputs*: the code that computes it (the
module defining it and every project module that module imports, see `core.codehash`) and
the settings that change its output, together with those of every asset upstream of it. So a
new `LR` changes the version of `two_tower_checkpoint` and of everything after it, and a new
index setting only that of `faiss_index` and `serving_set`; Dagster then shows exactly those
assets as stale, in the UI and through `gamerec materialize`.

Two sides of one function:
- declared: computed from the resources when the definitions load (the environment), set as
  each asset's `code_version`;
- effective: computed in the run from the resources the run really used, merged with the
  inputs its parents recorded, stored as the materialization's code version and metadata.
A run that overrides settings through run config therefore records a version that differs
from the declared one, and the asset shows as stale against the declared configuration.
Data versions (content hashes, returned by each asset) cover the data itself.
"""

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

from gamerec_assets.core.codehash import code_versions
from gamerec_assets.core.io import config_fingerprint
from gamerec_assets.dagster_adapter import compute_module

VERSION_INPUTS_METADATA_KEY = "version_inputs"
CODE_VERSION_TAG = "dagster/code_version"

# Per asset: the resources whose settings shape its output. (Its code is derived: the module
# that defines it and every project module that module imports.) Some settings are read by an
# asset without shaping it: the split checks VAL_K against the catalog, but VAL_K changes
# only the evaluation.
OWN_RESOURCES: dict[str, tuple[str, ...]] = {
    "raw_interactions": ("source",),
    "interactions": ("paths",),
    "train_interactions": ("split",),
    "val_interactions": ("split",),
    "tuned_settings": ("tuning",),
    "two_tower_checkpoint": ("training", "tuning"),
    "item_embeddings": (),
    "eval_metrics": ("evaluation", "tuning"),
    "faiss_index": ("index",),
    "serving_set": (),
}
VERSIONED_ASSETS = frozenset(OWN_RESOURCES)


def searched_settings(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The names the search varies, not the values of the training settings it keeps fixed:
    a new LR retrains without searching again, a newly fixed setting searches again."""
    fixed = resources["training"].settings().explicit_fields()
    return {"tuning.searched": resources["tuning"].settings().searched(fixed)}


DERIVED_VERSION_FIELDS = {"tuned_settings": searched_settings}
"""Per asset: settings its version depends on that are derived from several resources."""


def own_version_inputs(
    key: str, assets_def: dg.AssetsDefinition, resources: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """What this asset's own code and settings contribute to its version."""
    config: dict[str, Any] = {}
    for resource_key in OWN_RESOURCES[key]:
        config.update(resources[resource_key].version_fields())
    if key in DERIVED_VERSION_FIELDS:
        config.update(DERIVED_VERSION_FIELDS[key](resources))
    return {"code": code_versions([compute_module(assets_def)]), "config": config}


def merge_version_inputs(*parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {"code": {}, "config": {}}
    for part in parts:
        merged["code"].update(part.get("code", {}))
        merged["config"].update(part.get("config", {}))
    return merged


def version_string(inputs: Mapping[str, Any]) -> str:
    return config_fingerprint(dict(inputs))[:16]


def declared_version_inputs(
    assets: list[dg.AssetsDefinition], resources: Mapping[str, Any]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Version inputs of every asset from the load-time resources, cumulative over ancestors."""
    definition = {key.to_user_string(): a for a in assets for key in a.keys}
    parents = {
        key.to_user_string(): {p.to_user_string() for p in deps}
        for assets_def in assets
        for key, deps in assets_def.asset_deps.items()
    }
    declared: dict[str, dict[str, dict[str, Any]]] = {}

    def visit(key: str) -> dict[str, dict[str, Any]]:
        if key not in declared:
            upstream = [visit(p) for p in sorted(parents.get(key, ())) if p in VERSIONED_ASSETS]
            own = own_version_inputs(key, definition[key], resources)
            declared[key] = merge_version_inputs(*upstream, own)
        return declared[key]

    for key in VERSIONED_ASSETS & set(definition):
        visit(key)
    return declared


def with_declared_code_versions(
    assets: list[dg.AssetsDefinition], resources: Mapping[str, Any]
) -> list[dg.AssetsDefinition]:
    """Set each asset's code version to the hash of its declared version inputs."""
    declared = declared_version_inputs(assets, resources)
    return dg.map_asset_specs(
        lambda spec: spec.replace_attributes(
            code_version=version_string(declared[spec.key.to_user_string()])
        ),
        assets,
    )


def recorded_version_inputs(
    instance: dg.DagsterInstance, key: str
) -> dict[str, dict[str, Any]] | None:
    """The version inputs stored with the latest materialization of `key`, if any."""
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(VERSION_INPUTS_METADATA_KEY)
    return None if value is None else dict(value.value)


def effective_version(
    context: dg.AssetExecutionContext, key: str, resources: Mapping[str, Any]
) -> dict[str, Any]:
    """Tags and metadata recording the version this run really produced for `key`.

    Parents contribute the inputs recorded with their latest materialization (lineage),
    so an index rebuilt from embeddings trained with another LR says so.
    """
    parents = {p.to_user_string() for p in context.assets_def.asset_deps[dg.AssetKey(key)]}
    upstream = [
        recorded_version_inputs(context.instance, parent) or {}
        for parent in sorted(parents & VERSIONED_ASSETS)
    ]
    own = own_version_inputs(key, context.assets_def, resources)
    inputs = merge_version_inputs(*upstream, own)
    return {
        "tags": {CODE_VERSION_TAG: version_string(inputs)},
        "metadata": {
            VERSION_INPUTS_METADATA_KEY: dg.MetadataValue.json(inputs),
            "config_fingerprint": config_fingerprint(inputs["config"])[:16],
        },
    }


def describe_version_change(
    recorded: Mapping[str, Any] | None,
    declared: Mapping[str, Any],
    env_names: Mapping[str, str],
) -> str:
    """A short human cause: 'LR changed (0.001 -> 0.01)', 'code changed: loop'."""
    if recorded is None:
        return "code version changed"
    changes = []
    old_config, new_config = recorded.get("config", {}), declared.get("config", {})
    for name in sorted(set(old_config) | set(new_config)):
        if old_config.get(name) != new_config.get(name):
            label = env_names.get(name, name)
            changes.append(
                f"{label} changed "
                f"({_shown(old_config.get(name))} -> {_shown(new_config.get(name))})"
            )
    old_code, new_code = recorded.get("code", {}), declared.get("code", {})
    modules = sorted(m for m in set(old_code) | set(new_code) if old_code.get(m) != new_code.get(m))
    if modules:
        changes.append("code changed: " + ", ".join(m.rsplit(".", 1)[-1] for m in modules))
    return "; ".join(changes) or "code version changed"


def _shown(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)
