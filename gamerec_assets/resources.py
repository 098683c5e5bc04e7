"""Dagster resources, derived from the setting declarations in `core.settings`.

Each group of settings (`Paths`, `Source`, `TrainConfig`, ...) becomes one resource whose
fields are the group's fields, with its defaults, choices and one-line docs (what the
launchpad shows); `.settings()` returns the validated group, which the core code takes.
`resources_from_env` builds every resource from the environment (the seed's names:
TRAIN_EPOCHS, BATCH_SIZE, EMBED_DIM, LR, VAL_K, DATA_DIR, ARTIFACTS_DIR; plus SEED and
GAMEREC_*). Run config (`-c run.yaml`, or the launchpad) overrides both:
`resources: {training: {config: {lr: 0.01}}}`.
"""

import os
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar, Literal

import dagster as dg
import torch
from pydantic import Field, create_model

from gamerec_assets.core.compute import configure_threads, resolve_device
from gamerec_assets.core.settings import (
    GROUPS,
    Compute,
    Evaluation,
    IndexSettings,
    Paths,
    SettingsGroup,
    Source,
    Split,
    TrainConfig,
    Tuning,
    check_together,
    settings_from_env,
    spec_of,
)


class SettingsResource(dg.ConfigurableResource):
    """A resource holding one group of settings; validated like the group itself."""

    settings_class: ClassVar[type[SettingsGroup]]

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self.settings()  # a bad value from run config fails here, naming the setting

    def settings(self) -> Any:
        """The group of settings (`core.settings`) this resource carries, validated."""
        return self.settings_class(**self.model_dump())

    def version_fields(self) -> dict[str, object]:
        return self.settings().version_fields()


def settings_resource(group: type[SettingsGroup]) -> type[SettingsResource]:
    """A resource base class with one field per setting of `group`."""
    declared: dict[str, Any] = {}
    for item in fields(group):
        spec = spec_of(item)
        annotation = group.field_types()[item.name]
        if spec.choices:
            annotation = Literal[spec.choices]  # an enum in Dagster's config schema
        description = f"{spec.env}: {spec.doc}"
        declared[item.name] = (annotation, Field(default=item.default, description=description))
    base = create_model(f"{group.__name__}Fields", __base__=SettingsResource, **declared)
    base.settings_class = group
    return base


class PathsResource(settings_resource(Paths)):
    """DATA_DIR and ARTIFACTS_DIR."""


class SourceResource(settings_resource(Source)):
    """GAMEREC_SOURCE and its file or synthetic size."""


class SplitResource(settings_resource(Split)):
    """GAMEREC_SPLIT: the evaluation protocol."""


class TrainingResource(settings_resource(TrainConfig)):
    """The two-tower hyperparameters, and how training runs (processes, epoch states)."""


class TuningResource(settings_resource(Tuning)):
    """How choices are made on the tuning split."""


class EvaluationResource(settings_resource(Evaluation)):
    """VAL_K and the baselines."""


class IndexResource(settings_resource(IndexSettings)):
    """FAISS index settings; changing them rebuilds only `faiss_index`."""


class ComputeResource(settings_resource(Compute)):
    """Device and thread count for torch and FAISS, chosen in one place."""

    def setup(self) -> torch.device:
        """Apply the thread count and return the torch device to use."""
        configure_threads(self.num_threads or None)
        return resolve_device(self.device)


RESOURCE_CLASSES: dict[str, type[SettingsResource]] = {
    cls.settings_class.group: cls
    for cls in (
        PathsResource,
        SourceResource,
        SplitResource,
        TrainingResource,
        TuningResource,
        EvaluationResource,
        IndexResource,
        ComputeResource,
    )
}
assert [cls.group for cls in GROUPS] == list(RESOURCE_CLASSES), "one resource per group"


def resources_from_env(environ: Mapping[str, str] | None = None) -> dict[str, SettingsResource]:
    """Every resource, each setting from its variable when set (else the default).

    A bad value raises `SettingError` in one line naming the variable, the value and what
    is allowed, before anything runs.
    """
    environ = os.environ if environ is None else environ
    groups = {
        key: cls.settings_class(**settings_from_env(cls.settings_class, environ))
        for key, cls in RESOURCE_CLASSES.items()
    }
    check_together(groups)
    return {key: RESOURCE_CLASSES[key](**asdict(group)) for key, group in groups.items()}
